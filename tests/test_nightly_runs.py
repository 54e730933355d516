"""The nightly runner (service.nightly.schedule) on real nights: the first night (nothing to
compare), a night whose sweep fails after it (every trial diverges), and `install --crontab`
into this machine's real crontab (saved and restored), whose installed line is then run the
way cron runs it (a night whose sweep cannot start)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from test_notify import _no_proxy, hook, notify_block  # noqa: F401 - fixtures used below
from test_schedule import NIGHTLY, cli, schedule, write_space

from service.cli import Exit
from service.nightly.schedule import MARK, STUDY_DB
from service.notify import ENDINGS

# The same sweep (same name, same study) with a learning rate that diverges at epoch 1.
DIVERGING = dict(NIGHTLY, search={"lr": {"type": "float", "low": 1e9, "high": 1e10,
                                         "log": True}})


def night_summary(res: Path, date: str) -> Path:
    (path,) = res.glob(f"{date}/nightly-tiny/*/summary.json")
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_first_night_then_a_night_whose_sweep_fails(tmp_path, hook):  # noqa: F811
    res = tmp_path / "nightly"
    study_url = f"sqlite:///{res / STUDY_DB}"
    # Night 1: no earlier night, so no comparison, no verdict, exit 0.
    space = write_space(tmp_path, dict(NIGHTLY, notify=notify_block(hook.url())))
    first = schedule("run", "--space", str(space), "--results", str(res), "--date", "2026-01-02",
                     "--no-report")
    assert first.returncode == Exit.OK, first.stdout[-2000:] + first.stderr[-3000:]
    summary_1 = night_summary(res, "2026-01-02")
    s1 = json.loads(summary_1.read_text())
    value = s1["best"]["best_val_acc"]
    assert f"night 2026-01-02: best val_acc {value:.4f}; first night, nothing to compare" in (
        first.stdout)
    assert "regression" not in first.stdout + first.stderr
    # What it writes: the night's directory (the space's copy, the sweep's run) and the study.
    assert sorted(p.name for p in res.iterdir()) == ["2026-01-02", STUDY_DB]
    assert sorted(p.name for p in (res / "2026-01-02").iterdir()) == [
        "nightly-tiny", "nightly-tiny.nightly.yaml"]
    assert [t["status"] for t in s1["trials"]] == ["completed"]
    assert not (summary_1.parent / "report.html").exists()  # --no-report was passed on
    assert len(optuna.load_study(study_name="nightly-tiny", storage=study_url).trials) == 1
    # One message for the night, with no previous night in it.
    (body,) = hook.bodies()
    assert (body["event"], body["exit_code"], body["kind"], body["date"]) == (
        "finished", 0, "nightly", "2026-01-02")
    assert "previous_date" not in body and body["best_value"] == value
    assert Path(body["summary"]).resolve() == summary_1.resolve()

    # Night 2: its only trial diverges, so service.submit exits 3 with a summary; no trial
    # finished while night 1 had one, which the comparison calls a regression: exit 5.
    space = write_space(tmp_path, dict(DIVERGING, notify=notify_block(hook.url())))
    second = schedule("run", "--space", str(space), "--results", str(res), "--date",
                      "2026-01-03", "--no-report")
    assert second.returncode == Exit.REGRESSION, second.stdout[-2000:] + second.stderr[-3000:]
    line = f"regression: no trial finished on 2026-01-03; 2026-01-02 reached val_acc {value:.4f}"
    assert line in second.stderr.splitlines()
    summary_2 = night_summary(res, "2026-01-03")
    s2 = json.loads(summary_2.read_text())
    assert [t["status"] for t in s2["trials"]] == ["diverged"] and s2["best"] is None
    assert night_summary(res, "2026-01-02") == summary_1  # night 1 left as it was
    study = optuna.load_study(study_name="nightly-tiny", storage=study_url)
    assert len(study.trials) == 2  # the failed night's trial is in the study too
    body = hook.bodies()[1]
    assert len(hook.bodies()) == 2
    assert (body["event"], body["exit_code"], body["date"]) == ("regression", 5, "2026-01-03")
    assert (body["previous_date"], body["previous_value"]) == ("2026-01-02", value)
    assert body["best_trial"] is None and body["best_value"] is None
    assert Path(body["summary"]).resolve() == summary_2.resolve() and body["detail"] == line


def test_install_crontab_without_the_crontab_command_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no crontab binary anywhere on PATH
    proc = cli(capsys, "install", "--space", str(write_space(tmp_path, NIGHTLY)), "--address",
               "auto", "--crontab", "--results", str(tmp_path / "res"))
    assert proc.returncode == Exit.BAD_INPUT and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: crontab: ") and "use --systemd" in line


@pytest.fixture
def user_crontab():
    """This user's real crontab, restored afterwards (or removed if there was none)."""
    if shutil.which("crontab") is None:
        pytest.skip("no crontab command (apt-get install cron)")
    saved = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
    yield
    if saved.returncode == 0:
        subprocess.run(["crontab", "-"], input=saved.stdout, text=True, check=True, timeout=30)
    else:
        subprocess.run(["crontab", "-r"], capture_output=True, timeout=30)


