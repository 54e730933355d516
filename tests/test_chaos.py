"""Chaos: a 12-trial sweep through `python -m service.submit` (the tune engine: each trial in
Tune's reused trial actor) whose trial actor processes are SIGKILLed five times at seeded
random moments while they train. With `resources.max_failures: 2` Tune restarts each killed
trial in a new actor from its last checkpoint: every trial ends completed or stopped early,
none errors, and no trial trains an epoch twice more than once per kill it took.

The victims are found in the sweep's own process tree (tests/test_faults.py), never by
scanning the machine's processes."""

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
from conftest import ASHA, lenet_space
from test_faults import TRIAL_ACTOR, kill_sweep, trial_processes
from test_submit import Lines

from service.rundir import json_lines, trial_dir, trial_history

ROOT = Path(__file__).resolve().parents[1]
TRIALS, KILLS, MAX_FAILURES, SEED = 12, 5, 2, 20261202

# 64 px LeNet epochs on 512 training images take about a second on one core: the kills land
# inside trials.
SPACE = lenet_space("chaos", {"lr": {"type": "float", "low": 0.001, "high": 0.03, "log": True}}, 3,
                    image_size=64, train_subset=512, searcher={"type": "random", "seed": 0},
                    scheduler=ASHA, num_samples=TRIALS, max_failures=MAX_FAILURES)


@pytest.mark.slow
def test_five_seeded_worker_kills_leave_no_trial_in_error(tmp_path):
    pytest.importorskip("ray")
    space = tmp_path / "chaos.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.submit", str(space), "--results", str(tmp_path / "res"),
         "--no-report"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    lines = Lines(proc)
    rng = random.Random(SEED)
    kills: Counter[str] = Counter()
    try:
        line = lines.until(lambda s: s.strip().startswith("results: "), 120)
        run_dir = Path(line.split("results: ", 1)[1].strip())
        deadline = time.monotonic() + 400
        while sum(kills.values()) < KILLS:
            # The next kill: a seeded wait, then a seeded pick among the live workers of
            # trials that can still afford one.
            moment = time.monotonic() + rng.uniform(1.0, 6.0)
            while time.monotonic() < moment:
                assert proc.poll() is None, "the sweep ended before the kills:\n" + \
                    "".join(lines.seen)
                time.sleep(0.1)
            while True:
                assert time.monotonic() < deadline and proc.poll() is None, \
                    f"only {sum(kills.values())} kills landed:\n" + "".join(lines.seen)
                # An actor between trials (reused, idle) is titled without ".train".
                training = trial_processes(proc.pid, f"{TRIAL_ACTOR}.train")
                workers = {pid: trial for pid, trial in training.items()
                           if trial and kills[trial] < MAX_FAILURES}
                if workers:
                    break
                time.sleep(0.1)
            pid = rng.choice(sorted(workers))
            os.kill(pid, signal.SIGKILL)
            kills[workers[pid]] += 1
        out = lines.rest(600)
        code = proc.wait(timeout=60)
    finally:
        kill_sweep(proc.pid)
    assert code == 0, out
    summary = json.loads((run_dir / "summary.json").read_text())
    trials = summary["trials"]
    assert len(trials) == TRIALS and len({t["trial_id"] for t in trials}) == TRIALS
    statuses = Counter(t["status"] for t in trials)
    assert set(statuses) <= {"completed", "stopped-early"}, (statuses, kills)
    assert set(kills) <= {t["trial_id"] for t in trials}
    retrained = 0
    for t in trials:
        history = [row["epoch"] for row in json_lines(trial_dir(run_dir, t["trial_id"])
                                                      / "result.json")]
        # every epoch reached: Tune's result.json of a restarted trial can miss the rows from
        # before the kill, so the trial's history reads its registered checkpoints too
        reached = [row["epoch"] for row in trial_history(run_dir, t["trial_id"],
                                                         trial_dir(run_dir, t["trial_id"]))]
        assert reached == list(range(1, t["epochs"] + 1)), (reached, history)
        assert history == sorted(history), history
        twice = len(history) - len(set(history))
        assert twice <= kills[t["trial_id"]], (t["trial_id"], history, kills)
        retrained += twice
    print(f"chaos: {TRIALS} trials, {sum(kills.values())} kills on {len(kills)} trials, "
          f"{retrained} epochs retrained, statuses {dict(statuses)}")
