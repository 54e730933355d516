"""The written word stays true to the tree: every repository path and `service.` name that the
README, docs/ and the code's comments cite exists, and nothing cites a document that is not in
the repository (design notes kept beside the project are not shipped with it)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
SOURCES = sorted(p for d in ("service", "tests", "bench") for p in (ROOT / d).rglob("*.py")
                 if p.name != Path(__file__).name)  # this file names the patterns it looks for

# `service/rundir.py`, `docs/architecture.md`, `tests/test_faults.py::test_x`,
# `service/training/loop.py:load_checkpoint`, `bench/gpu_check.sh`
PATH_RE = re.compile(r"`((?:service|docs|tests|bench|searchspaces)/[\w./-]+?"
                     r"\.(?:py|md|yaml|sh|json))(?:::?(\w+))?`")
DOTTED_RE = re.compile(r"`(service(?:\.\w+)+)")
OUTSIDE_RE = re.compile(r"ray-notes|shared/docs/")  # ../shared/data is data, not a document


def _cited_paths(text: str) -> list[tuple[str, str | None]]:
    return [(m[1], m[2]) for m in PATH_RE.finditer(text)]


def _dotted_exists(name: str) -> bool:
    """`service.a.b` is a module, or `service.a.b.c` a name defined in module service.a.b."""
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        module = ".".join(parts[:cut])
        if importlib.util.find_spec(module) is None if cut == 2 else not _module_file(module):
            continue
        rest = parts[cut:]
        if not rest:
            return True
        source = _module_file(module).read_text()
        return re.search(rf"^\s*(def|class) {rest[0]}\b|^{rest[0]}\s*[:=]|\b{rest[0]}\b",
                         source, re.M) is not None
    return False


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("text", TEXTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_cite_paths_and_names_that_exist(text: Path) -> None:
    body = text.read_text()
    missing = []
    for path, name in _cited_paths(body):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif name and name not in target.read_text():
            missing.append(f"{path}: {name}")
    for dotted in DOTTED_RE.findall(body):
        if not _dotted_exists(dotted):
            missing.append(dotted)
    assert not missing, f"{text.name} cites what is not in the tree: {missing}"


def test_nothing_cites_a_document_outside_the_repository() -> None:
    found = [f"{p.relative_to(ROOT)}:{i}" for p in [*TEXTS, *SOURCES]
             for i, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE_RE.search(line)]
    assert not found


def test_the_checks_see_a_stale_citation() -> None:
    # The two checks above would pass on anything if their patterns matched nothing.
    assert _cited_paths("see `service/schedulers.py` and `tests/test_x.py::test_y`") == [
        ("service/schedulers.py", None), ("tests/test_x.py", "test_y")]
    assert not (ROOT / "service/schedulers.py").exists()
    assert not _dotted_exists("service.reportdata.mean_ci95")
    assert _dotted_exists("service.results.stats.mean_ci95")
    assert OUTSIDE_RE.search("(ray-notes #11)")


def test_the_readmes_lists_of_datasets_and_models_are_the_registries() -> None:
    # The example space's comments list every choice: they are read from the registries' order.
    from service.config.data import DATASETS
    from service.models.registry import list_models

    readme = (ROOT / "README.md").read_text()
    datasets = re.search(r"# dataset: ([\w| ]+)\n", readme)[1].split(" | ")
    families = re.search(r"family: \w+ +# ([\w| -]+)\n", readme)[1].split(" | ")
    assert datasets == list(DATASETS)
    assert families == list_models()
