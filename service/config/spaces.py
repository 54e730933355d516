"""The search spaces shipped inside the package (`service/searchspaces/`, package data), and
how a SPACE argument names one: a file path, or a shipped space by its relative name."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_SPACES = Path(str(files("service") / "searchspaces"))
DEFAULT_SPACE = SHIPPED_SPACES / "default.yaml"


def resolve_space(arg: str) -> str:
    """`arg` itself when it is a file; else the shipped space it names (`lenet5`,
    `lenet5.yaml`, `searchspaces/claims/04_lrn.yaml`); else `arg` unchanged, so that the
    loader reports the missing file under the name the user gave."""
    if Path(arg).expanduser().exists():
        return arg
    name = arg.removeprefix("searchspaces/")
    for candidate in (name, f"{name}.yaml"):
        path = SHIPPED_SPACES / candidate
        if path.is_file():
            return str(path)
    return arg
