"""Experiment trackers as Ray Tune logger callbacks, from the spec's `tracking:` block.

Ray's own `MLflowLoggerCallback` and `WandbLoggerCallback` (ray.air.integrations), run by Tune
in the sweep's driver: each trial is one MLflow run and one W&B run, its sampled settings
(`trial.config`) as params/config and every result Tune receives (one per epoch: val_acc,
val_loss, train_acc, train_loss, images_per_s, params, flops, epoch, …) as metrics at step
`training_iteration`. Both name the sweep (`spec.name`) and its run id (RESULTS/<name>/<run-id>):
MLflow as tags `sweep`, `sweep_run_id` (and `sweep_phase` in an ablation's tuning phase), W&B as
tags and the run id as its group. TensorBoard files need nothing here: Tune writes them per trial.

mlflow and wandb are imported only when configured (the `tracking` extra); neither imports
torch, so the driver stays torch-free. What we change in Ray 2.60's callbacks, and why:

* **Off Tune's event loop.** Ray's callbacks talk to the tracker inside Tune's loop: MLflow
  with one HTTP request per metric and param, W&B with a blocking put into a per-trial queue
  actor, which waits for that actor to start (0.8-1.4 s at a trial's first result on 2
  cores). Every result and every scheduler decision of the sweep waits behind them. (A loop
  that slow also deadlocked finished trials in Ray 2.60; that is fixed where it happens,
  `tune/trial.py:wait_until_tune_has_the_last_result`.) Every tracker call therefore runs in
  order on one background thread per tracker (at the sweep's end, queued calls get FLUSH_S),
  and a failing call is logged, not raised: a tracker outage never stops training. `setup`
  stays synchronous, so a tracker that cannot be used fails the sweep before any trial
  starts.
* **MLflow:** a result is one `log_batch` request (0.03 s, against 0.48 s for Ray's loop of
  `log_metric` on a local server); `config/…` echoes of the params are not logged as metrics.
* **Trials cut off** (Ctrl-C, `budget.time_budget_s`) get no `on_trial_complete` from Tune.
  Ray's MLflow callback then leaves their runs RUNNING, and its W&B callback never tells
  their logging actors to finish, so `on_experiment_end` waits `upload_timeout` (30 min by
  default) and kills them before `wandb.finish`. Ours ends such MLflow runs as KILLED and
  tells the W&B actors to finish first.
* **W&B offline:** Ray's `setup` demands an API key unless the environment variable
  WANDB_MODE says offline; `mode: offline` in the spec is enough here.
* **A tracker that cannot be used** fails `setup` with a `TrackingError` naming the spec's
  block. MLflow's client retries an unreachable server for about 4 minutes (7 retries with
  backoff, measured); `setup` asks it for one retry with a 15 s timeout unless the
  environment sets MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import queue
import threading
import time
from pathlib import Path

from service.redact import redact_url

log = logging.getLogger(__name__)

WANDB_TAG_MAX = 64  # wandb.init refuses longer tags
OFFLINE_FINISH_S = 60  # an offline wandb.finish only closes local files
FLUSH_S = 300  # at the sweep's end, how long the calls still queued may take


class TrackingError(RuntimeError):
    """A tracker the spec names cannot be used (unreachable, no credentials): raised as the
    sweep starts, before any trial runs."""


@contextlib.contextmanager
def _answer_soon():
    """MLflow's HTTP settings for one quick answer, where the environment sets none."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
    set_here = [k for k in quick if k not in os.environ]
    os.environ.update({k: quick[k] for k in set_here})
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


def run_identity(spec, plan) -> tuple[str, str, str | None]:
    """The sweep's run directory (a path or URI), its run id, and the phase within it: None,
    or `tuning/<cell>` for an ablation's tuning sweep (its plan: RUN/tuning/<cell>)."""
    exp = plan.experiment_dir.rstrip("/")
    phase = None
    if plan.name != spec.name and plan.name.startswith(spec.name + "/"):
        phase = plan.name[len(spec.name) + 1:]
        if exp.endswith("/" + phase):
            exp = exp[: -len(phase) - 1]
    return exp, exp.rsplit("/", 1)[-1], phase


def wandb_dir(setting: str | None, run_dir: str) -> str:
    """Where W&B writes its runs (`<dir>/wandb/offline-run-…`): the spec's `dir`, else the
    sweep's run directory. Results on remote storage (s3://, gs://) cannot hold them, W&B
    writes local files: they then go where wandb itself would put them, under the directory
    the sweep was started from (./wandb/)."""
    if setting:
        return str(Path(setting).expanduser().resolve())
    if "://" in run_dir:
        return os.getcwd()
    return run_dir


def tracking_callbacks(spec, plan) -> list:
    """The Tune callbacks that send every trial to the trackers the spec names."""
    tracking = spec.tracking
    if tracking is None:
        return []
    run_dir, run_id, phase = run_identity(spec, plan)
    callbacks = []
    if tracking.mlflow is not None:
        tags = {"sweep": spec.name, "sweep_run_id": run_id}
        if phase:
            tags["sweep_phase"] = phase
        callbacks.append(mlflow_callback(tracking.mlflow.tracking_uri,
                                         tracking.mlflow.experiment or spec.name, tags))
    if tracking.wandb is not None:
        w = tracking.wandb
        tags = [spec.name, run_id] + ([phase] if phase else [])
        callbacks.append(wandb_callback(
            project=w.project, entity=w.entity, mode=w.mode, group=run_id,
            tags=[t[:WANDB_TAG_MAX] for t in tags], dir=wandb_dir(w.dir, run_dir)))
    return callbacks


