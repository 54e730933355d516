"""What README's table of `python -m service.submit` flags promises, each shown end to end: the
command in a subprocess, a real Ray sweep (embedded, or a one-node `ray start` cluster joined
through RAY_ADDRESS), and what the sweep left on disk (summary.json, Tune's result.json, the
TrainConfig inside Ray Train's registered checkpoints).

LeNet-5 on digits, batch 64, one thread, one or two epochs: the promises, not the models."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import joined_env
from raynodes import loopback_cluster, ray_list
from test_submit import interrupted, submit

from service.analysis.load import trial_checkpoints
from service.nightly.schedule import summary_path
from service.rundir import SEED_KEY, ledger_path, read_ledger, trial_dir
from service.training.loop import load_checkpoint
from service.tune.runtime import find_run

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def space(tmp_path: Path, name: str, **blocks: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **BASE, **blocks}))
    return path


def ok(proc: subprocess.CompletedProcess) -> dict:
    """The summary.json of a run that exited 0 (its path: submit's last line)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name == "summary.json", proc.stdout
    return json.loads(path.read_text())


def epochs_trained(run_dir: Path, trial_id: str) -> list[int]:
    """The epochs Tune recorded for a trial (its result.json, one line per reported epoch)."""
    rows = (trial_dir(run_dir, trial_id) / "result.json").read_text().splitlines()
    return [json.loads(row)["epoch"] for row in rows]


def worker_configs(run_dir: Path, trial_id: str) -> dict[int, dict]:
    """epoch -> the TrainConfig the trial's Ray Train worker trained with (as `fit` stored it
    in each checkpoint that Ray Train registered)."""
    return {epoch: load_checkpoint(ckpt)["config"]
            for epoch, ckpt in trial_checkpoints(run_dir, trial_id)}


# ---- --max-epochs, budget.seeds > 1, -q: two runs of one seeded space ----------------------

SEEDED = {  # optuna-tpe (the default searcher): each configuration it draws, trained per seed
    "train": {**BASE["train"], "seed": 7},
    "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
    "budget": {"max_epochs": 5, "num_samples": 3, "seeds": 2},  # both runs override both
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 4},
    "scheduler": {"type": "none"},  # nothing stops a trial: every one trains the budget
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, shared_ray) -> dict[str, subprocess.CompletedProcess]:
    """The same space run twice with --max-epochs 2 (the file says 5): `loud` with
    --num-samples 2 (2 configurations x 2 seeds), `quiet` with -q and --num-samples 1."""
    tmp = tmp_path_factory.mktemp("seeded")
    path = space(tmp, "seeded", **SEEDED)
    common = [str(path), "--results", str(tmp / "res"), "--no-report", "--max-epochs", "2"]
    env = joined_env(shared_ray)
    return {"loud": submit(*common, "--num-samples", "2", timeout=600, env=env),
            "quiet": submit(*common, "--num-samples", "1", "-q", timeout=600, env=env)}


@pytest.mark.slow
def test_max_epochs_overrides_the_budget_that_the_trials_train(seeded):
    assert "sweep seeded: 4 trials of up to 2 epochs" in seeded["loud"].stdout
    for run in ("loud", "quiet"):
        summary = ok(seeded[run])
        run_dir = Path(summary_path(seeded[run].stdout)).parent
        assert summary["spec"]["budget"]["max_epochs"] == 2  # the file says 5
        for t in summary["trials"]:
            assert (t["status"], t["epochs"]) == ("completed", 2), t
            # Tune saw epochs 1 and 2 and no more; the workers' own TrainConfig said 2.
            assert epochs_trained(run_dir, t["trial_id"]) == [1, 2]
            configs = worker_configs(run_dir, t["trial_id"])
            assert sorted(configs) == [1, 2]
            assert {c["epochs"] for c in configs.values()} == {2}


