"""`resources.max_failures` wired from a search space through `python -m service.submit`: the
process training a trial, SIGKILLed mid-trial, is replaced and the trial resumes from its last
checkpoint (max_failures 1), or the trial is an error (max_failures 0). On the default (tune)
engine that process is Tune's trial actor and Tune's FailureConfig restarts the trial; on the
train engine it is the Ray Train worker and Train restarts its worker group."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import lenet_space
from test_faults import TRAIN_WORKER, TRIAL_ACTOR, _trained_epochs, kill_sweep, trial_process_pids

from service.analysis.load import trial_checkpoints
from service.rundir import json_lines, trial_dir, trial_history
from service.training.loop import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def _registered_epochs(run_dir: Path) -> list[int]:
    try:
        return [e for epochs in _trained_epochs(run_dir).values() for e in epochs]
    except (OSError, ValueError, KeyError):  # a snapshot being written
        return []


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "max_failures"), [("auto", 1), ("auto", 0), ("train", 1)])
def test_max_failures_from_the_spec_restarts_a_killed_worker(tmp_path, engine, max_failures):
    pytest.importorskip("ray")
    # 64 px LeNet epochs take ~2.7 s on one core, so the kill lands inside the trial.
    spec = lenet_space("wkill", {"lr": {"type": "grid", "values": [0.02]}}, EPOCHS,
                       image_size=64, max_failures=max_failures, engine=engine)
    # The process that trains: Tune's trial actor (the sweep's only one) or Ray Train's worker.
    title = TRAIN_WORKER if engine == "train" else TRIAL_ACTOR
    space = tmp_path / "wkill.yaml"
    space.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.submit", str(space), "--results", str(tmp_path / "res"),
         "--no-report"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    out: list[str] = []
    run_dir = victim = None
    killed_at_epochs: list[int] = []
    new_workers: set[int] = set()
    try:
        deadline = time.time() + 240
        while True:
            assert time.time() < deadline, "sweep did not finish in time:\n" + "".join(out)
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                break
            out.append(line)
            if line.strip().startswith("results: "):
                run_dir = Path(line.split("results: ", 1)[1].strip())
            if run_dir is None:
                continue
            if victim is None:
                if registered := _registered_epochs(run_dir):
                    assert max(registered) < EPOCHS, "the trial ended before the kill"
                    workers = trial_process_pids(proc.pid, title)
                    assert len(workers) == 1, workers
                    victim, killed_at_epochs = workers[0], registered
                    os.kill(victim, signal.SIGKILL)
            else:  # a restarted worker group is a new process in this sweep's tree
                new_workers.update(set(trial_process_pids(proc.pid, title)) - {victim})
        code = proc.wait(timeout=60)
    finally:
        kill_sweep(proc.pid)
    text = "".join(out)
    assert victim is not None, "no epoch was registered before the sweep ended:\n" + text
    summary = json.loads((run_dir / "summary.json").read_text())
    (trial,) = summary["trials"]
    history = [row["epoch"] for row in json_lines(trial_dir(run_dir, trial["trial_id"])
                                                  / "result.json")]
    if max_failures == 0:
        assert code == 3, text
        assert trial["status"] == "error", trial
        assert "died" in trial["error"], trial["error"]
        assert not new_workers, "the worker group was restarted with max_failures 0"
        assert max(history) < EPOCHS, history
        return
    assert code == 0, text
    assert trial["status"] == "completed" and trial["epochs"] == EPOCHS, trial
    assert new_workers, "no new trial process appeared after the kill:\n" + text
    # Every epoch was reached; at most the one in flight when the process died ran twice.
    # (Tune's result.json of a trial Tune restarts can miss the rows from before the kill;
    # the trial's history reads its registered checkpoints too.)
    reached = [row["epoch"] for row in trial_history(run_dir, trial["trial_id"],
                                                     trial_dir(run_dir, trial["trial_id"]))]
    assert reached == list(range(1, EPOCHS + 1)), (reached, history)
    assert len(history) - len(set(history)) <= 1 and history == sorted(history), history
    registered = _registered_epochs(run_dir)
    assert sorted(set(registered)) == list(range(1, EPOCHS + 1)), registered
    assert len(registered) - len(set(registered)) <= 1, registered
    assert max(killed_at_epochs) < EPOCHS
    # Each registered checkpoint holds the epoch it was registered for (model,
    # optimiser, scheduler and RNG are restored from it on the restart).
    checkpoints = trial_checkpoints(run_dir, trial["trial_id"])
    assert sorted({epoch for epoch, _ in checkpoints}) == list(range(1, EPOCHS + 1))
    for epoch, ckpt in checkpoints:
        assert load_checkpoint(ckpt)["epoch"] == epoch
