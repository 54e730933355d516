"""The search space's JSON Schema (service/config/schema.py and its committed copy,
service/searchspaces/schema.json): every shipped space validates against it, it refuses unknown
keys and bad union tags where the validator does, the copy cannot drift from the models, and
every shipped space names the copy on its first line."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from service.config.schema import spec_schema
from service.config.spaces import SHIPPED_SPACES
from service.config.spec import SpecError, load_spec, parse_spec
from service.config.yamlfile import read_yaml

SPACES = sorted(SHIPPED_SPACES.glob("**/*.yaml"))
SCHEMA_FILE = SHIPPED_SPACES / "schema.json"
REGENERATE = "python -m service.submit --schema > service/searchspaces/schema.json"
HEADER = re.compile(r"# yaml-language-server: \$schema=(\S+)\n")

# A small valid space touching every block, so that each block can be given an unknown key.
BASE: dict[str, Any] = {
    "name": "schema-test",
    "data": {"dataset": "digits", "augmentation": {"hflip": False}},
    "model": {"family": "lenet5", "knobs": {"dropout": 0.1}},
    "train": {"lr": 0.01},
    "search": {"momentum": {"type": "float", "low": 0.5, "high": 0.9},
               "batch_size": {"type": "choice", "values": [32, 64]},
               "seed": {"type": "int", "low": 0, "high": 3}},
    "budget": {"max_epochs": 4},
    "searcher": {"type": "random"},
    "scheduler": {"type": "asha"},
    "resources": {"cpus_per_worker": 1},
}
SCHEDULERS = [{"type": "asha", "grace_period": 1}, {"type": "hyperband"},
              {"type": "median", "grace_period": 1}, {"type": "none"},
              {"type": "optuna", "pruner": "patient", "patience": 1,
               "wrapped": {"pruner": "median"}}]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = spec_schema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)  # a schema the declared draft's meta-schema accepts
    return cls(schema)


def _reasons(errors: Any) -> list[jsonschema.ValidationError]:
    """Every error, including those inside a union's alternatives (`context`)."""
    found = []
    for err in errors:
        found.append(err)
        found += _reasons(err.context or [])
    return found


def _with(space: dict[str, Any], path: str, key: str, value: Any) -> dict[str, Any]:
    """A copy of `space` with `key: value` set in the mapping at dotted `path` ('' = top)."""
    space = copy.deepcopy(space)
    node = space
    for part in filter(None, path.split(".")):
        node = node[part]
    node[key] = value
    return space


def test_every_layer_of_shipped_spaces_is_found() -> None:
    folders = {str(p.parent.relative_to(SHIPPED_SPACES)) for p in SPACES}
    assert {".", "claims", "claims/gpu"} <= folders


@pytest.mark.parametrize("path", SPACES, ids=lambda p: str(p.relative_to(SHIPPED_SPACES)))
def test_a_shipped_space_validates_against_the_schema(path: Path, validator) -> None:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(read_yaml(path, str(path)))]
    assert not errors, errors
    load_spec(path)  # and the loader still takes the file, header line and all


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s["type"])
def test_the_base_spaces_are_valid_for_both(scheduler: dict[str, Any], validator) -> None:
    space = {**BASE, "scheduler": scheduler}
    parse_spec(space)
    assert not list(validator.iter_errors(space))


@pytest.mark.parametrize("path", ["", "data", "data.augmentation", "model", "train", "budget",
                                  "searcher", "scheduler", "resources", "search.momentum",
                                  "search.batch_size", "search.seed"])
def test_an_unknown_key_is_refused_by_both(path: str, validator) -> None:
    space = _with(BASE, path, "bogus_key", 1)
    with pytest.raises(SpecError, match="bogus_key"):
        parse_spec(space)
    refused = [e for e in _reasons(validator.iter_errors(space))
               if e.validator == "additionalProperties" and "bogus_key" in e.message]
    assert refused, [e.message for e in validator.iter_errors(space)]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s["type"])
