"""The wheel: built from this tree and installed into a fresh virtualenv without the checkout,
it carries the shipped search spaces and their schema, and both `python -m service.submit` and
the `cnn-ablate` script find the default space and a shipped space by name from any directory.

The fresh virtualenv sees the dependencies already installed here (torch, Ray, ...) through a
.pth file that lists this environment's site-packages: a directory added that way does not get
its own .pth files run, so the editable install's import hook stays off and `service` can only
come from the wheel (checked).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel, makes a virtualenv, imports torch in it


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A fresh virtualenv holding the wheel: its python, its bin/, a clean env, an unrelated
    working directory."""
    tmp = tmp_path_factory.mktemp("packaging")
    # Build from a copy of what the wheel is made of, so the build leaves no build/ or
    # *.egg-info in the checkout.
    src = tmp / "src"
    shutil.copytree(ROOT / "service", src / "service",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", "-q", "-w", dist, src], tmp, env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("cnn_ablate-*.whl")

    home = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", home], tmp, env)
    assert made.returncode == 0, made.stderr[-3000:]
    python = home / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        tmp, env).stdout.strip())
    here = {Path(p) for p in [*site.getsitepackages(), sysconfig.get_path("purelib"),
                              sysconfig.get_path("platlib")] if Path(p).is_dir()}
    # (CI's virtualenv lives inside the checkout; what matters is that the source tree itself
    # is not listed, and test_service_comes_from_the_wheel checks where `service` comes from.)
    assert ROOT not in here, here
    (purelib / "outer-env.pth").write_text("".join(f"{p}\n" for p in sorted(here)))

    # pip comes from the outer site-packages; --ignore-installed: the editable install there
    # is neither looked at nor uninstalled.
    installed = _run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                      "--ignore-installed", "-q", wheel], tmp, env)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    work = tmp / "elsewhere"  # no checkout, no searchspaces/ link
    work.mkdir()
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {"home": home, "python": python, "bin": home / "bin", "env": env, "work": work}


def test_service_comes_from_the_wheel(venv) -> None:
    code = ("import json, service, service.config.spaces as s; print(json.dumps("
            "[service.__file__, str(s.DEFAULT_SPACE), str(s.SHIPPED_SPACES / 'schema.json')]))")
    proc = _run([venv["python"], "-c", code], venv["work"], venv["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, default, schema = map(Path, json.loads(proc.stdout))
    assert venv["home"] in module.parents, f"service imported from {module}, not the wheel"
    assert default.is_file() and venv["home"] in default.parents
    assert schema.is_file() and json.loads(schema.read_text())["$defs"]
    shipped = sorted(p.relative_to(default.parent) for p in default.parent.glob("**/*.yaml"))
    in_tree = sorted(p.relative_to(ROOT / "service" / "searchspaces")
                     for p in (ROOT / "service" / "searchspaces").glob("**/*.yaml"))
    assert shipped == in_tree


@pytest.mark.parametrize("how", ["python -m", "cnn-ablate"])
def test_the_default_space_plans_from_anywhere(how: str, venv) -> None:
    argv = ([venv["python"], "-m", "service.submit"] if how == "python -m"
            else [venv["bin"] / "cnn-ablate", "submit"])
    proc = _run([*argv, "--dry-run"], venv["work"], venv["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("sweep default:"), proc.stdout[:500]


def test_a_shipped_space_is_found_by_name(venv) -> None:
    proc = _run([venv["python"], "-m", "service.submit", "lenet5", "--dry-run"], venv["work"],
                venv["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("sweep lenet5:"), proc.stdout[:500]


def test_the_installed_schema_is_printed(venv) -> None:
    proc = _run([venv["bin"] / "cnn-ablate", "submit", "--schema"], venv["work"], venv["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = venv["home"].glob("lib/python*/site-packages/service/searchspaces/schema.json")
    assert json.loads(proc.stdout) == json.loads(next(shipped).read_text())
