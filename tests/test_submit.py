"""The sweep service end to end on local Ray: plan, run, early stops, summary.json, resume."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from service.config.spec import parse_spec
from service.tune.plan import concurrency

ROOT = Path(__file__).resolve().parents[1]

# LeNet-5 on digits: lr 1e-4 stays at chance while 0.05 is far ahead after one epoch. Trials run
# one at a time, so the seeded TPE start-up sequence (slow, slow, slow, fast, slow, fast) reaches
# ASHA's rung in a fixed order; with reduction factor 4 the cutoff is the 75th percentile of the
# rung, which the fifth (slow) trial misses. Concurrent trials are exercised by the resume test.
TINY = {
    "name": "tiny",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "choice", "values": [0.05, 0.0001]},
               "pool": {"type": "choice", "values": ["max", "avg"]}},
    "budget": {"max_epochs": 3, "num_samples": 6},
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 6},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 4},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
}


def write_space(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(*args: str, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.submit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


class Lines:
    """A child's stdout read on a thread, so that every wait has a deadline that holds even
    when the child prints nothing (a blocking `for line in proc.stdout` would not)."""

    def __init__(self, proc: subprocess.Popen):
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def until(self, wanted, timeout: float) -> str:
        """The first line for which `wanted(line)` holds; fails at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no such line within {timeout:.0f} s:\n{''.join(self.seen)}"
            try:
                line = self._queue.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            assert line is not None, f"output ended first:\n{''.join(self.seen)}"
            self.seen.append(line)
            if wanted(line):
                return line

    def rest(self, timeout: float) -> str:
        """Everything up to the end of output, within `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)
        raise AssertionError(f"output did not end within {timeout:.0f} s:\n{''.join(self.seen)}")


def interrupted(space: Path, results: Path, wanted, timeout: float = 600) -> tuple[str, str]:
    """`python -m service.submit SPACE --results RESULTS --no-report`, Ctrl-C'd at its first
    line for which `wanted(line)` holds: that line and everything it printed (exit 130)."""
    proc = subprocess.Popen([sys.executable, "-m", "service.submit", str(space), "--results",
                             str(results), "--no-report"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = Lines(proc)
    try:
        line = lines.until(wanted, timeout)
        proc.send_signal(signal.SIGINT)
        out = lines.rest(180)
        assert proc.wait(timeout=60) == 130, out
    finally:
        proc.kill()
        proc.wait()
    return line, out


def in_process_without_ray(args: list[str]) -> subprocess.CompletedProcess:
    """Run submit's main in a fresh interpreter and report whether Ray was ever imported."""
    code = ("import sys; from service.submit import main; rc = main(sys.argv[1:]); "
            "print('RAY_IMPORTED' if 'ray' in sys.modules else 'RAY_NOT_IMPORTED'); "
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_dry_run_prints_the_plan_without_starting_ray(tmp_path):
    proc = in_process_without_ray([str(write_space(tmp_path, TINY)), "--dry-run",
                                   "--results", str(tmp_path / "res")])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "RAY_NOT_IMPORTED" in out
    assert "sweep tiny: 6 trials of up to 3 epochs" in out
    assert "asha (grace_period=1, reduction_factor=4.0)" in out
    assert "optuna-tpe (seed=0)" in out
    assert str(tmp_path / "res" / "tiny") in out
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_default_space_dry_run():
    proc = in_process_without_ray(["--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert "sweep default:" in proc.stdout and "RAY_NOT_IMPORTED" in proc.stdout


@pytest.mark.slow  # seconds in a subprocess
def test_bad_space_exits_2_before_ray(tmp_path):
    bad = dict(TINY, search={"conv1_kernel": {"type": "choice", "values": [11, "eleven"]}},
               model={"family": "alexnet", "knobs": {"width_mult": 0.25}},
               data={"dataset": "digits", "image_size": 67})
    proc = in_process_without_ray([str(write_space(tmp_path, bad))])
    assert proc.returncode == 2
    assert "RAY_NOT_IMPORTED" in proc.stdout
    assert "search.conv1_kernel.values[1]" in proc.stderr and "eleven" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_flag_and_missing_resume_exit_2(tmp_path):
    assert submit("--max-epochs", "many").returncode == 2
    proc = submit(str(write_space(tmp_path, TINY)), "--resume", "--results", str(tmp_path))
    assert proc.returncode == 2 and "no unfinished run" in proc.stderr


@pytest.mark.parametrize("resources, cluster, expected", [
    ({"workers_per_trial": 1, "cpus_per_worker": 1}, {"CPU": 2}, 2),
    ({"workers_per_trial": 2, "cpus_per_worker": 1}, {"CPU": 2}, 1),
    ({"workers_per_trial": 1, "cpus_per_worker": 0.5}, {"CPU": 2}, 4),
    ({"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 1}, {"CPU": 16, "GPU": 4},
     2),
    ({"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.5},
     {"CPU": 8, "GPU": 2}, 4),
    ({"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1}, {"CPU": 8}, 1),
])
def test_concurrency_fits_worker_groups_in_the_cluster(resources, cluster, expected):
    spec = parse_spec(dict(TINY, resources=resources))
    assert concurrency(spec, cluster) == expected


def test_concurrency_refuses_a_trial_that_cannot_fit():
    spec = parse_spec(dict(TINY, resources={"workers_per_trial": 1, "cpus_per_worker": 1,
                                            "gpus_per_worker": 1}))
    with pytest.raises(ValueError, match="GPU"):
        concurrency(spec, {"CPU": 2, "GPU": 0})


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_tiny_sweep_end_to_end(tmp_path):
    # The report at the end is checked by the out-of-memory test in test_faults.py.
    proc = submit(str(write_space(tmp_path, TINY)), "--results", str(tmp_path / "res"),
                  "--no-report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary_path = Path(proc.stdout.strip().splitlines()[-1])
    assert summary_path.name == "summary.json" and summary_path.is_file()
    summary = json.loads(summary_path.read_text())
    assert {"name", "spec", "trials", "best", "wall_s", "ray_version", "torch_version"} <= set(
        summary)
    assert summary["name"] == "tiny"
    assert parse_spec(summary["spec"]).model_dump() == parse_spec(TINY).model_dump()
    assert "1 at a time" in proc.stdout
    trials = summary["trials"]
    assert len(trials) == 6 and len({t["trial_id"] for t in trials}) == 6
    for t in trials:
        assert set(t["config"]) == {"lr", "pool"}
        assert t["status"] in ("completed", "stopped-early")
        assert 1 <= t["epochs"] <= 3
        assert (t["epochs"] == 3) == (t["status"] == "completed")
    assert any(t["status"] == "stopped-early" for t in trials)
    best = max(trials, key=lambda t: t["best_val_acc"])
    assert summary["best"]["trial_id"] == best["trial_id"]
    assert best["config"]["lr"] == 0.05 and best["best_val_acc"] > 0.8
    # the table is sorted by the metric, best first
    accs = [t["best_val_acc"] for t in trials]
    assert accs == sorted(accs, reverse=True)
    for t in trials:
        assert f"trial {t['trial_id']} started" in proc.stdout
    assert not (summary_path.parent / "report.md").exists()  # --no-report


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_resume_finishes_an_interrupted_sweep_without_rerunning(tmp_path):
    space = write_space(tmp_path, dict(TINY, name="resumable",
                                       budget={"max_epochs": 2, "num_samples": 4},
                                       resources={"workers_per_trial": 1, "cpus_per_worker": 1}))
    results = tmp_path / "res"
    line, first_out = interrupted(space, results,
                                  lambda s: " completed " in s or " stopped early " in s, 300)
    finished_before = [line.split()[1]]
    (run_dir,) = [d for d in (results / "resumable").iterdir() if not d.name.startswith(".")]
    assert not (run_dir / "summary.json").exists()
    assert "--resume" in first_out

    again = submit(str(space), "--results", str(results), "--resume", "--no-report")
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    ids = [t["trial_id"] for t in summary["trials"]]
    assert len(ids) == 4 and len(set(ids)) == 4
    for trial_id in finished_before:
        assert trial_id in ids
        assert f"trial {trial_id} started" not in again.stdout
    assert all(t["status"] in ("completed", "stopped-early") for t in summary["trials"])


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_diverging_trial_is_recorded_and_the_exit_code_says_so(tmp_path):
    space = dict(TINY, name="diverge", search={"lr": {"type": "grid", "values": [0.05, 1.0e9]}},
                 searcher={"type": "grid"}, scheduler={"type": "none"},
                 budget={"max_epochs": 2, "num_samples": 1},
                 resources={"workers_per_trial": 1, "cpus_per_worker": 1})
    proc = submit(str(write_space(tmp_path, space)), "--results", str(tmp_path / "res"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    status = {t["config"]["lr"]: t["status"] for t in summary["trials"]}
    assert status == {0.05: "completed", 1.0e9: "diverged"}
    assert summary["best"]["config"]["lr"] == 0.05
    assert "diverged at epoch 1" in proc.stdout


@pytest.mark.slow
def test_dry_run_for_a_cluster_is_not_sized_against_this_machine(tmp_path):
    big = dict(TINY, resources={"workers_per_trial": 2, "cpus_per_worker": 4096})
    space = str(write_space(tmp_path, big))
    here = in_process_without_ray([space, "--dry-run"])
    assert here.returncode == 2 and "needs 8192 CPU" in here.stderr
    assert "Traceback" not in here.stderr
    cluster = in_process_without_ray([space, "--dry-run", "--address", "auto"])
    assert cluster.returncode == 0, cluster.stderr
    assert "sized when the sweep starts" in cluster.stdout
    assert "RAY_NOT_IMPORTED" in cluster.stdout


@pytest.mark.parametrize("data, needle", [
    ({"dataset": "mnist", "root": "/nonexistent/data"}, "data.download: true"),
    ({"dataset": "cifar10", "root": "/nonexistent/data"}, "cifar-10-batches-py"),
    ({"dataset": "imagefolder", "root": "/nonexistent/imagenette"}, "not a directory"),
    ({"dataset": "mnist"}, "data.root"),
])
@pytest.mark.slow
def test_missing_dataset_exits_2_before_ray(tmp_path, data, needle):
    proc = in_process_without_ray([str(write_space(tmp_path, dict(TINY, data=data)))])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "RAY_NOT_IMPORTED" in proc.stdout
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_embedded_sweeps_on_one_machine_both_finish(tmp_path):
    # Each starts its own Ray. Train's placement-group cleaner must find its own cluster's
    # dashboard, not give up on "multiple active Ray instances" and leave trials hanging.
    procs = []
    for name in ("first", "second"):
        space = write_space(tmp_path, dict(
            TINY, name=name, search={"lr": {"type": "grid", "values": [0.05]}},
            searcher={"type": "grid"}, scheduler={"type": "none"},
            budget={"max_epochs": 1, "num_samples": 1}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "service.submit", str(space), "--results",
             str(tmp_path / "res"), "--no-report"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
        time.sleep(5)  # the second starts while the first is running
    dashboards = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        lines = out.strip().splitlines()
        assert lines[-1].endswith("summary.json")
        # Our first line points to the sweep's own Ray dashboard, on loopback (Ray may log
        # before it, e.g. that a token in ~/.ray turned its token authentication on).
        ours = [line for line in lines if not re.match(r"\d{4}-\d\d-\d\d \d\d:", line)]
        assert ours[0].startswith("Ray dashboard (while the sweep runs): http://127.0.0.1:"), out
        dashboards.add(ours[0])
    assert len(dashboards) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_relative_data_root_is_found_by_the_workers(tmp_path):
    # Ray Train runs each worker in the trial's directory: a data.root relative to where
    # submit runs must reach the workers as an absolute path.
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test files not found in {mnist}")
    spec = {"name": "relroot", "data": {"dataset": "mnist_test", "root": "../shared/data/mnist"},
            "model": {"family": "lenet5"}, "train": {"num_threads": 1},
            "search": {"lr": {"type": "grid", "values": [0.05]}},
            "budget": {"max_epochs": 1, "num_samples": 1}, "searcher": {"type": "grid"},
            "scheduler": {"type": "none"}}
    proc = submit(str(write_space(tmp_path, spec)), "--results", str(tmp_path / "res"),
                  "--no-report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert summary["spec"]["data"]["root"] == str(mnist)  # absolute, symlinks kept
    (trial,) = summary["trials"]
    assert trial["status"] == "completed" and trial["best_val_acc"] > 0.5
