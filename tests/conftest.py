"""Fixtures shared by several test modules: one real AlexNet-family sweep on local Ray.

The analyses and the report read what a sweep leaves on disk (summary.json, Tune's trial
directories, Ray Train's registered checkpoints), so they are tested on a real one, run once per
test session: quarter-width AlexNet on digits at 67 px, conv1 11x11/4 against 7x7/2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

ALEXNET_SWEEP = {
    "name": "alexnet-tiny",
    "data": {"dataset": "digits", "image_size": 67},
    "model": {"family": "alexnet", "knobs": {"width_mult": 0.25, "fc_width": 128,
                                                   "lrn": False}},
    "train": {"batch_size": 64, "lr": 0.02, "num_threads": 1},
    "search": {"conv1_kernel": {"type": "choice", "values": [11, 7]},
               "conv1_stride": {"type": "choice", "values": [4, 2]}},
    "budget": {"max_epochs": 3, "num_samples": 1},  # grid: each of the 4 conv1 settings once
    "searcher": {"type": "grid", "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def lenet_space(name: str, search: dict, max_epochs: int, *, image_size: int | None = None,
                searcher: dict | None = None, scheduler: dict | None = None,
                num_samples: int = 1, **resources) -> dict:
    """A LeNet-5 sweep on digits, one thread a trial, one worker of one CPU (plus `resources`):
    by default a grid over `search` with no early stopping."""
    data = {"dataset": "digits"} | ({"image_size": image_size} if image_size else {})
    return {"name": name, "data": data, "model": {"family": "lenet5"},
            "train": {"batch_size": 64, "num_threads": 1}, "search": search,
            "budget": {"max_epochs": max_epochs, "num_samples": num_samples},
            "searcher": searcher or {"type": "grid"}, "scheduler": scheduler or {"type": "none"},
            "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, **resources}}


ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


def submitted(spec: dict, tmp: Path, timeout: int = 900) -> Path:
    """The summary.json of `spec` run quietly through `python -m service.submit` in tmp
    (the submit must exit 0 and print the summary's path last)."""
    space = tmp / f"{spec['name']}.yaml"
    space.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(tmp / "results"), "-q", "--no-report"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = Path(proc.stdout.strip().splitlines()[-1])
    assert summary.name == "summary.json", proc.stdout
    return summary


@pytest.fixture(scope="session")
def submit_space():
    """`submitted`, for test modules: (spec, tmp[, timeout]) -> the run's summary.json."""
    return submitted


@pytest.fixture(scope="session")
def alexnet_run(tmp_path_factory) -> Path:
    """The run directory of a finished 4-trial AlexNet sweep (its summary.json beside Tune's)."""
    summary = submitted(ALEXNET_SWEEP, tmp_path_factory.mktemp("alexnet-sweep"))
    assert json.loads(summary.read_text())["trials"]
    return summary.parent

