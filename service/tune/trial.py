"""One trial, a Tune function trainable (`run_trial`) on the engine its resources pick.

- tune (`resources.engine: auto` with one worker): `fit` runs in Tune's own trial actor, which
  holds the worker's CPUs/GPUs and is reused from trial to trial (service.tune.actor).
- train (several workers, or `engine: train`): the trainable is a thin driver that builds a Ray
  Train run sized by the spec's resources and calls `fit()`. The workers (service.tune.worker)
  run `service.training.loop.fit`, reporting through `ray.train.report`;
  `TuneReportCallback` forwards rank 0's metrics to Tune, where the scheduler sees them. Only
  the workers import torch: this module, the driver and Train's controller do not (a process
  that imports torch holds ~0.3 GiB of its own). For the same reason the workers start their
  own process group (`worker.join_process_group`) instead of Ray's TorchConfig.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray.tune
from ray.exceptions import RayActorError
from ray.train import CheckpointConfig, ControllerError, FailureConfig, RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from service.config.blocks import Resources
from service.config.train import TrainConfig
from service.rundir import (
    ARM_KEY,
    SEED_KEY,
    finished_before,
    last_registered_metrics,
    train_run_name,
)


def loop_config(base: dict[str, Any], sampled: dict[str, Any] | None = None,
                backend: str = "gloo") -> dict[str, Any]:
    """What a trial's workers get: the spec's base TrainConfig (as JSON), the sampled values
    and the process-group backend."""
    return {"base": base, "sampled": dict(sampled or {}), "backend": backend}


def train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker. The worker module imports torch, so it is imported here,
    in the worker, never in the trial driver that hands this function to Ray Train."""
    from service.tune.worker import run_worker

    run_worker(config)


