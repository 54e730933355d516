"""Faults injected for real: a sweep whose driver is killed finishes with --resume, its finished
trials kept and ASHA's rungs rebuilt; a summary that cannot be written; a trial out of memory.
(The process training a trial killed mid-trial, through a space's `resources.max_failures`:
tests/test_faults_submit.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ASHA, lenet_space
from raynodes import kill_tree, process_tree

from service.rundir import checkpoint_list, read_local_list

ROOT = Path(__file__).resolve().parents[1]


# Ray titles a Train worker ray::RayTrainWorker and Tune's trial actor (a function trainable)
# ray::ImplicitFunc; each works in its trial's directory: a Train run's is `train_<trial id>`
# (service/rundir.train_run_name), a Tune trial's `run_trial_<trial id>_<index>_…`.
TRAIN_WORKER, TRIAL_ACTOR = "ray::RayTrainWorker", "ray::ImplicitFunc"
_TRIAL_OF_CWD = re.compile(r"/(?:train_([0-9a-f]+(?:_\d{5})?)|run_trial_([0-9a-f]+(?:_\d{5})?)_\d+_"
                           r"[^/]*)(/|$)")


def trial_process_pids(root_pid: int, title: str = TRAIN_WORKER) -> list[int]:
    """Live Ray processes titled `title` among the descendants of `root_pid` (this test, or
    the sweep's driver it started). Only our own process tree is searched, never every
    process on the machine."""
    import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)

    psutil = pytest.importorskip("psutil")
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and " ".join(
                    child.cmdline()).startswith(title):
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def train_worker_pids(root_pid: int) -> list[int]:
    """Live Ray Train workers under `root_pid`."""
    return trial_process_pids(root_pid, TRAIN_WORKER)


def trial_processes(root_pid: int, title: str = TRIAL_ACTOR) -> dict[int, str | None]:
    """Live processes titled `title` under `root_pid` that train a trial (pid -> trial id,
    from their working directory; None where it cannot be read): Tune's trial actors on the
    tune engine, `TRAIN_WORKER` for Ray Train's workers."""
    import psutil  # importable once trial_process_pids has imported ray

    out = {}
    for pid in trial_process_pids(root_pid, title):
        try:
            m = _TRIAL_OF_CWD.search(psutil.Process(pid).cwd())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[pid] = (m[1] or m[2]) if m else None
    return out


def _trained_epochs(run_dir: Path) -> dict[str, list[int]]:
    """Per trial, the epochs whose checkpoint was registered (written straight to the results
    directory, so they are what survives a killed driver), on either engine."""
    ids = {p.name.removeprefix("train_") for p in run_dir.glob("train_*")}
    ids |= {m[2] for p in run_dir.glob("run_trial_*")
            if (m := _TRIAL_OF_CWD.search("/" + p.name + "/"))}
    return {i: [e["metrics"]["epoch"] for e in read_local_list(checkpoint_list(run_dir, i))]
            for i in ids if i}


def kill_sweep(pid: int, before: list | None = None) -> None:
    """SIGKILL what is left of a sweep this test started and wait until it is gone: the
    driver `pid` and its process tree as it is now, plus `before`, the tree as it was just
    before the test killed the driver (a killed driver's children are no longer its own).
    Only this tree is searched, never every process on the machine."""
    kill_tree(process_tree(pid) + list(before or []))


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_and_asha_keeps_its_rungs(tmp_path):
    # One trial at a time over a fixed grid: two good learning rates finish, the driver is
    # SIGKILLed, and on --resume the hopeless lr=1e-4 reaches ASHA's first rung. Only the rung
    # values recorded before the kill can stop it there: Tune does not save a scheduler.
    spec = lenet_space("killed", {"lr": {"type": "grid", "values": [0.05, 0.03, 0.0001]}}, 3,
                       scheduler=ASHA, max_concurrent_trials=1)
    space = tmp_path / "killed.yaml"
    space.write_text(yaml.safe_dump(spec))
    results = tmp_path / "res"
    cmd = [sys.executable, "-m", "service.submit", str(space), "--results", str(results),
           "--no-report"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)
    out, finished, tree = [], [], []
    try:
        deadline = time.time() + 300
        for line in proc.stdout:
            out.append(line)
            if " completed " in line or " stopped early " in line:
                finished.append(line.split()[1])
                if len(finished) == 2:
                    tree = process_tree(proc.pid)  # the driver's Ray, before it is orphaned
                    proc.kill()  # SIGKILL: no handler, no saving of anything
                    break
            assert time.time() < deadline, "".join(out)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "".join(out)
    finally:
        # Ray's own processes die with their driver, but not at once: a worker could still
        # register a checkpoint. Only what is on disk once they are all gone counts.
        kill_sweep(proc.pid, tree)
    (run_dir,) = [d for d in (results / "killed").iterdir() if not d.name.startswith(".")]
    assert not (run_dir / "summary.json").exists()
    before = _trained_epochs(run_dir)
    assert all(before.get(t) for t in finished), before

    again = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, start_new_session=True)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    by_lr = {t["config"]["lr"]: t for t in summary["trials"]}
    assert sorted(by_lr) == [0.0001, 0.03, 0.05]
    assert len({t["trial_id"] for t in summary["trials"]}) == 3
    after = _trained_epochs(run_dir)
    for trial_id in finished:  # finished trials keep their results, no epoch is trained again
        assert after[trial_id] == before[trial_id]
        (trial,) = [t for t in summary["trials"] if t["trial_id"] == trial_id]
        assert trial["epochs"] == before[trial_id][-1]
    slow = by_lr[0.0001]
    assert not before.get(slow["trial_id"]), "the slow trial trained before the kill"
    assert slow["status"] == "stopped-early" and slow["stopped_at"] == 1, summary["trials"]
    assert after[slow["trial_id"]] == [1]


