"""The `notify:` webhook (service/notify.py) against a real HTTP server on 127.0.0.1: the message
a sweep and a night POST, `on:` filtering, and a webhook that is down, failing or silent."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_schedule import NIGHTLY, write_summary
from test_schedule import cli as schedule_cli
from test_schedule import schedule as schedule_run
from test_submit import TINY, in_process_without_ray, submit, write_space

from service.cli import Exit
from service.config.outputs import Notify
from service.notify import Message, send

SECRET = "T0001/B0002/XXsecretXXtoken"  # a Slack webhook's path is its secret
LINE_RE = re.compile(r"^notify: http://127\.0\.0\.1:\d+/\*\*\* unreachable: (.+); the sweep's "
                     r"results are kept$")

# Two LeNet-5 trials of one epoch, both at once, no early stopping: the smallest real sweep.
SWEEP = dict(TINY, name="notified", search={"lr": {"type": "grid", "values": [0.05, 0.02]}},
             searcher={"type": "grid"}, scheduler={"type": "none"},
             budget={"max_epochs": 1, "num_samples": 1},
             resources={"workers_per_trial": 1, "cpus_per_worker": 1})


class Hook(ThreadingHTTPServer):
    """A webhook receiver: records every POST's path and JSON body, answers `status`; while
    `hold` is clear it does not answer at all (a webhook that hangs)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.status = 200
        self.hold = threading.Event()
        self.hold.set()

    def url(self, path: str = f"/services/{SECRET}") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up (the timeout test) is not the server's problem


class _Handler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"path": self.path, "type": self.headers["Content-Type"],
                                     "body": json.loads(body)})
        self.server.hold.wait(30)
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # 127.0.0.1 must be reached directly, also by the subprocesses (they inherit os.environ).
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hook():
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def notify_block(url: str, on: list[str] | None = None) -> dict:
    return {"webhook": url, **({"on": on} if on else {})}


def one_notify_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("notify:")]
    assert len(lines) == 1, stderr
    match = LINE_RE.match(lines[0])
    assert match, lines[0]
    return match[1]


# ---- service.notify against the real server ----

def test_the_message_is_one_slack_compatible_json_post(hook):
    msg = Message(event="finished", sweep="s", exit_code=0, run_id="2026-01-02_03-04-05",
                  metric="val_acc", best_trial="abc123", best_value=0.97531,
                  report="/r/report.html", summary="/r/summary.json")
    assert send(Notify(webhook=hook.url()), msg) is True
    (req,) = hook.requests
    assert req["path"] == f"/services/{SECRET}" and req["type"] == "application/json"
    body = req["body"]
    assert body["text"].startswith("cnn-ablate sweep s finished (exit 0), run 2026-01-02_03-04-05")
    assert "best: trial abc123 val_acc 0.9753" in body["text"]
    assert {k: body[k] for k in ("event", "sweep", "run_id", "exit_code", "metric", "best_trial",
                                 "best_value", "report", "summary")} == {
        "event": "finished", "sweep": "s", "run_id": "2026-01-02_03-04-05", "exit_code": 0,
        "metric": "val_acc", "best_trial": "abc123", "best_value": 0.97531,
        "report": "/r/report.html", "summary": "/r/summary.json"}


def test_only_the_events_listed_in_on_are_sent(hook):
    only_failed = Notify(webhook=hook.url(), on=["failed"])
    assert send(only_failed, Message(event="finished", sweep="s", exit_code=0)) is False
    assert send(only_failed, Message(event="regression", sweep="s", exit_code=5)) is False
    assert hook.requests == []  # send is synchronous: a POST would be recorded by now
    assert send(only_failed, Message(event="failed", sweep="s", exit_code=3)) is True
    assert [b["event"] for b in hook.bodies()] == ["failed"]
    assert send(None, Message(event="failed", sweep="s", exit_code=3)) is False  # no block
    assert len(hook.requests) == 1


@pytest.mark.parametrize("failure", ["closed port", "http 500", "no answer"])
def test_a_webhook_that_fails_is_one_line_on_stderr(hook, closed_port, capsys, failure):
    url = hook.url()
    if failure == "closed port":
        url = f"http://127.0.0.1:{closed_port}/services/{SECRET}"
    elif failure == "http 500":
        hook.status = 500
    else:
        hook.hold.clear()
    start = time.monotonic()
    sent = send(Notify(webhook=url), Message(event="failed", sweep="s", exit_code=3),
                timeout=0.5)
    took = time.monotonic() - start
    out, err = capsys.readouterr()
    assert sent is False and out == ""
    assert len(err.splitlines()) == 1 and SECRET not in err
    reason = one_notify_line(err)
    expected = {"closed port": "refused", "http 500": "HTTP 500",
                "no answer": "no answer within 0.5 s"}[failure]
    assert expected in reason
    assert took < 5  # the timeout bounds the wait
    assert len(hook.requests) == (0 if failure == "closed port" else 1)


# ---- service.submit: runs that end before Ray starts (fast) ----

