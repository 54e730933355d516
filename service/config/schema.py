"""The search space's JSON Schema, generated from the Pydantic models that validate a space
(`SweepSpec` and its blocks), for editors: every shipped space names the committed copy,
`service/searchspaces/schema.json`, on its first line (`# yaml-language-server: $schema=…`).

Regenerate the copy with `python -m service.submit --schema > service/searchspaces/schema.json`
(tests/test_schema.py fails when it differs). The schema is the validator's shape only: the
cross-field checks (a model that cannot be built at the image size, a setting both fixed and
searched, pruner settings) stay in `parse_spec`, so a space the schema accepts may still be
refused there, never the other way round. Imports neither torch nor Ray.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from service.config.spec import SweepSpec
from service.models import list_models

DESCRIPTION = ("One sweep: the model preset and its fixed knobs, fixed training settings, the "
               "searched knobs and settings, budget, searcher, scheduler and resources. Run it "
               "with `python -m service.submit FILE` (--dry-run: validate and plan only).")


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a search-space file, as a JSON-ready dict."""
    schema = SweepSpec.model_json_schema()  # unknown keys (extra="forbid") -> additionalProperties
    defs = schema["$defs"]
    _require_union_tags(schema, defs)
    # The validator accepts exactly the registry's presets; an enum lets editors offer them.
    defs["ModelSpec"]["properties"]["family"]["enum"] = list(list_models())
    # SweepSpec's docstring speaks to programmers; an editor shows this one on the file.
    del schema["title"], schema["description"]
    return {"$schema": GenerateJsonSchema.schema_dialect, "title": "cnn-ablate search space",
            "description": DESCRIPTION, **schema}


def _require_union_tags(node: Any, defs: dict[str, Any]) -> None:
    """Mark the tag of every tagged union's member as required.

    The members declare a default tag (`AshaScheduler.type = "asha"`) only so that Python code
    can build them without arguments; Pydantic's discriminated unions still refuse input
    without the tag. Without `required`, `{grace_period: 2}` would match two schedulers and an
    editor could not tell which one is meant.
    """
    if isinstance(node, dict):
        tag = node.get("discriminator", {}).get("propertyName")
        for member in node.get("oneOf", []) if tag else []:
            target = defs[member["$ref"].rsplit("/", 1)[-1]]
            if tag not in target.get("required", []):
                target["required"] = [tag, *target.get("required", [])]
        for value in node.values():
            _require_union_tags(value, defs)
    elif isinstance(node, list):
        for value in node:
            _require_union_tags(value, defs)
