"""Every distribution that `service/` imports is declared in pyproject.toml (the runtime
dependencies, or an extra for an optional feature)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement)[0]).lower()


def imported_distributions() -> dict[frozenset[str], set[str]]:
    """The distributions providing each top-level module that `service/` imports (any depth,
    lazy imports too) -> the service modules importing it."""
    dists = packages_distributions()
    found: dict[frozenset[str], set[str]] = {}
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top == "service":
                    continue
                provided = frozenset(_name(d) for d in dists.get(top, [top]))
                found.setdefault(provided, set()).add(str(path.relative_to(ROOT)))
    return found


# Imported directly but part of a declared distribution's own API: that distribution (with the
# extra we ask for) requires it, checked below against its installed metadata.
VIA = {"pydantic-core": ("pydantic", None),  # pydantic_core.PydanticCustomError
       "pyarrow": ("ray", "tune"),  # Ray's storage filesystems (pyarrow.fs)
       "tensorboardx": ("ray", "tune")}  # Tune's TensorBoard logger


def _requires(dist: str, extra: str | None) -> set[str]:
    """The distributions `dist` requires, with `extra` (installed metadata)."""
    out = set()
    for req in requires(dist) or []:
        name, _, marker = req.partition(";")
        if not marker or (extra and re.search(rf"extra\s*==\s*[\"']{extra}[\"']", marker)):
            out.add(_name(name))
    return out


def test_every_imported_distribution_is_declared():
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in PROJECT["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    missing = {}
    for top, modules in imported_distributions().items():
        if top & declared:  # a module several distributions provide: one of them declared
            continue
        via = [VIA[d] for d in top if d in VIA]
        if via and all(d in declared and _name(name) in _requires(d, extra)
                       for name in top for d, extra in via):
            continue
        missing[", ".join(sorted(top))] = sorted(modules)
    assert not missing, f"imported by service/ but not in pyproject.toml: {missing}"