def crontab() -> str:
    proc = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_install_crontab_writes_one_line_cron_can_run(tmp_path, capsys, user_crontab,
                                                      hook):  # noqa: F811
    """Into the real crontab (crontab(1) checks the line's syntax), beside other lines; a second
    install replaces our line. Then the installed command is run as cron would (sh, a bare
    environment): tonight's sweep cannot start (where its run would go is a file, refused
    before Ray is reached), so the night exits 2, tells the webhook, and appends its output to
    RESULTS/nightly.log. The address is one where nothing listens (never another cluster)."""
    other = "MAILTO=\"\"\n0 4 * * * true # someone else's job\n"
    subprocess.run(["crontab", "-"], input=other, text=True, check=True, timeout=30)
    space = write_space(tmp_path, dict(NIGHTLY, notify=notify_block(hook.url())))
    res = tmp_path / "nightly"
    args = ["--space", str(space), "--address", "127.0.0.1:1", "--results", str(res)]
    for at in ("03:15", "01:05"):
        proc = cli(capsys, "install", *args, "--crontab", "--at", at)
        assert proc.returncode == Exit.OK, proc.stderr
        assert proc.stdout == f"crontab: nightly sweep nightly-tiny at {at}\n"
    printed = cli(capsys, "print", *args, "--at", "01:05").stdout.strip()
    assert crontab() == other + printed + "\n"  # ours once, at the last time; theirs kept
    assert printed.startswith("5 1 * * * cd ") and printed.endswith(f"{MARK}nightly-tiny")

    command = printed.split(" ", 5)[5]  # what cron hands to /bin/sh
    night = res / time.strftime("%Y-%m-%d")  # the run's default date: today
    night.mkdir(parents=True)
    (night / "nightly-tiny").write_text("in the way")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "SHELL": "/bin/sh"}
    sh = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = sh.communicate(timeout=300)
    finally:  # never leave the night running
        if sh.poll() is None:
            os.killpg(sh.pid, signal.SIGKILL)
            sh.wait()
    assert sh.returncode == Exit.BAD_INPUT and out == ""  # everything went to the log
    log = (res / "nightly.log").read_text()
    assert f"results: cannot write to {night / 'nightly-tiny'}" in log
    assert "service.submit exited 2; nothing to compare" in log
    assert sorted(p.name for p in night.iterdir()) == ["nightly-tiny", "nightly-tiny.nightly.yaml"]
    (body,) = hook.bodies()
    assert (body["event"], body["exit_code"], body["date"]) == ("failed", 2, night.name)
    assert body["detail"] == "service.submit exited 2; nothing to compare"
    assert body["summary"] is None and ENDINGS[2] in body["text"]