def test_an_unknown_scheduler_setting_is_refused_by_both(scheduler, validator) -> None:
    for path in ("scheduler", "scheduler.wrapped") if "wrapped" in scheduler else ("scheduler",):
        space = _with({**BASE, "scheduler": scheduler}, path, "bogus_key", 1)
        with pytest.raises(SpecError, match="bogus_key"):
            parse_spec(space)
        assert any(e.validator == "additionalProperties" and "bogus_key" in e.message
                   for e in _reasons(validator.iter_errors(space))), path


@pytest.mark.parametrize("where, block", [
    # The tag left out: only the median scheduler has this setting, yet the validator wants the
    # tag (the members default it for Python code only).
    ("scheduler", {"min_samples_required": 2}),
    ("scheduler", {"type": "fifo"}),
    ("search", {"dropout": {"low": 0.0, "high": 0.5}}),
    ("search", {"dropout": {"type": "uniform", "low": 0.0, "high": 0.5}}),
])
def test_a_missing_or_unknown_union_tag_is_refused_by_both(where, block, validator) -> None:
    space = {**BASE, where: block}
    with pytest.raises(SpecError, match="type"):
        parse_spec(space)
    assert list(validator.iter_errors(space))


def _objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object of the schema by model name: the top level (SweepSpec) and each `$defs`
    entry with properties."""
    return {"SweepSpec": schema,
            **{n: d for n, d in schema["$defs"].items() if "properties" in d}}


def test_every_model_object_forbids_unknown_keys() -> None:
    # Every block is a Pydantic model with extra="forbid": none may accept unknown keys.
    objects = _objects(spec_schema())
    assert {"SweepSpec", "DataConfig", "AugmentConfig", "ModelSpec", "TrainSettings", "Budget",
            "Searcher", "Resources", "Values", "IntRange", "FloatRange",
            "AshaScheduler", "OptunaScheduler", "Pruner"} <= set(objects)
    assert {n for n, d in objects.items() if d.get("additionalProperties") is not False} == set()


def test_every_property_has_a_description() -> None:
    # An editor shows a property's description on hover: the meaning of every field lives in
    # its model (an attribute docstring), not in a comment. Pydantic writes the description
    # beside a `$ref` or `anyOf`, on the property itself; it leaves it out of a `$ref` property
    # whose description equals the referenced model's docstring.
    undescribed = [f"{name}.{key}" for name, obj in _objects(spec_schema()).items()
                   for key, prop in obj["properties"].items()
                   if not (isinstance(prop.get("description"), str)
                           and prop["description"].strip())]
    assert undescribed == [], f"properties without a description: {', '.join(undescribed)}"


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; regenerate it: {REGENERATE}"
    assert json.loads(SCHEMA_FILE.read_text()) == spec_schema(), (
        f"{SCHEMA_FILE} differs from the models; regenerate it: {REGENERATE}")


def test_submit_schema_prints_it_without_torch_or_ray(tmp_path: Path) -> None:
    code = """
import contextlib, io, json, runpy, sys
sys.argv = ["service.submit", "--schema"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("service.submit", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
heavy = sorted(m for m in ("torch", "torchvision", "ray") if m in sys.modules)
print(json.dumps({"code": int(code), "schema": json.loads(out.getvalue()), "heavy": heavy}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["code"] == 0
    assert result["heavy"] == []
    assert result["schema"] == json.loads(SCHEMA_FILE.read_text())


@pytest.mark.parametrize("path", SPACES, ids=lambda p: str(p.relative_to(SHIPPED_SPACES)))
def test_a_shipped_space_names_the_schema_on_its_first_line(path: Path) -> None:
    first = path.read_text().split("\n", 1)[0] + "\n"
    header = HEADER.fullmatch(first)
    assert header, f"{path}: first line {first!r} is not '# yaml-language-server: $schema=…'"
    target = Path(header.group(1))
    assert not target.is_absolute(), "a relative path works wherever the package is installed"
    assert (path.parent / target).resolve() == SCHEMA_FILE.resolve()