@pytest.mark.slow
def test_submit_notifies_a_run_that_could_not_start_and_not_a_dry_run(tmp_path, hook,
                                                                       closed_port):
    missing = dict(SWEEP, data={"dataset": "mnist", "root": "/nonexistent/data"},
                   notify=notify_block(hook.url()))
    proc = in_process_without_ray([str(write_space(tmp_path, missing)), "--results",
                                   str(tmp_path / "res")])
    assert proc.returncode == Exit.BAD_INPUT, proc.stderr
    assert "RAY_NOT_IMPORTED" in proc.stdout and "data.download: true" in proc.stderr
    (body,) = hook.bodies()
    assert (body["event"], body["sweep"], body["exit_code"]) == ("failed", "notified", 2)
    assert body["summary"] is None and body["best_trial"] is None
    assert "did not start" in body["text"]

    # The same with a webhook that is down: the exit code and the problem line stand.
    down = dict(missing, notify=notify_block(f"http://127.0.0.1:{closed_port}/x/{SECRET}"))
    proc = in_process_without_ray([str(write_space(tmp_path, down))])
    assert proc.returncode == Exit.BAD_INPUT
    assert "refused" in one_notify_line(proc.stderr) and SECRET not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2  # the problem, the notify line

    # A dry run is not a run: nothing is sent.
    dry = dict(SWEEP, notify=notify_block(hook.url()))
    proc = in_process_without_ray([str(write_space(tmp_path, dry)), "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert len(hook.requests) == 1


# ---- service.schedule: a night that fails before its sweep (fast) ----

def test_a_night_that_cannot_compare_notifies_failed_unless_filtered(tmp_path, hook, capsys):
    res = tmp_path / "nightly"
    bad = write_summary(res, "2026-01-01", 0.9)
    bad.write_text("{not json")  # the previous night's summary is unreadable: exit 2
    for on, expected in ((["regression"], []), (None, ["failed"])):
        space = write_space(tmp_path, dict(NIGHTLY, notify=notify_block(hook.url(), on)))
        proc = schedule_cli(capsys, "run", "--space", str(space), "--results", str(res),
                            "--date", "2026-01-02")
        assert proc.returncode == Exit.BAD_INPUT and "unreadable summary" in proc.stderr
        assert [b["event"] for b in hook.bodies()] == expected
    body = hook.bodies()[0]
    assert (body["kind"], body["date"], body["exit_code"]) == ("nightly", "2026-01-02", 2)
    assert "unreadable summary" in body["detail"] and "unreadable summary" in body["text"]


# ---- real sweeps and a real night on embedded Ray ----

@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_sweep_posts_one_finished_message_matching_its_summary(tmp_path, hook):
    space = write_space(tmp_path, dict(SWEEP, notify=notify_block(hook.url())))
    proc = submit(str(space), "--results", str(tmp_path / "res"), "-q", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary_path = Path(proc.stdout.strip().splitlines()[-1])  # still the last line
    summary = json.loads(summary_path.read_text())
    assert "notify:" not in proc.stderr  # delivered: nothing to log
    (req,) = hook.requests
    body = req["body"]
    best = summary["best"]
    assert body["event"] == "finished" and body["exit_code"] == 0 and body["kind"] == "sweep"
    assert (body["sweep"], body["run_id"]) == ("notified", summary_path.parent.name)
    assert (body["best_trial"], body["metric"]) == (best["trial_id"], "val_acc")
    assert body["best_value"] == best["best_val_acc"]
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    assert Path(body["summary"]).resolve() == summary_path.resolve()
    assert Path(body["report"]).is_file() and Path(body["report"]).parent == summary_path.parent
    assert f"best: trial {best['trial_id']} val_acc {best['best_val_acc']:.4f}" in body["text"]
    # summary.json records the webhook without its secret path
    assert summary["spec"]["notify"]["webhook"] == hook.url("/***")
    assert SECRET not in summary_path.read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_night_that_regressed_posts_one_regression_message(tmp_path, hook):
    """The previous night is hand-written with an impossible 1.5: tonight's real sweep
    regresses. The webhook records the message but answers HTTP 500: one line on stderr, and
    the night's exit code and summary.json stand."""
    res = tmp_path / "nightly"
    write_summary(res, "2026-01-01", 1.5)
    space = write_space(tmp_path, dict(NIGHTLY, notify=notify_block(hook.url())))
    hook.status = 500
    proc = schedule_run("run", "--space", str(space), "--results", str(res), "--date",
                        "2026-01-02", "--no-report")
    assert proc.returncode == Exit.REGRESSION, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "HTTP 500" in one_notify_line(proc.stderr)
    assert SECRET not in proc.stdout + proc.stderr
    # One message for the night: service.submit's own `finished` was left to the night.
    (body,) = hook.bodies()
    (tonight,) = res.glob("2026-01-02/nightly-tiny/*/summary.json")
    summary = json.loads(tonight.read_text())
    assert (body["event"], body["exit_code"], body["kind"]) == ("regression", 5, "nightly")
    assert (body["date"], body["previous_date"], body["previous_value"]) == (
        "2026-01-02", "2026-01-01", 1.5)
    assert body["best_trial"] == summary["best"]["trial_id"]
    assert body["best_value"] == summary["best"]["best_val_acc"]
    assert Path(body["summary"]).resolve() == tonight.resolve()
    assert body["run_id"] == tonight.parent.name
    assert "previous night 2026-01-01: val_acc 1.5000" in body["text"]
    assert body["detail"].startswith("regression: best val_acc") and "regressed" in body["text"]


def test_the_module_imports_without_ray_or_torch():
    code = ("import sys, service.notify, service.nightly.schedule; "
            "print(sorted({'ray', 'torch'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