class InOrder:
    """One daemon thread that makes the calls given to it, in order, off Tune's event loop.
    A call that raises is logged and the next one runs."""

    def __init__(self, name: str):
        self.name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> None:
        self._calls.put((fn, args))

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args = call
            try:
                fn(*args)
            except Exception as err:  # a tracker's failure is not the sweep's
                log.warning("%s: %s failed: %s: %s", self.name, getattr(fn, "__name__", fn),
                            type(err).__name__, err)

    def close(self, timeout: float = FLUSH_S) -> bool:
        """Wait for the calls already given; False if they did not end within `timeout`."""
        self._calls.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: calls still pending after %.0f s are dropped", self.name, timeout)
        return not self._thread.is_alive()


def mlflow_callback(tracking_uri: str, experiment: str, tags: dict[str, str]):
    """Ray's MLflowLoggerCallback, off Tune's loop, one request per result, no run left
    RUNNING."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from ray.air.constants import TRAINING_ITERATION
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.result import TIMESTEPS_TOTAL
    from ray.tune.utils import flatten_dict

    class SweepMLflowCallback(MLflowLoggerCallback):
        def setup(self, *args, **kwargs):
            try:  # finds or creates the experiment: an unusable server fails the sweep now
                with _answer_soon():
                    super().setup(*args, **kwargs)
            except Exception as err:
                raise TrackingError(redact_url(
                    f"tracking.mlflow: cannot use {self.tracking_uri}: "
                    f"{type(err).__name__}: {err}")) from err
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            self._ended = set()
            self._calls = InOrder("mlflow")

        def log_trial_start(self, trial):
            self._calls.submit(self._start_run, trial)

        def _start_run(self, trial):
            super().log_trial_start(trial)  # a run tagged as the sweep, and its params

        def log_trial_result(self, iteration, trial, result):
            step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]  # as Ray's
            now = int(time.time() * 1000)
            flat = flatten_dict({k: v for k, v in result.items() if k != "config"})
            # Numbers only (numpy's too); dates, host names and paths are not metrics.
            metrics = [Metric(k, float(v), now, step) for k, v in flat.items()
                       if isinstance(v, numbers.Real)]
            self._calls.submit(self._log_batch, trial, metrics)

        def _log_batch(self, trial, metrics):
            self._client.log_batch(self._trial_runs[trial], metrics=metrics)

        def log_trial_end(self, trial, failed=False):
            self._ended.add(trial)
            self._calls.submit(self._end_run, trial, failed)

        def _end_run(self, trial, failed):
            super().log_trial_end(trial, failed)

        def on_experiment_end(self, trials, **info):
            self._calls.submit(self._end_cut_off)
            self._calls.close()

        def _end_cut_off(self):
            for trial, run in self._trial_runs.items():
                if trial not in self._ended:  # stopped by Ctrl-C or the time budget
                    self._client.set_terminated(run, status="KILLED")

    return SweepMLflowCallback(tracking_uri, experiment_name=experiment, tags=tags)


def wandb_callback(*, project: str, mode: str, group: str, tags: list[str], dir: str,
                   entity: str | None = None, upload_timeout: float | None = None):
    """Ray's WandbLoggerCallback (one logging actor and one queue actor per trial; the
    logging actor calls wandb.init with these settings), its puts off Tune's loop, offline
    without an API key, and finishing trials cut off."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _clean_log, _QueueItem

    class SweepWandbCallback(WandbLoggerCallback):
        def setup(self, *args, **kwargs):
            self._calls = InOrder("wandb")
            if self.kwargs.get("mode") == "offline":
                self.api_key_file = None  # all that Ray's setup does that offline runs need
                return
            try:  # online: an API key (WANDB_API_KEY or `wandb login`) must be there
                super().setup(*args, **kwargs)
            except Exception as err:
                raise TrackingError(f"tracking.wandb: {type(err).__name__}: {err}") from err

        def log_trial_result(self, iteration, trial, result):
            if trial not in self._trial_logging_actors:
                self.log_trial_start(trial)
            result = _clean_log(result, video_kwargs=self.video_kwargs,
                                image_kwargs=self.image_kwargs)
            self._calls.submit(self._trial_queues[trial].put, (_QueueItem.RESULT, result))

        def _signal_logging_actor_stop(self, trial):
            self._calls.submit(self._trial_queues[trial].put, (_QueueItem.END, None))

        def on_experiment_end(self, trials, **info):
            for trial in list(self._trial_logging_futures):  # actors not yet collected
                self._signal_logging_actor_stop(trial)  # a second END is never read
            self._calls.close()
            super().on_experiment_end(trials, **info)  # waits for their wandb.finish

    kwargs = {"entity": entity} if entity else {}
    if mode == "offline":  # Ray's default wait (30 min) is for uploads; offline has none
        kwargs["upload_timeout"] = OFFLINE_FINISH_S
    if upload_timeout is not None:
        kwargs["upload_timeout"] = upload_timeout
    return SweepWandbCallback(project=project, group=group, mode=mode, tags=tags, dir=dir,
                              **kwargs)