def test_a_summary_that_cannot_be_written_leaves_the_old_one_whole(tmp_path):
    # A real write failure: the kernel refuses to grow files past RLIMIT_FSIZE (EFBIG), as a
    # full disk refuses with ENOSPC. The earlier summary stays whole and no temp file is left.
    target = tmp_path / "summary.json"
    target.write_text('{"old": true}')
    code = """
import resource, signal, sys
from service.results.store import write_json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_json(sys.argv[1], {"trials": ["x" * 100] * 1000})
except OSError as err:
    print("refused", err.filename)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == f"refused {target}", proc.stdout + proc.stderr
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_trial_that_runs_out_of_memory_is_an_error_and_the_sweep_goes_on(tmp_path):
    # fc_width 2**20 asks for a 4 TiB FC7 weight: the allocator really fails (ENOMEM) inside
    # the trial's actor. That trial is recorded as an error with the reason; the other
    # completes and the exit code says that a trial failed.
    spec = {
        "name": "oom", "data": {"dataset": "digits", "image_size": 67},
        "model": {"family": "alexnet", "knobs": {"width_mult": 0.25}},
        "train": {"batch_size": 64, "lr": 0.02, "num_threads": 1},
        "search": {"fc_width": {"type": "grid", "values": [128, 2**20]}},
        "budget": {"max_epochs": 1, "num_samples": 1},
        "searcher": {"type": "grid"}, "scheduler": {"type": "none"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    }
    space = tmp_path / "oom.yaml"
    space.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(tmp_path / "res")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    by_width = {t["config"]["fc_width"]: t for t in summary["trials"]}
    assert by_width[128]["status"] == "completed"
    assert by_width[2**20]["status"] == "error"
    assert "allocate" in by_width[2**20]["error"], by_width[2**20]["error"]
    assert summary["best"]["config"]["fc_width"] == 128
    assert "Traceback" not in proc.stdout
    # The report is written at the end and shows the failed trial with its reason.
    report = (Path(proc.stdout.strip().splitlines()[-1]).parent / "report.md").read_text()
    assert "| error |" in report and "allocate" in report