@pytest.mark.slow
def test_each_configuration_trains_once_per_seed_at_the_base_seed_plus_its_index(seeded):
    for run, configurations in (("loud", 2), ("quiet", 1)):
        summary = ok(seeded[run])
        run_dir = Path(summary_path(seeded[run].stdout)).parent
        trials = summary["trials"]
        assert len(trials) == configurations * 2, trials  # configurations x budget.seeds
        groups: dict[float, list[dict]] = {}
        for t in trials:
            groups.setdefault(t["config"]["lr"], []).append(t)
        assert len(groups) == configurations
        for lr, group in groups.items():
            assert sorted(t["config"][SEED_KEY] for t in group) == [0, 1], group
            for t in group:
                (seed,) = {c["seed"] for c in worker_configs(run_dir, t["trial_id"]).values()}
                assert seed == 7 + t["config"][SEED_KEY]  # train.seed + the repeat's index
                assert {c["lr"] for c in worker_configs(run_dir, t["trial_id"]).values()} == {
                    lr}
            # the seed is real: the two repeats of one configuration train differently
            first, second = (t["final"] for t in group)
            assert first["train_loss"] != second["train_loss"], group


@pytest.mark.slow
def test_quiet_prints_only_the_final_table_and_the_summary_path(seeded):
    quiet, loud = seeded["quiet"], seeded["loud"]
    summary = ok(quiet)
    ids = [t["trial_id"] for t in summary["trials"]]  # best first, as the table
    lines = quiet.stdout.splitlines()
    # the table (header, one row per trial), its best and wall-time lines, the summary path
    assert len(lines) == len(ids) + 4, quiet.stdout
    assert lines[0].split() == ["trial", "lr", "status", "epochs", "best", "val_acc"]
    assert [row.split()[0] for row in lines[1:1 + len(ids)]] == ids
    assert all(row.split()[2:4] == ["completed", "2"] for row in lines[1:1 + len(ids)])
    assert lines[-3].startswith(f"best: {ids[0]}  val_acc ")
    assert re.fullmatch(r"wall time \d+s", lines[-2])
    assert lines[-1] == str(summary_path(quiet.stdout)) and lines[-1].endswith("summary.json")
    # Without -q (the same space and flags but --num-samples 2) submit also prints Ray's
    # dashboard (here the shared Ray's; an embedded Ray's: test_submit.py), the plan, every
    # trial's start and end with the running count, and where Optuna's dashboard opens the
    # study.
    summary = ok(loud)
    out = loud.stdout
    for line in ("Ray dashboard (the cluster's): http://127.0.0.1:",
                 "sweep seeded: 4 trials of up to 2 epochs", "  results: ",
                 "[4/4 done · 0 running", "Optuna dashboard: optuna-dashboard "):
        assert line in out, out
    for t in summary["trials"]:
        assert f"trial {t['trial_id']} started" in out
        assert f"trial {t['trial_id']} completed 2 epochs" in out
    assert lines[0] in out.splitlines()  # the same table header
    assert len(out.splitlines()) > 2 * len(lines)


# ---- the hyperband and median schedulers, built from the space ---------------------------

class SweepHung(AssertionError):
    """The sweep was still running at its deadline (and was killed with its own Ray)."""


