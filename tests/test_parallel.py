"""Data-parallel trials: two Ray Train workers (DDP over gloo on CPU) against one worker, and a
sweep with two workers per trial through `python -m service.submit`. The loop itself on two
processes without Ray (sharded validation, rank 0's checkpoint): tests/test_ddp.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_submit import ROOT, TINY, write_space

from service.config.train import TrainConfig
from service.rundir import train_run_dir
from service.training.loop import CHECKPOINT_FILE, fit
from service.training.parallel import per_worker_batch, world


def test_single_process_is_world_of_one():
    assert world() == (0, 1)
    assert per_worker_batch(64, 1) == 64


def test_global_batch_must_split_evenly():
    assert per_worker_batch(64, 2) == 32
    with pytest.raises(ValueError, match="batch_size=65"):
        per_worker_batch(65, 2)


@pytest.mark.slow
def test_two_workers_train_like_one_worker_with_the_same_global_batch(tmp_path):
    ray = pytest.importorskip("ray")
    from ray.train import RunConfig, ScalingConfig

    from service.tune.trial import loop_config, make_trainer

    cfg = TrainConfig(model="lenet5", epochs=8, batch_size=64, num_threads=1)
    single: list[dict] = []
    fit(cfg, lambda m, _c: single.append(m))

    ray.init(num_cpus=2, log_to_driver=False)
    try:
        result = make_trainer(
            loop_config(cfg.model_dump(mode="json"), backend="gloo"),
            ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            RunConfig(name="ddp", storage_path=str(tmp_path)),
        ).fit()
    finally:
        ray.shutdown()
    ddp = result.metrics
    assert ddp["epoch"] == 8 and ddp["status"] == "completed"
    # Same global batch and lr: the curves agree up to the order the samples were drawn in.
    assert abs(ddp["val_acc"] - single[-1]["val_acc"]) <= 0.03
    assert ddp["val_acc"] > 0.9
    # One registered checkpoint per epoch (that it is rank 0's alone: the tests below).
    ckpts = sorted(p for p in Path(tmp_path, "ddp").glob("checkpoint_*") if p.is_dir())
    assert len(ckpts) == 8 and all((c / CHECKPOINT_FILE).is_file() for c in ckpts)


# A Ray Train worker logs each `ray.train.report` with its rank (Ray 2.60's train/v2 worker log
# files in the Ray session directory, JSON lines; `_wait_then_report` in
# ray/train/v2/_internal/execution/context.py writes the message).
REPORTED = re.compile(r"Reporting training result (\d+): "
                      r"TrainingReport\(checkpoint=(None|Checkpoint).*'val_acc': ([-+.e\d]+)")


def reports_by_rank(ray_tmp: Path) -> dict[int, list[tuple[int, bool, float, int]]]:
    """Every Train worker's reports, from Ray's logs: rank -> [(report number, with a
    checkpoint, val_acc, worker process id)]."""
    seen: dict[int, list[tuple[int, bool, float, int]]] = {}
    for log in ray_tmp.glob("ray/session_2*/logs/train/ray-train-app-worker-*.log"):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if m := REPORTED.match(record["message"]):
                seen.setdefault(record["world_rank"], []).append(
                    (int(m[1]), m[2] == "Checkpoint", float(m[3]), record["process"]))
    return {rank: sorted(r) for rank, r in seen.items()}


@pytest.mark.slow
def test_a_sweep_with_two_workers_per_trial_runs_through_submit(tmp_path):
    epochs = 2
    space = write_space(tmp_path, dict(
        TINY, name="ddp", search={"lr": {"type": "grid", "values": [0.05]}},
        searcher={"type": "grid"}, scheduler={"type": "none"},
        budget={"max_epochs": epochs, "num_samples": 1},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1}))
    # Ray's session directory (its logs) of this sweep alone; short, for Ray's socket paths.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-ddp-", dir="/tmp"))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "service.submit", str(space), "--results",
             str(tmp_path / "res"), "--no-report"], cwd=ROOT, capture_output=True, text=True,
            timeout=600, env=dict(os.environ, RAY_TMPDIR=str(ray_tmp)))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "each trial: a Ray Train run of 2 worker(s) holding 2 CPU" in proc.stdout
        by_rank = reports_by_rank(ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    summary_path = Path(proc.stdout.strip().splitlines()[-1])
    (trial,) = json.loads(summary_path.read_text())["trials"]
    assert trial["status"] == "completed" and trial["epochs"] == epochs

    # Two workers ran, in two processes, and each reported every epoch.
    assert sorted(by_rank) == [0, 1], by_rank
    assert len({r[3] for reports in by_rank.values() for r in reports}) == 2
    assert [r[0] for r in by_rank[0]] == [r[0] for r in by_rank[1]] == [1, 2]
    # Only rank 0 handed Ray a checkpoint; rank 1 reported none.
    assert [r[1] for r in by_rank[0]] == [True] * epochs
    assert [r[1] for r in by_rank[1]] == [False] * epochs
    # Validation is all-reduced: both ranks report one val_acc, the one Tune recorded.
    assert [r[2] for r in by_rank[0]] == [r[2] for r in by_rank[1]]
    assert by_rank[0][-1][2] == pytest.approx(trial["final"]["val_acc"])
    # On disk: one registered checkpoint per epoch, each with the loop's checkpoint file.
    run = Path(train_run_dir(summary_path.parent, trial["trial_id"]))
    ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    assert len(ckpts) == epochs and all((c / CHECKPOINT_FILE).is_file() for c in ckpts)
