"""Experiment tracking (the spec's `tracking:` block, service/tune/tracking.py), against the real
things: one tiny sweep reported to an MLflow server (SQLite backend), to W&B offline and to
Tune's TensorBoard files, each read back with that tool's own reader; trials cut off by the end
of a sweep; and the spec's checks, which refuse a bad tracker before Ray starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from test_submit import ROOT, TINY, in_process_without_ray, write_space

from service.config.spec import parse_spec
from service.tune.plan import plan_sweep
from service.tune.tracking import tracking_callbacks

# Two trials (lr 0.05 and 0.02, a grid), two epochs each, both at once, no early stopping.
TRACKED = dict(TINY, name="tracked", search={"lr": {"type": "grid", "values": [0.05, 0.02]}},
               budget={"max_epochs": 2, "num_samples": 1}, searcher={"type": "grid", "seed": 0},
               scheduler={"type": "none"},
               resources={"workers_per_trial": 1, "cpus_per_worker": 1})
EPOCHS = [1, 2]


def run_submit(args: list[str], prelude: str = "pass", timeout: float = 120
               ) -> subprocess.CompletedProcess:
    """submit's main in a fresh interpreter after `prelude`; its last lines say whether the
    driver ever imported Ray and torch."""
    code = (f"import sys; {prelude}; from service.submit import main; rc = main(sys.argv[1:]); "
            "print('RAY', 'ray' in sys.modules, 'TORCH', 'torch' in sys.modules); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# --- before Ray starts ---------------------------------------------------------------------

@pytest.mark.slow  # seconds in a subprocess
def test_an_mlflow_uri_that_is_not_one_exits_2_before_ray(tmp_path):
    space = dict(TRACKED, tracking={"mlflow": {"tracking_uri": "localhost:5000"}})
    proc = in_process_without_ray([str(write_space(tmp_path, space)), "--dry-run"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "RAY_NOT_IMPORTED" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.mlflow.tracking_uri" in lines[0], proc.stderr
    assert "not an MLflow tracking URI" in lines[0]


@pytest.mark.slow
def test_wandb_configured_but_not_installed_exits_2_with_the_extra(tmp_path):
    space = dict(TRACKED, tracking={"wandb": {"project": "p", "mode": "offline"}})
    # None in sys.modules: Python's import system (and importlib.util.find_spec) sees no wandb.
    proc = run_submit([str(write_space(tmp_path, space)), "--dry-run"],
                      prelude="sys.modules['wandb'] = None")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "RAY False TORCH False" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.wandb" in lines[0], proc.stderr
    assert "wandb is not installed" in lines[0] and "pip install -e '.[tracking]'" in lines[0]
    # the same space with wandb importable passes
    proc = run_submit([str(write_space(tmp_path, space)), "--dry-run"])
    assert proc.returncode == 0, proc.stderr


def test_callbacks_name_the_sweep_its_run_and_an_ablation_phase(monkeypatch, tmp_path):
    from ray import cloudpickle

    from service.tune.ablation import tuning_plan

    name = "n" * 80  # a spec name may be longer than a W&B tag (64)
    spec = parse_spec(dict(TRACKED, name=name, tracking={
        "mlflow": {"tracking_uri": "http://127.0.0.1:1"},
        "wandb": {"project": "p", "mode": "offline"}}))
    assert tracking_callbacks(parse_spec(TRACKED), None) == []
    plan = plan_sweep(spec, str(tmp_path / "res"), {"CPU": 2}, "2030-01-02_03-04-05")
    mlflow_cb, wandb_cb = tracking_callbacks(spec, plan)
    assert mlflow_cb.experiment_name == name
    assert mlflow_cb.tags == {"sweep": name, "sweep_run_id": "2030-01-02_03-04-05"}
    assert wandb_cb.group == "2030-01-02_03-04-05" and wandb_cb.project == "p"
    assert wandb_cb.kwargs["tags"] == [name[:64], "2030-01-02_03-04-05"]
    assert wandb_cb.kwargs["mode"] == "offline"
    assert wandb_cb.kwargs["dir"] == plan.experiment_dir  # offline runs beside Tune's files

    # An ablation's tuning sweep (RUN/tuning/<cell>) is the same run, in a phase; results on
    # S3 cannot hold W&B's local files, which then go under the working directory.
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(spec, "s3://bucket/results", {"CPU": 2}, "2030-01-02_03-04-05")
    mlflow_cb, wandb_cb = tracking_callbacks(spec, tuning_plan(plan, spec, "no-lrn"))
    assert mlflow_cb.tags == {"sweep": name, "sweep_run_id": "2030-01-02_03-04-05",
                              "sweep_phase": "tuning/no-lrn"}
    assert wandb_cb.group == "2030-01-02_03-04-05"
    assert wandb_cb.kwargs["tags"][1:] == ["2030-01-02_03-04-05", "tuning/no-lrn"]
    assert wandb_cb.kwargs["dir"] == str(tmp_path)

    # Tune pickles the callbacks into tuner.pkl, and Tuner.restore unpickles them.
    copies = cloudpickle.loads(cloudpickle.dumps([mlflow_cb, wandb_cb]))
    assert [type(c).__mro__[1].__name__ for c in copies] == ["MLflowLoggerCallback",
                                                               "WandbLoggerCallback"]
    assert copies[0].tags == mlflow_cb.tags and copies[1].kwargs == wandb_cb.kwargs


def test_tracker_calls_run_in_order_and_a_failing_one_is_only_logged(caplog):
    from service.tune.tracking import InOrder

    calls, worker = [], InOrder("test-tracker")
    worker.submit(calls.append, 1)
    worker.submit(lambda: 1 / 0)
    worker.submit(calls.append, 2)
    assert worker.close(timeout=30)
    assert calls == [1, 2]
    assert "test-tracker" in caplog.text and "ZeroDivisionError" in caplog.text


def test_a_tracker_that_cannot_be_used_fails_as_the_sweep_starts(monkeypatch, tmp_path):
    from service.tune.tracking import TrackingError, mlflow_callback, wandb_callback

    # MLflow alone would retry a server that does not answer for about 4 minutes.
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    callback = mlflow_callback(f"http://user:secret@127.0.0.1:{_free_port()}", "x", {})
    start = time.monotonic()
    with pytest.raises(TrackingError, match="^tracking.mlflow: cannot use ") as err:
        callback.setup()
    assert time.monotonic() - start < 60
    assert "secret" not in str(err.value) and "user:***@127.0.0.1" in str(err.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # only while setup asked

    # W&B online needs an API key (offline needs none: the sweep test runs without one).
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    callback = wandb_callback(project="p", mode="online", group="g", tags=[], dir=str(tmp_path))
    with pytest.raises(TrackingError, match="^tracking.wandb: .*API key"):
        callback.setup()


@pytest.mark.slow
def test_an_unreachable_mlflow_server_exits_2_in_one_line(tmp_path):
    """Through `service.submit`: the tracker fails Tune's callback setup, before any trial."""
    uri = f"http://user:secret@127.0.0.1:{_free_port()}"
    space = dict(TRACKED, tracking={"mlflow": {"tracking_uri": uri}})
    proc = run_submit([str(write_space(tmp_path, space)), "--results", str(tmp_path / "res"),
                       "--no-report"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    problems = [line for line in proc.stderr.splitlines() if "tracking.mlflow" in line]
    assert len(problems) == 1 and "cannot use http://user:***@127.0.0.1:" in problems[0], \
        proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr
    assert not list((tmp_path / "res").rglob("run_trial_*"))  # no trial started


# --- readers: each tool's own ----------------------------------------------------------------

def wandb_records(path: Path):
    """The records of a W&B run file (`run-<id>.wandb`): wandb's LevelDB-style log of
    `wandb_internal_pb2.Record` protobufs (32 KiB blocks of checksummed chunks after a
    7-byte header). wandb 0.31 keeps no Python reader of its own, so this follows its format;
    the protobuf schema is the installed wandb's."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0), data[:7]
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:  # a block's tail too short for a header
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad chunk {pos}"
        pos += 7 + length
        chunks += chunk
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def read_wandb_run(path: Path) -> SimpleNamespace:
    run, config, history, kinds = None, {}, {}, set()
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        kinds.add(kind)
        if kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                   for i in record.history.item}
            history[record.history.step.num] = row
    return SimpleNamespace(run=run, config=config, history=history, kinds=kinds)


def tensorboard_scalars(trial_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = trial_dir.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {s.step: s.value for s in acc.Scalars(tag)}


# --- the real trackers --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free local port with a SQLite store, in its own process group,
    stopped (that group only) after the module's tests."""
    tmp = tmp_path_factory.mktemp("mlflow")
    url = f"http://127.0.0.1:{_free_port()}"
    log = (tmp / "server.log").open("w")
    # No job runner: eight more processes (~0.7 GiB) that tracking never uses.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
         "--port", url.rsplit(":", 1)[1], "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
         "--artifacts-destination", str(tmp / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.read().strip() == b"OK":
                        break
            except (URLError, OSError):
                pass
            assert proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            time.sleep(0.2)  # the next poll
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_sweep_reaches_mlflow_wandb_and_tensorboard(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    wandb_dir = tmp_path / "wandb-runs"
    space = dict(TRACKED, tracking={
        "mlflow": {"tracking_uri": mlflow_server},
        "wandb": {"project": "cnn-ablate-test", "mode": "offline", "dir": str(wandb_dir)}})
    start = time.monotonic()
    proc = run_submit([str(write_space(tmp_path, space)), "--results", str(tmp_path / "res"),
                       "-q", "--no-report"], timeout=420)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "RAY True TORCH False" in proc.stdout  # trackers keep the driver torch-free
    (summary_path,) = [Path(line) for line in proc.stdout.splitlines()
                       if line.endswith("summary.json")]
    summary = json.loads(summary_path.read_text())
    run_dir, run_id = summary_path.parent, summary_path.parent.name
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert len(trials) == 2 and {t["config"]["lr"] for t in trials.values()} == {0.05, 0.02}
    assert all(t["status"] == "completed" and t["epochs"] == 2 for t in trials.values())

    # MLflow: one run per trial in the experiment named after the sweep.
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_trial = {r.data.tags["trial_name"].removeprefix("run_trial_"): r for r in runs}
    assert set(by_trial) == set(trials), [r.data.tags for r in runs]
    for trial_id, run in by_trial.items():
        trial = trials[trial_id]
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweep"] == "tracked" and run.data.tags["sweep_run_id"] == run_id
        assert float(run.data.params["lr"]) == trial["config"]["lr"]
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == EPOCHS
        assert max(m.value for m in history) == pytest.approx(trial["best_val_acc"])
        assert {"train_loss", "images_per_s", "params", "flops", "epoch"} <= set(run.data.metrics)
        assert not any(k.startswith("config/") for k in run.data.metrics)

    # W&B: one offline run per trial, grouped by the run id.
    files = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, sorted(p.relative_to(tmp_path) for p in wandb_dir.rglob("*"))
    for path in files:
        got = read_wandb_run(path)
        trial = trials[got.run.run_id]
        assert got.run.run_group == run_id and got.run.project == "cnn-ablate-test"
        assert list(got.run.tags) == ["tracked", run_id]
        assert got.config["lr"] == trial["config"]["lr"]
        assert sorted(got.history) == EPOCHS
        val_acc = [got.history[e]["val_acc"] for e in EPOCHS]
        assert max(val_acc) == pytest.approx(trial["best_val_acc"])
        assert {"train_loss", "images_per_s", "params", "flops"} <= set(got.history[2])
        assert "exit" in got.kinds  # wandb.finish ran: the run is complete, ready to sync

    # TensorBoard: Tune's own event files, one per trial directory.
    for trial_id, trial in trials.items():
        (trial_dir,) = run_dir.glob(f"run_trial_{trial_id}_*")
        val_acc = tensorboard_scalars(trial_dir, "ray/tune/val_acc")
        assert sorted(val_acc) == EPOCHS
        assert max(val_acc.values()) == pytest.approx(trial["best_val_acc"], rel=1e-6)
    print(f"tracked sweep: {wall:.1f} s")


class FakeTrial:
    """What Ray's MLflow callback reads of a Tune trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config = trial_id, config

    def __str__(self) -> str:
        return f"run_trial_{self.trial_id}"


@pytest.mark.slow
def test_a_trial_cut_off_by_the_sweeps_end_is_ended_in_mlflow(mlflow_server):
    # Ctrl-C or budget.time_budget_s: Tune stops the running trials without on_trial_complete.
    from mlflow import MlflowClient

    from service.tune.tracking import mlflow_callback

    callback = mlflow_callback(mlflow_server, "cut-off", {"sweep": "cut-off"})
    callback.setup()
    done, cut = FakeTrial("done_00000", {"lr": 0.1}), FakeTrial("cut_00001", {"lr": 0.2})
    for trial in (done, cut):
        callback.log_trial_start(trial)
        callback.log_trial_result(1, trial, {"val_acc": 0.5, "training_iteration": 1,
                                             "date": "today", "config": {"lr": 0.1}})
    callback.log_trial_end(done)
    callback.on_experiment_end(trials=[done, cut])
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("cut-off").experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"run_trial_done_00000": "FINISHED", "run_trial_cut_00001": "KILLED"}
    for run in runs:
        assert set(run.data.metrics) == {"val_acc", "training_iteration"}


WANDB_CUT_OFF = """
import sys, time
import ray
from service.tune.tracking import wandb_callback

class FakeTrial:  # what Ray's callback reads of a Tune trial
    trial_id, config, local_path = "cut_00001", {"lr": 0.2}, sys.argv[1]

    def __str__(self):
        return "run_trial_cut_00001"

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
callback = wandb_callback(project="p", mode="offline", group="g", tags=["t"], dir=sys.argv[1],
                          upload_timeout=60)
callback.setup()
trial = FakeTrial()
callback.log_trial_start(trial)
callback.log_trial_result(1, trial, {"val_acc": 0.5, "training_iteration": 1})
start = time.monotonic()
callback.on_experiment_end(trials=[trial])  # no log_trial_end: the sweep cut the trial off
print("END_S", round(time.monotonic() - start, 1))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_trial_cut_off_by_the_sweeps_end_is_finished_in_wandb(tmp_path):
    # Ray's own callback would wait upload_timeout (60 s here, 30 min by default) for an END
    # it never sends, then kill the logging actor before wandb.finish.
    proc = subprocess.run([sys.executable, "-c", WANDB_CUT_OFF, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    end_s = float(proc.stdout.split("END_S")[1].split()[0])
    assert end_s < 50, proc.stdout
    (path,) = tmp_path.glob("wandb/offline-run-*/run-cut_00001.wandb")
    got = read_wandb_run(path)
    assert got.history[1]["val_acc"] == 0.5
    assert "exit" in got.kinds
