"""Nightly sweeps (service.schedule): timer units, the nights' comparison, two real nights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_main

from service.cli import Exit
from service.nightly.schedule import (
    MARK,
    STUDY_DB,
    Night,
    merge_crontab,
    previous_night,
    read_night,
    regression,
)
from service.results.records import Summary, TrialRecord
from service.results.store import write_json
from service.schedule import main

ROOT = Path(__file__).resolve().parents[1]

NIGHTLY = {
    "name": "nightly-tiny",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    "budget": {"max_epochs": 1, "num_samples": 1},  # one trial a night: the study grows by one
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 2},
    "scheduler": {"type": "none"},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
}


def write_space(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def schedule(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.schedule", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`python -m service.schedule ARGS` in this process (the CLI's own main and exit codes)."""
    return run_main(main, list(args), capsys)


def write_summary(results: Path, date: str, best: float | None, metric: str = "val_acc",
                  mode: str = "max", name: str = "nightly-tiny", run: str = "run1") -> Path:
    """A summary.json laid out as service.submit leaves it: RESULTS/DATE/NAME/RUN/, whose best
    trial reached `best` (at its first epoch, then fell back) and a worse trial beside it;
    `best` None: the only trial diverged."""
    path = results / date / name / run / "summary.json"
    worse = best - 0.1 if mode == "max" else best + 0.1 if best is not None else None

    def trial(trial_id: str, values: list[float], status: str = "completed") -> TrialRecord:
        return TrialRecord.from_history(trial_id, {"lr": 0.01}, status,
                                        [{"epoch": e + 1, metric: v} for e, v in
                                         enumerate(values)])

    trials = ([trial("t0", [0.0], "diverged")] if best is None else
              [trial("t1", [worse, worse]), trial("t2", [best, worse])])
    write_json(path, Summary.ranked(trials, name=name,
                                    spec={"budget": {"metric": metric, "mode": mode}}))
    return path


# ---- the comparison, on hand-written summaries ----

@pytest.mark.parametrize("mode, before, now, tol, regressed", [
    ("max", 0.95, 0.93, 0.01, True),    # accuracy fell by 0.02 > 0.01
    ("max", 0.95, 0.945, 0.01, False),  # within tolerance
    ("max", 0.95, 0.99, 0.0, False),    # improved
    ("min", 0.20, 0.25, 0.01, True),    # loss rose by 0.05
    ("min", 0.20, 0.15, 0.0, False),    # loss fell
])
def test_regression_respects_mode_and_tolerance(tmp_path, mode, before, now, tol, regressed):
    metric = "val_acc" if mode == "max" else "val_loss"
    prev = read_night("2026-01-01", write_summary(tmp_path, "2026-01-01", before, metric, mode))
    cur = read_night("2026-01-02", write_summary(tmp_path, "2026-01-02", now, metric, mode))
    assert (prev.value, cur.value) == (before, now)
    problem = regression(cur, prev, tol)
    assert (problem is not None) == regressed
    if regressed:
        assert problem.startswith(f"regression: best {metric} {now:.4f} on 2026-01-02 vs "
                                  f"{before:.4f} on 2026-01-01")


def test_a_night_without_any_finished_trial_is_a_regression(tmp_path):
    prev = Night("2026-01-01", tmp_path, 0.9, "val_acc", "max")
    assert "no trial finished" in regression(Night("2026-01-02", tmp_path, None, "val_acc",
                                                   "max"), prev, 0.5)
    # ... but a night after one that had nothing is not compared
    assert regression(prev, Night("2026-01-00", tmp_path, None, "val_acc", "max"), 0.0) is None


def test_previous_night_is_the_newest_earlier_date_with_a_summary(tmp_path):
    write_summary(tmp_path, "2026-01-01", 0.5)
    write_summary(tmp_path, "2026-01-03", 0.7)
    write_summary(tmp_path, "2026-01-03", 0.8, run="run2")  # a re-run that night: newest wins
    (tmp_path / "2026-01-04").mkdir()  # a night that failed before writing a summary
    write_summary(tmp_path, "2026-01-05", 0.9, name="another-sweep")
    (tmp_path / "not-a-date").mkdir()
    night = previous_night(tmp_path, "nightly-tiny", "2026-01-06")
    assert (night.date, night.value) == ("2026-01-03", 0.8)
    assert previous_night(tmp_path, "nightly-tiny", "2026-01-03").date == "2026-01-01"
    assert previous_night(tmp_path, "nightly-tiny", "2026-01-01") is None


# ---- print / install ----

