"""The layers' import boundaries (docs/architecture.md): each package, imported whole in a fresh
interpreter, pulls in only what its docstring allows; Ray is imported only under service/tune."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package (every module in it is imported) -> the top-level modules it must not pull in
FORBIDDEN = {
    "service.config": ("torch", "torchvision", "ray", "sklearn"),
    "service.results": ("torch", "torchvision", "ray"),
    "service.models": ("ray",),
    "service.training": ("ray",),
    "service.analysis": ("ray",),
    "service.report": ("ray",),
    "service.claims": ("ray",),
    "service.nightly": ("ray", "torch"),
    "service.cli": ("ray", "torch", "pydantic"),
    # the standard library only: every layer imports them
    "service.notify": ("ray", "torch", "pydantic", "numpy"),
    "service.rundir": ("ray", "torch", "pydantic", "numpy"),
    "service.atomic": ("ray", "torch", "pydantic", "numpy"),
    "service.metrics": ("ray", "torch", "pydantic", "numpy"),
    # the sweep's driver: validation and planning without torch, a dry run without Ray
    "service.models.registry": ("torch",),
    "service.training.images": ("torch", "torchvision", "ray"),  # the pre-flight image check
    "service.tune.plan": ("ray", "torch"),
    "service.tune.runtime": ("ray", "torch"),
    "service.tune.runner": ("ray", "torch"),
    "service.tune.console": ("ray", "torch"),
    "service.submit": ("ray", "torch"),
}

IMPORT_ALL = """
import importlib, json, pkgutil, sys
name = sys.argv[1]
module = importlib.import_module(name)
for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
@pytest.mark.slow
def test_a_layer_imports_only_what_it_may(package: str) -> None:
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, package], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert package.split(".")[0] in loaded  # the import really ran
    assert not loaded & set(FORBIDDEN[package]), (
        f"importing {package} pulled in {sorted(loaded & set(FORBIDDEN[package]))}")


def _ray_names(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "ray" or n.startswith("ray.")]


def test_only_the_tune_layer_imports_ray() -> None:
    # Any import of Ray, at module level or inside a function, outside service/tune.
    offenders = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        names = _ray_names(ast.parse(path.read_text()))
        if names and not rel.startswith("service/tune/"):
            offenders[rel] = names
    assert not offenders
    # ... and the check itself sees Ray where it is imported
    assert _ray_names(ast.parse((ROOT / "service/tune/sweep.py").read_text()))


def test_no_layer_below_imports_the_tune_layer() -> None:
    # Results, report, analysis, claims, nightly and the shared modules read a run through
    # service.rundir and service.results; only the sweep's command (submit) drives service.tune.
    offenders = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("service/tune/") or rel == "service/submit.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module == "service.tune" or node.module.startswith("service.tune.")):
                offenders.setdefault(rel, []).append(node.module)
    assert not offenders
