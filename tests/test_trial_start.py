"""What a trial's start costs in Ray actors, on each engine: a real sweep through the service's own
path (bench/trial_start.py: `start_ray`, `run_sweep`), counted by Ray's State API."""

import os
import re
import signal
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
    # one block per engine, each starting `== engine NAME: ...`
    parts = re.split(r"^== engine (\w+): .*$", proc.stdout, flags=re.M)
    blocks = dict(zip(parts[1::2], parts[2::2], strict=True))

    def actors_created(block: str) -> dict[str, int]:
        line = block.split("actors created:")[1].splitlines()[0]
        return {name: int(n) for name, n in re.findall(r"(\w[\w:]*) x(\d+)", line)}

    assert sorted(blocks) == ["train", "tune"], proc.stdout
    for engine, block in blocks.items():
        assert "trials 3 (completed)" in block, (engine, block)
        # each engine's trials reported their own first step, and its own headline
        assert len(re.findall(r"^trial \w+: on_trial_start", block, re.M)) == 3, (engine, block)
        assert re.search(rf"^engine={engine} trial_start_s=\S+ launch_s=", block, re.M), block
        # two at a time on two cores: the third trial runs in a finished trial's actor
        assert actors_created(block)["ImplicitFunc"] == 2, (engine, block)
    train = actors_created(blocks["train"])
    # every train-engine trial is its own Ray Train run: a controller and a worker each ...
    assert train["TrainController"] == 3 and train["RayTrainWorker"] == 3, train
    # ... and none starts Ray Data's DatasetManager (the workers build their own data)
    assert "DatasetManager" not in train, train
    # a tune-engine trial trains in its trial actor: no Ray Train run at all
    tune = actors_created(blocks["tune"])
    assert not {"TrainController", "RayTrainWorker", "DatasetManager"} & set(tune), tune


def test_tune_engine_actors_are_reused_with_every_scheduler_train_runs_only_without():
    from service.config.spec import parse_spec
    from service.tune.search import make_scheduler
    from service.tune.sweep import reuses_actors

    base = {"name": "t", "model": {"family": "lenet5"},
            "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
            "budget": {"max_epochs": 3, "num_samples": 4}}
    for kind, on_train in (("none", True), ("asha", False), ("hyperband", False),
                           ("median", False)):
        for engine, reused in (("auto", True), ("tune", True), ("train", on_train)):
            spec = parse_spec({**base, "scheduler": {"type": kind},
                               "resources": {"engine": engine}})
            assert reuses_actors(spec, make_scheduler(spec)) is reused, (kind, engine)
    two = parse_spec({**base, "scheduler": {"type": "asha"},
                      "resources": {"workers_per_trial": 2}})
    assert not reuses_actors(two, make_scheduler(two))  # auto: several workers are Train runs


# A sweep whose Tune event loop is slow: a callback that sleeps at every result, as Ray's W&B
# callback blocks while a trial's queue actor starts (or a busy machine does).
SLOW_LOOP = """
import sys, time
from service.config.spec import parse_spec
from service.tune.plan import plan_sweep
from service.tune.progress import Progress
from service.tune.runtime import start_ray
from service.tune.sweep import run_sweep

class SlowProgress(Progress):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        time.sleep(1.5)
        return super().on_trial_result(iteration, trials, trial, result, **info)

spec = parse_spec({"name": "slow-loop", "data": {"dataset": "digits"},
                   "model": {"family": "lenet5"}, "train": {"batch_size": 64, "num_threads": 1},
                   "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
                   "budget": {"max_epochs": 2, "num_samples": 4}, "scheduler": {"type": "none"},
                   "resources": {"engine": "train"}})
start_ray(None, False)
import ray
plan = plan_sweep(spec, sys.argv[1], ray.cluster_resources(), "run")
summary = run_sweep(spec, plan, SlowProgress(plan.trials, plan.max_epochs, ["lr"], quiet=True))
print("statuses", *[t.status for t in summary.trials])
"""


@pytest.mark.slow
def test_a_slow_tune_loop_never_hangs_a_finished_trial(tmp_path):
    """Without `trial.wait_until_tune_has_the_last_result` this sweep hung in Ray 2.60 (3 runs
    of 3): a trial's last epoch was still queued for Tune when its function returned."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LOOP, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its Ray is in its process group
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the sweep hung (killed after 300 s): {out[-1000:]} {err[-2000:]}")
    assert proc.returncode == 0, out[-1000:] + err[-3000:]
    assert "statuses completed completed completed completed" in out, out
