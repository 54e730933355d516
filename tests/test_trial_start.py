"""What a trial's start costs in Ray actors (issue 18): a real sweep through the service's own
path (bench/trial_start.py: `start_ray`, `run_sweep`), counted by Ray's State API."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_trials_reuse_the_trial_actor_and_start_no_dataset_manager():
    proc = subprocess.run([sys.executable, "bench/trial_start.py", "--trials", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "trials 3 (completed)" in out, out
    made = dict(re.findall(r"(\w[\w:]*) x(\d+)", out.split("actors created:")[1].splitlines()[0]))
    made = {name: int(n) for name, n in made.items()}
    # every trial is its own Ray Train run: a controller and a worker each ...
    assert made["TrainController"] == 3 and made["RayTrainWorker"] == 3, made
    # ... but two at a time on two cores, the third trial runs in a finished trial's actor
    assert made["ImplicitFunc"] == 2, made
    # and none starts Ray Data's DatasetManager (the workers build their own data)
    assert "DatasetManager" not in made, made
    # each trial reported its own first step
    assert len(re.findall(r"^trial \w+: on_trial_start", out, re.M)) == 3, out


def test_actors_are_reused_only_where_no_scheduler_stops_trials():
    from service.config.spec import parse_spec
    from service.tune.search import make_scheduler
    from service.tune.sweep import reuses_actors

    base = {"name": "t", "model": {"family": "lenet5"},
            "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
            "budget": {"max_epochs": 3, "num_samples": 4}}
    for kind, reused in (("none", True), ("asha", False), ("hyperband", False),
                         ("median", False)):
        spec = parse_spec({**base, "scheduler": {"type": kind}})
        assert reuses_actors(make_scheduler(spec)) is reused, kind
    assert reuses_actors(None)