def trial_train_config(base: dict[str, Any], sampled: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one trial: the spec's base plus the sampled values (and seed)."""
    sampled = dict(sampled)
    repeat = sampled.pop(SEED_KEY, None)
    cfg = TrainConfig.model_validate(base).with_overrides(sampled)
    if repeat is not None:  # repeated trials of one config differ only by seed
        cfg = cfg.model_copy(update={"seed": cfg.seed + int(repeat)})
    return cfg


def with_arm(config: dict[str, Any], arms: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """An ablation's trial config {arm: name, seed key: i} as the arm's settings and the seed
    key; any other config is returned as it is."""
    config = dict(config)
    name = config.pop(ARM_KEY, None)
    if name is None:
        return config
    if not arms or name not in arms:
        raise ValueError(f"trial config names arm {name!r}, which the study does not have")
    return {**arms[name], **config}


class _ReleaseOrphanedWorkerGroup:
    """A Train callback (controller and worker group): shut down a worker group that started
    but that the controller never got to hold.

    Ray Train 2.60's `WorkerGroup.create` runs the `after_worker_group_start` callbacks and then
    launches the training function (`run_train_fn`) outside its start-up error handling: a
    worker that dies in between makes `create` raise with the group started, its placement
    group reserved and handed to the placement-group cleaner, and the controller holding no
    group to shut down. The run ends as a ControllerError, the cleaner is stopped without
    cleaning, and the group's CPUs stay reserved: the retry in `run_trial` then waits for them
    forever (tests/test_chaos.py stalled so under load). This callback remembers the group it
    saw start until it is shut down or aborted, and shuts it down itself before the next group
    starts or when the controller stops."""

    def __init__(self) -> None:
        self._started = None

    def before_worker_group_start(self, worker_group_context) -> None:
        self._release()

    def after_worker_group_start(self, worker_group) -> None:
        self._started = worker_group

    def before_worker_group_shutdown(self, worker_group) -> None:
        self._started = None

    def before_worker_group_abort(self, worker_group_context) -> None:
        self._started = None

    async def before_controller_shutdown(self) -> None:
        self._release()

    def _release(self) -> None:
        group, self._started = self._started, None
        if group is None:
            return
        try:
            group.shutdown()  # its workers' actors and its placement group
        except Exception as err:  # noqa: BLE001 - shutting down what is left, best effort
            logging.getLogger(__name__).warning("could not release a worker group: %s", err)


class _Trainer(DataParallelTrainer):
    """Train V2's DataParallelTrainer without Ray Data's per-run `DatasetManager` actor when the
    run has no Ray Datasets (ours never has: the workers build their own). That actor is one
    more process per trial (~1.2 CPU-s on 2 cores, bench/trial_start.py), idle for the whole
    run. A private Ray hook, pinned by tests/test_trial_start.py; where Ray no longer has it,
    the trainer is Ray's own."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if _Release is not None:
            callbacks.append(_Release())
        if self.datasets or _DatasetsCallback is None:
            return callbacks
        return [c for c in callbacks if not isinstance(c, _DatasetsCallback)]


try:  # private Ray modules (docs/architecture.md lists the private APIs we use)
    from ray.train.v2._internal.callbacks import DatasetsCallback as _DatasetsCallback
except ImportError:
    _DatasetsCallback = None
try:
    from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

    class _Release(_ReleaseOrphanedWorkerGroup, ControllerCallback, WorkerGroupCallback):
        pass
except ImportError:
    _Release = None


def make_trainer(config: dict[str, Any], scaling_config, run_config):
    """The Ray Train run of one trial: `train_worker` on each worker of `scaling_config`.

    Train V2's DataParallelTrainer (TorchTrainer's base class) with no backend: the workers
    start their process group themselves, so nothing outside them imports torch."""
    return _Trainer(train_worker, train_loop_config=config, scaling_config=scaling_config,
                    run_config=run_config)


def run_trial(config: dict[str, Any], base: dict[str, Any] | None = None,
              resources: dict[str, Any] | None = None, ledger: str | None = None,
              arms: dict[str, dict[str, Any]] | None = None) -> None:
    """Tune function trainable: one trial of one sampled configuration, on its engine.

    `base` is the spec's base TrainConfig and `resources` its resources block, both as JSON;
    `arms` an ablation's settings per cell, which its trial configs name (`with_arm`). A trial
    of the tune engine runs `fit` here, in Tune's trial actor (service.tune.actor); one of the
    train engine is a Ray Train run this function drives (`run_train_trial`).
    A trial that an earlier, killed driver saw finish (in `ledger`) but whose end Tune had not
    yet saved is re-queued by `Tuner.restore`; it reports its recorded result and returns,
    so no epoch is trained twice and a scheduler's stop is not undone."""
    res = resources or {}
    ctx = ray.tune.get_context()
    # The experiment's real storage, not the driver's staging copy of it (get_trial_dir): Tune
    # copies the staging directory to storage only every few seconds, so checkpoints written
    # there would be lost with a killed driver.
    storage = ctx.get_storage()
    if finished_before(ledger, ctx.get_trial_id()):
        last = last_registered_metrics(storage.storage_filesystem, storage.experiment_fs_path,
                                       ctx.get_trial_id(), storage.trial_fs_path)
        if last is not None:
            ray.tune.report(last)
            return
    if Resources.model_validate(res).uses_train:
        run_train_trial(with_arm(config, arms), base or {}, res, storage, ctx.get_trial_id())
        return
    from service.tune.actor import run_in_actor  # imports torch: in the trial, not the driver

    run_in_actor(trial_train_config(base or {}, with_arm(config, arms)), storage)


def run_train_trial(sampled: dict[str, Any], base: dict[str, Any], res: dict[str, Any],
                    storage, trial_id: str) -> None:
    """One Ray Train run of the trial's workers, restarted after worker failures
    (`resources.max_failures`); returns once Tune has its last result."""
    gpus = res.get("gpus_per_worker", 0)
    backend = res.get("backend", "auto")
    if backend == "auto":
        backend = "nccl" if gpus > 0 else "gloo"
    per_worker = {"CPU": res.get("cpus_per_worker", 1)}
    if gpus > 0:
        per_worker["GPU"] = gpus

    def fit() -> None:
        make_trainer(
            loop_config(base, sampled, backend),
            ScalingConfig(num_workers=res.get("workers_per_trial", 1), use_gpu=gpus > 0,
                          resources_per_worker=per_worker),
            RunConfig(
                # The Train run lives inside the trial's directory, named after the trial, so
                # a restored sweep (or a retry below) finds and resumes the same run.
                name=train_run_name(trial_id),
                storage_path=storage.experiment_fs_path,
                storage_filesystem=storage.storage_filesystem,
                callbacks=[TuneReportCallback()],
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=None),
            ),
        ).fit()

    max_failures = res.get("max_failures", 0)  # -1: as many restarts as it takes
    retry = 0
    while True:
        try:
            fit()
            break
        except ControllerError as err:
            # A worker that dies while Train's controller starts or stops its group (a kill,
            # a lost node at that moment) fails the run as a controller error, which Train
            # does not retry (tests/test_chaos.py hit it). It is one more worker failure: the
            # same Train run resumes from its last registered checkpoint.
            if retry == max_failures or not isinstance(err.controller_failure, RayActorError):
                raise
            retry += 1
    wait_until_tune_has_the_last_result()


def wait_until_tune_has_the_last_result(poll_s: float = 0.05) -> None:
    """Return only once Tune has taken the Train run's last result from the queue between them.

    Ray 2.60 deadlocks otherwise when Tune's event loop is slow (a busy machine, a callback
    that blocks: Ray's W&B callback did): `TuneReportCallback` leaves the last epoch's result
    in a one-slot queue actor, this function returns, and its end-of-trial result fills the
    session's one-slot `result_queue`; when Tune then asks for the next result, the session
    moves the queued epoch into the full `result_queue` from the very thread that would empty
    it, and the trial waits forever (`ray.train._internal.session._get_result_from_queues`).
    tests/test_trial_start.py slows Tune's loop and shows the sweep hang without this wait.
    While the trial runs Tune keeps asking for results, so the queue empties; a trial that
    Tune stops is ended with this thread."""
    from ray.train._internal.session import get_session  # private: docs/architecture.md

    session = get_session()
    queue = getattr(session, "_inter_actor_queue", None) if session is not None else None
    while queue is not None and not queue.empty():
        time.sleep(poll_s)