def submit_by(deadline: float, *args: str) -> subprocess.CompletedProcess:
    """`submit`, in its own process group, killed with its embedded Ray at `deadline` s; a
    sweep that hangs raises SweepHung naming what Tune last saved of each trial's status."""
    proc = subprocess.Popen([sys.executable, "-m", "service.submit", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        where = re.findall(r"^  results: (.*)$", out, re.M)
        statuses = trial_statuses(Path(where[0])) if where else {}
        why = f"still running after {deadline:.0f} s; trials: {statuses}\n{out[-2000:]}"
        left = set(statuses.values()) - {"TERMINATED", "ERROR"}
        if left == {"PAUSED"}:  # nothing runs or waits to run: only Tune could go on
            raise SweepHung(why) from None
        raise AssertionError(why) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def trial_statuses(run_dir: Path) -> dict[str, str]:
    """trial id -> status, as Tune last saved its experiment state."""
    states = sorted(run_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    trials = [t[0] if isinstance(t[0], dict) else json.loads(t[0])
              for t in json.loads(states[-1].read_text())["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def stops_the_hopeless_trial(proc: subprocess.CompletedProcess, lrs: list[float]) -> None:
    """lr 1e-5 stopped at epoch 1 (summary.json, Tune's result.json, the console), every
    other trial trained both epochs; 0.05 (paused at epoch 1, then resumed) far ahead."""
    summary = ok(proc)
    by_lr = {t["config"]["lr"]: t for t in summary["trials"]}
    assert sorted(by_lr) == sorted(lrs)
    hopeless = by_lr.pop(1.0e-5)
    assert (hopeless["status"], hopeless["stopped_at"], hopeless["epochs"]) == (
        "stopped-early", 1, 1), summary["trials"]
    for t in by_lr.values():  # every other trial ran the whole budget
        assert (t["status"], t["epochs"]) == ("completed", 2), summary["trials"]
        assert "stopped_at" not in t
    good = by_lr[0.05]
    assert good["best_val_acc"] > hopeless["best_val_acc"] + 0.2
    run_dir = Path(summary_path(proc.stdout)).parent
    assert epochs_trained(run_dir, hopeless["trial_id"]) == [1]  # really stopped there
    assert sorted(worker_configs(run_dir, good["trial_id"])) == [1, 2]
    assert f"trial {hopeless['trial_id']} stopped early at epoch 1" in proc.stdout


def scheduled(tmp_path: Path, scheduler: dict, lrs: list[float], at_once: int) -> list[str]:
    """submit's arguments for a grid over `lrs`, 2 epochs, `at_once` trials at a time."""
    path = space(tmp_path, f"sched-{scheduler['type']}", scheduler=scheduler,
                 search={"lr": {"type": "grid", "values": lrs}},
                 searcher={"type": "grid"}, budget={"max_epochs": 2, "num_samples": 1},
                 resources={"workers_per_trial": 1, "cpus_per_worker": 2 / at_once,
                            "max_concurrent_trials": at_once})
    return [str(path), "--results", str(tmp_path / "res"), "--no-report"]


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_median_stopping_rule_stops_a_hopeless_trial_early(tmp_path):
    # The median rule from epoch 1 on, against one other trial's running mean; one trial at a
    # time in the grid's order. After one epoch lr 0.05 is far ahead of lr 1e-5, which sits at
    # chance: 0.05 is paused at epoch 1 for want of a comparison while 1e-5 waits; 1e-5 is
    # stopped at epoch 1, below it; 0.05 resumes from its checkpoint to the end.
    lrs = [0.05, 1.0e-5]
    proc = submit(*scheduled(tmp_path, {"type": "median", "grace_period": 1,
                                        "min_samples_required": 1}, lrs, 1), timeout=600)
    assert "scheduler median (grace_period=1, min_samples_required=1);" in proc.stdout
    stops_the_hopeless_trial(proc, lrs)


@pytest.mark.slow
@pytest.mark.xfail(raises=SweepHung, strict=False, reason=(
    "Ray 2.60's HyperBandScheduler can leave trials PAUSED for ever, the sweep idle (seen once "
    "in three runs on a loaded machine: lr 0.03 paused at its last epoch and 1e-5 at epoch 1; "
    "likely a pause still being saved when the bracket was decided, so neither stopped nor "
    "resumed)"))
@pytest.mark.usefixtures("on_shared_ray")
def test_hyperband_stops_a_hopeless_trial_early(tmp_path):
    # Tune's Hyperband puts trials into brackets as they are made. Its first bracket (s=0)
    # runs its trials to max_t: with max_t 2 and eta 2, two of them; the next two share a
    # bracket whose rung is epoch 1, where it keeps the better half: 0.05 over 1e-5. All four
    # run at once (half a CPU each), so that both of that bracket's trials exist when the
    # first gets there (and is paused until the other does).
    lrs = [0.02, 0.03, 0.05, 1.0e-5]
    proc = submit_by(300, *scheduled(tmp_path, {"type": "hyperband", "reduction_factor": 2},
                                     lrs, 4))
    assert "scheduler hyperband (reduction_factor=2.0);" in proc.stdout
    assert "4 at a time" in proc.stdout
    stops_the_hopeless_trial(proc, lrs)


# ---- --resume RUN_ID: the named run, not the newest unfinished one -------------------------

def interrupted_run(path: Path, results: Path, after: str) -> str:
    """Start a sweep, Ctrl-C it at its first line containing `after`; its run id (exit 130)."""
    _, out = interrupted(path, results, lambda s: after in s, 300)
    where = next(line for line in out.splitlines() if line.startswith("  results: "))
    run_dir = Path(where.split(": ", 1)[1].strip())
    assert run_dir.is_dir() and not (run_dir / "summary.json").exists(), out
    return run_dir.name


def listing(run_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime for p in run_dir.rglob("*")}


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_resume_with_a_run_id_finishes_that_run_not_the_newest(tmp_path):
    path = space(tmp_path, "named", search={"lr": {"type": "grid", "values": [0.05, 0.02]}},
                 searcher={"type": "grid"}, scheduler={"type": "none"},
                 budget={"max_epochs": 1, "num_samples": 1},
                 resources={**BASE["resources"], "max_concurrent_trials": 1})
    results = tmp_path / "res"
    older = interrupted_run(path, results, " completed 1 epochs")  # one trial of two done
    newer = interrupted_run(path, results, " started")
    assert older < newer
    assert find_run(str(results), "named", "latest") == newer  # what a bare --resume takes
    # the trials that ended before the Ctrl-C, as the sweep's own ledger records them
    finished_before = read_ledger(ledger_path(str(results / "named" / older)))
    assert len(finished_before) == 1
    untouched = listing(results / "named" / newer)

    proc = submit(str(path), "--results", str(results), "--resume", older, "--no-report",
                  timeout=600)
    summary = ok(proc)
    assert summary_path(proc.stdout) == results / "named" / older / "summary.json"
    ids = [t["trial_id"] for t in summary["trials"]]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert {t["config"]["lr"] for t in summary["trials"]} == {0.05, 0.02}
    assert all((t["status"], t["epochs"]) == ("completed", 1) for t in summary["trials"])
    assert set(finished_before) < set(ids)
    for trial_id in finished_before:  # finished before the Ctrl-C: not trained again
        assert f"trial {trial_id} started" not in proc.stdout
    (rest,) = set(ids) - set(finished_before)
    assert f"trial {rest} started" in proc.stdout
    # the newer run is as its Ctrl-C left it, and still the one a bare --resume would take
    assert listing(results / "named" / newer) == untouched
    assert not (results / "named" / newer / "summary.json").exists()
    assert find_run(str(results), "named", "latest") == newer


# ---- RAY_ADDRESS: join a running cluster instead of starting Ray here ----------------------

@pytest.mark.slow
def test_ray_address_in_the_environment_joins_that_cluster(tmp_path):
    path = space(tmp_path, "joined", search={"lr": {"type": "grid", "values": [0.05]}},
                 searcher={"type": "grid"}, scheduler={"type": "none"},
                 budget={"max_epochs": 1, "num_samples": 1})
    with loopback_cluster(tmp_path, cpus=1, gpus=0, nodes=1) as cluster:
        dashboard, env = cluster.dashboard, cluster.env
        head = cluster.node_ids["head"]
        assert ray_list("actors", dashboard, env, "--filter", "class_name=ImplicitFunc") == []
        proc = subprocess.run([sys.executable, "-m", "service.submit", str(path), "--results",
                               str(tmp_path / "res"), "--no-report"], cwd=ROOT,
                              env=joined_env(cluster), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # sized against the cluster's one CPU (this machine has more), not a Ray of its own
        assert f"Ray dashboard (the cluster's): {dashboard}" in proc.stdout
        assert "(cluster: 1 CPU, 0 GPU)" in proc.stdout
        summary = json.loads(summary_path(proc.stdout).read_text())
        (trial,) = summary["trials"]
        assert trial["status"] == "completed" and trial["best_val_acc"] > 0.1
        # the trial's actor ran on that cluster's node (its State API says so) ...
        workers = ray_list("actors", dashboard, env, "--filter", "class_name=ImplicitFunc")
        assert [w["node_id"] for w in workers] == [head], workers
        # ... and submit left the cluster it joined running
        nodes = ray_list("nodes", dashboard, env)
        assert [(n["node_id"], n["state"]) for n in nodes] == [(head, "ALIVE")]
