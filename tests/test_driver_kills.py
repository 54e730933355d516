"""A driver killed at scale: a 64-trial sweep of one-epoch trials with an SQLite Optuna study
has its driver (`python -m service.submit`) SIGKILLed three times at seeded random points and is
resumed each time. The summary lists every trial exactly once, every trial any driver saw
finish among them; the study holds no trial left RUNNING and each finished trial once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from raynodes import process_tree
from test_faults import kill_sweep
from test_submit import Lines

ROOT = Path(__file__).resolve().parents[1]
TRIALS, KILLS, SEED = 64, 3, 20261202


def _space(db: Path) -> dict:
    return {
        "name": "kills",
        "data": {"dataset": "digits", "train_subset": 256},  # trials of a fraction of a second
        "model": {"family": "lenet5"},
        "train": {"batch_size": 64, "num_threads": 1},
        "search": {"lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
                   "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        "budget": {"max_epochs": 1, "num_samples": TRIALS},
        "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 8,
                     "storage": f"sqlite:///{db}"},
        "scheduler": {"type": "none"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    }


def _finished(line: str) -> str | None:
    parts = line.split()
    if len(parts) > 2 and parts[0] == "trial" and parts[2] in ("completed", "stopped"):
        return parts[1]
    return None


@pytest.mark.slow
def test_three_driver_kills_lose_no_trial_and_leave_no_ghost_in_the_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("ray")
    db = tmp_path / "study.db"
    space = tmp_path / "kills.yaml"
    space.write_text(yaml.safe_dump(_space(db)))
    cmd = [sys.executable, "-m", "service.submit", str(space), "--results",
           str(tmp_path / "res"), "--no-report"]
    rng = random.Random(SEED)
    seen: set[str] = set()  # every trial a driver printed as finished
    kill_points = []
    for kill in range(KILLS + 1):
        proc = subprocess.Popen(cmd + (["--resume"] if kill else []), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                start_new_session=True)
        lines, tree = Lines(proc), []
        try:
            if kill == KILLS:  # the last run goes to the end
                out = lines.rest(900)
                assert proc.wait(timeout=60) == 0, out
                seen.update(t for line in out.splitlines() if (t := _finished(line)))
                break
            # A seeded point: after 6-14 more trials finish, a seeded fraction of a second on.
            target = len(seen) + rng.randint(6, 14)
            while len(seen) < target:
                line = lines.until(lambda s: _finished(s) is not None, 300)
                seen.add(_finished(line))
            time.sleep(rng.uniform(0.0, 2.0))
            tree = process_tree(proc.pid)  # the driver's Ray, before it is orphaned
            proc.kill()  # SIGKILL: nothing is saved on the way out
            assert proc.wait(timeout=60) == -signal.SIGKILL
            kill_points.append(len(seen))
        finally:
            kill_sweep(proc.pid, tree)
    (run_dir,) = [d for d in (tmp_path / "res" / "kills").iterdir()
                  if not d.name.startswith(".")]
    summary = json.loads((run_dir / "summary.json").read_text())
    ids = [t["trial_id"] for t in summary["trials"]]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    assert seen <= set(ids), sorted(seen - set(ids))  # no finished trial lost
    assert all(t["status"] == "completed" for t in summary["trials"]), summary["trials"]
    study = optuna.load_study(study_name="kills", storage=f"sqlite:///{db}")
    states = Counter(t.state.name for t in study.trials)
    assert "RUNNING" not in states and "WAITING" not in states, states
    complete = [t.user_attrs.get("ray_tune_trial_id") for t in study.trials
                if t.state.name == "COMPLETE"]
    assert len(complete) == len(set(complete)), Counter(complete).most_common(3)
    assert sorted(complete) == sorted(ids)
    print(f"driver kills: {len(ids)} trials in the summary, kills after {kill_points} "
          f"finished, study states {dict(states)}")