def test_print_crontab_line(tmp_path, capsys):
    space = write_space(tmp_path, NIGHTLY)
    proc = cli(capsys, "print", "--space", str(space), "--address", "10.0.0.5:6379", "--at",
               "03:15", "--results", str(tmp_path / "res"), "--tolerance", "0.02")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("15 3 * * * cd ")
    assert "%" not in line  # cron turns % into a newline
    assert (f"-m service.schedule run --space {space} --results {tmp_path / 'res'} "
            f"--tolerance 0.02 --address 10.0.0.5:6379") in line
    assert "RAY_AUTH_MODE=token" in line and line.endswith(f"{MARK}nightly-tiny")


def test_install_systemd_units_into_a_directory(tmp_path, capsys):
    space = write_space(tmp_path, NIGHTLY)
    units = tmp_path / "units"
    proc = cli(capsys, "install", "--space", str(space), "--address", "auto", "--systemd",
                    "--unit-dir", str(units), "--results", str(tmp_path / "res"))
    assert proc.returncode == 0, proc.stderr
    service = (units / "cnn-ablate-nightly-nightly-tiny.service").read_text()
    timer = (units / "cnn-ablate-nightly-nightly-tiny.timer").read_text()
    assert "Type=oneshot" in service and f"WorkingDirectory={ROOT}" in service
    assert f"ExecStart={sys.executable} -m service.schedule run --space {space}" in service
    assert "OnCalendar=*-*-* 02:00:00" in timer and "Persistent=true" in timer
    assert "Unit=cnn-ablate-nightly-nightly-tiny.service" in timer
    assert "systemctl --user enable --now cnn-ablate-nightly-nightly-tiny.timer" in proc.stdout


def test_merge_crontab_replaces_only_our_line():
    mine_old = f"0 2 * * * old command {MARK}nightly-tiny"
    other = f"0 4 * * * other {MARK}another-sweep"
    existing = f"MAILTO=me\n{mine_old}\n{other}\n"
    merged = merge_crontab(existing, f"5 1 * * * new {MARK}nightly-tiny", "nightly-tiny")
    assert merged == f"MAILTO=me\n{other}\n5 1 * * * new {MARK}nightly-tiny\n"
    assert merge_crontab("", "x", "n") == "x\n"


@pytest.mark.parametrize("change, args, needle", [
    ({}, ["--at", "7pm"], "--at '7pm'"),
    ({}, ["--tolerance", "-0.1"], "--tolerance '-0.1'"),
    ({}, ["--results", "s3://bucket/nightly"], "must be a local or mounted directory"),
    ({"searcher": {"type": "random", "seed": 0}}, [], "searcher.type"),
    ({"budget": {"max_epochs": 0}}, [], "budget.max_epochs"),
])
def test_bad_input_exits_2_in_one_line(tmp_path, capsys, change, args, needle):
    space = write_space(tmp_path, {**NIGHTLY, **change})
    proc = cli(capsys, "print", "--space", str(space), "--address", "auto", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_run_date_is_validated(tmp_path, capsys):
    proc = cli(capsys, "run", "--space", str(write_space(tmp_path, NIGHTLY)), "--results",
                    str(tmp_path), "--date", "2026-13-01")
    assert proc.returncode == 2 and "--date '2026-13-01'" in proc.stderr


# ---- two real nights on embedded Ray ----

@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_two_nights_continue_one_study_and_catch_a_regression(tmp_path):
    """Night 1 is compared with an (impossible) hand-written 1.5 and must fail with exit 5;
    night 2 is compared with night 1 and passes; the SQLite study under RESULTS holds both
    nights' trials, so night 2 was warm-started from night 1."""
    space = write_space(tmp_path, NIGHTLY)
    res = tmp_path / "nightly"
    write_summary(res, "2026-01-01", 1.5)
    first = schedule("run", "--space", str(space), "--results", str(res), "--date", "2026-01-02",
                     "--no-report")
    assert first.returncode == Exit.REGRESSION, first.stdout[-2000:] + first.stderr[-3000:]
    assert "regression: best val_acc" in first.stderr and "1.5000 on 2026-01-01" in first.stderr
    study_url = f"sqlite:///{res / STUDY_DB}"
    after_one = len(optuna.load_study(study_name="nightly-tiny", storage=study_url).trials)
    assert after_one == NIGHTLY["budget"]["num_samples"]

    second = schedule("run", "--space", str(space), "--results", str(res), "--date",
                      "2026-01-03", "--tolerance", "1", "--no-report")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "(previous 2026-01-02:" in second.stdout
    study = optuna.load_study(study_name="nightly-tiny", storage=study_url)
    assert len(study.trials) == 2 * after_one
    summaries = sorted(res.glob("2026-01-0[23]/nightly-tiny/*/summary.json"))
    assert len(summaries) == 2
    # The user's space file is untouched; each night ran a copy pointing at the study.
    assert "storage" not in yaml.safe_load(space.read_text())["searcher"]
    copy = yaml.safe_load((res / "2026-01-03" / "nightly-tiny.nightly.yaml").read_text())
    assert copy["searcher"]["storage"] == study_url
