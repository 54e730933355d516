"""What every spec block shares: the strict model they derive from, the error that carries a
spec's problems and the one-line form of a problem (`path: value → why`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class SpecError(Exception):
    """An invalid sweep spec; `problems` holds one printable line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Strict(BaseModel):
    """A spec block: unknown keys are refused, and a string literal under a field is its
    description (in the JSON Schema too)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def problem(path: str, value: Any, why: str) -> str:
    """One problem line; values shown as Python literals ('<…>' for descriptions), cut short."""
    shown = value if isinstance(value, str) and value.startswith("<") else repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return " ".join(f"{path or '<top level>'}: {shown} → {why}".split())
