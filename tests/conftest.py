"""Fixtures shared by several test modules: one real AlexNet-family sweep on local Ray.

The analyses and the report read what a sweep leaves on disk (summary.json, Tune's trial
directories, Ray Train's registered checkpoints), so they are tested on a real one, run once per
test session: quarter-width AlexNet on digits at 67 px, conv1 11x11/4 against 7x7/2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from raynodes import Loopback, loopback_cluster

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
                train_subset: int | None = None, searcher: dict | None = None,
                scheduler: dict | None = None, num_samples: int = 1, **resources) -> dict:
    """A LeNet-5 sweep on digits (at `image_size`, on `train_subset` training images), one
    thread a trial, one worker of one CPU (plus `resources`): by default a grid over `search`
    with no early stopping."""
    data = {"dataset": "digits"} | ({"image_size": image_size} if image_size else {}) | (
        {"train_subset": train_subset} if train_subset else {})
    return {"name": name, "data": data, "model": {"family": "lenet5"},
            "train": {"batch_size": 64, "num_threads": 1}, "search": search,
            "budget": {"max_epochs": max_epochs, "num_samples": num_samples},
            "searcher": searcher or {"type": "grid"}, "scheduler": scheduler or {"type": "none"},
            "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, **resources}}


ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


def run_main(main, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """A command's `main(argv)` run in this process, as its exit code (returned, or argparse's
    SystemExit) and what it printed. A traceback would fail the test as it raises."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def join_vars(cluster: Loopback) -> dict[str, str]:
    """What a user's shell sets for a Ray client to join `cluster`: RAY_ADDRESS and its token."""
    return {"RAY_ADDRESS": cluster.gcs,
            **{k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}}


def joined_env(cluster: Loopback) -> dict[str, str]:
    """This process's environment with `join_vars(cluster)`."""
    return {**os.environ, **join_vars(cluster)}


def submitted(spec: dict, tmp: Path, timeout: int = 900, *, cluster: Loopback) -> Path:
    """The summary.json of `spec` run quietly through `python -m service.submit` in tmp, on
    `cluster` (the submit must exit 0 and print the summary's path last)."""
    space = tmp / f"{spec['name']}.yaml"
    space.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(tmp / "results"), "-q", "--no-report"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=joined_env(cluster))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = Path(proc.stdout.strip().splitlines()[-1])
    assert summary.name == "summary.json", proc.stdout
    return summary


@pytest.fixture(scope="session")
def shared_ray(tmp_path_factory):
    """One running one-node Ray (`ray start`: this machine's CPUs, no GPU, the settings an
    embedded run gives its Ray) for the sweeps whose tests are about what a sweep does, not
    about starting Ray here: each run that joins it (RAY_ADDRESS) skips Ray's start and stop.
    The tests of the embedded start, of a killed driver and of killed trial processes (found in
    the driver's own process tree) start their own."""
    pytest.importorskip("ray")
    from service.tune.runtime import EMBEDDED_ENV

    stack = contextlib.ExitStack()
    for attempt in (1, 2):  # a node that timed out registering (a loaded machine): once more
        try:
            cluster = stack.enter_context(loopback_cluster(
                tmp_path_factory.mktemp("shared-ray"), cpus=os.cpu_count() or 1, gpus=0,
                nodes=1, node_env=EMBEDDED_ENV))
            break
        except AssertionError:  # what it started is stopped already
            if attempt == 2:
                raise
    with stack:
        yield cluster


@pytest.fixture
def on_shared_ray(shared_ray, monkeypatch):
    """Every Ray client this test starts in a subprocess (a submit, a nightly run, a claims
    run) joins the shared Ray through RAY_ADDRESS and its token, as a user's shell would."""
    for name, value in join_vars(shared_ray).items():
        monkeypatch.setenv(name, value)
    return shared_ray


@pytest.fixture(scope="session")
def submit_space(shared_ray):
    """`submitted` on the shared Ray, for test modules: (spec, tmp[, timeout]) -> the run's
    summary.json."""
    return functools.partial(submitted, cluster=shared_ray)


@pytest.fixture(scope="session")
def alexnet_run(tmp_path_factory, shared_ray) -> Path:
    """The run directory of a finished 4-trial AlexNet sweep (its summary.json beside Tune's)."""
    summary = submitted(ALEXNET_SWEEP, tmp_path_factory.mktemp("alexnet-sweep"),
                        cluster=shared_ray)
    assert json.loads(summary.read_text())["trials"]
    return summary.parent

