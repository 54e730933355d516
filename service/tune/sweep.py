"""A sweep on Ray Tune: the Tuner built from the spec (searcher, scheduler, each trial on its
engine through `trial.run_trial`), run or restored, then summarised into summary.json."""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from service.results.records import Summary
from service.results.store import write_json
from service.rundir import SUMMARY, ledger_path, ledger_trials, read_ledger, trial_id_of
from service.tune.plan import SweepPlan
from service.tune.search import make_scheduler, make_searcher, param_space
from service.tune.summary import summarize
from service.tune.tracking import tracking_callbacks
from service.tune.trial import run_trial

# A train-engine trial's driver only waits on its Train run. It holds no CPU and stays on the
# head node, with the sweep's driver: Train's controller runs beside it, so a lost worker node
# (a preempted spot instance) costs only Train workers, which Train restarts
# (`resources.max_failures`), never a trial's driver (tests/test_node_loss.py). The head
# advertises one unit of `node:__internal_head__`; each driver asks for a thousandth.
DRIVER_RESOURCES = {"CPU": 0, "memory": 50 * 2**20, "node:__internal_head__": 0.001}


def actor_resources(resources) -> dict[str, float]:
    """What a trial's Tune actor holds: a tune-engine trial trains in it, so it holds its one
    worker's CPUs and GPUs (Ray then sets its CUDA_VISIBLE_DEVICES and OMP_NUM_THREADS); a
    train-engine trial's actor is the driver above."""
    if resources.uses_train:
        return DRIVER_RESOURCES
    held = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        held["GPU"] = resources.gpus_per_worker
    return held


@dataclass
class Phase:
    """What one Tuner runs: the trials' base TrainConfig (as JSON), Tune's param space, the
    searcher and scheduler, and what the trials' configs name (`searched`)."""

    base: dict[str, Any]
    param_space: dict[str, Any]
    searcher: Any
    scheduler: Any
    num_samples: int
    searched: list[str]
    limit_concurrency: bool  # TuneConfig.max_concurrent_trials (a generator limits itself)
    expected: int  # trials made when the phase ends normally (fewer: it was interrupted)
    arms: dict[str, dict[str, Any]] | None = field(default=None)  # an ablation's cells


def sweep_phase(spec, plan: SweepPlan) -> Phase:
    """An ordinary sweep's single phase, from its `search` block."""
    num_samples = spec.budget.num_samples
    if spec.searcher.optuna:
        num_samples *= spec.budget.seeds
    elif spec.searcher.type == "grid":
        num_samples = 1  # the grid itself enumerates the trials
    return Phase(base=spec.base_config().model_dump(mode="json"), param_space=param_space(spec),
                 searcher=make_searcher(spec, plan.max_concurrent_trials,
                                        plan.experiment_dir),
                 scheduler=make_scheduler(spec), num_samples=num_samples,
                 searched=list(spec.search), limit_concurrency=spec.searcher.optuna,
                 # Every searcher makes exactly plan.trials (plan.expected_trials), a grid too:
                 # a phase that ended with fewer was stopped by Ctrl-C before Tune made the
                 # rest (between a grid's trials) and stays resumable.
                 expected=plan.trials)


def _trainable(spec, phase: Phase, ledger: Path | None = None):
    # Plain JSON, not the spec: the trial driver then never imports torch (service.tune.trial).
    trainable = tune.with_parameters(run_trial, base=phase.base,
                                     resources=spec.resources.model_dump(mode="json"),
                                     ledger=str(ledger) if ledger else None, arms=phase.arms)
    return tune.with_resources(trainable, actor_resources(spec.resources))


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not imported in the sweep's driver")


def import_tensorboardx_without_torch() -> None:
    """Import tensorboardX before Tune's TensorBoard logger does, with torch out of reach.

    Its writer imports torch at module level only to recognise torch tensors; our results are
    plain numbers, and torch would add ~0.3 GiB to the driver (bench/default_sweep.py). The
    event files are the same. A no-op when torch or tensorboardX is already imported."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    blocker = _NoTorch()
    sys.meta_path.insert(0, blocker)
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        pass  # not installed: Tune then skips its TensorBoard logger
    finally:
        sys.meta_path.remove(blocker)


_CTRL_C = threading.Event()


def _remember_ctrl_c(signum, frame) -> None:
    _CTRL_C.set()
    signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as without us


@contextlib.contextmanager
def ctrl_c_between_phases():
    """Within this block a Ctrl-C is remembered as well as raised, for a run of several
    phases (an ablation): one that lands while Ray or Tune set up a phase can be swallowed
    there (a study's next tuning phase can then run to its end after a SIGINT), and the
    flag (`ctrl_c_pressed()`) still stops the study before its next phase. Tune installs its
    own handler during `fit` and puts this one back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _CTRL_C.clear()
    before = signal.signal(signal.SIGINT, _remember_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def ctrl_c_pressed() -> bool:
    """Whether a Ctrl-C came within `ctrl_c_between_phases`."""
    return _CTRL_C.is_set()


def reuses_actors(spec, scheduler) -> bool:
    """Whether a finished trial's actor runs the next trial, saving a process start per trial
    (and, on the tune engine, torch's import, the dataset cache and the optimiser's first-step
    imports: bench/trial_start.py). Always on the tune engine: a trial a scheduler stops is
    inside `fit`, whose next report ends it, and the actor is reset cleanly. On the train
    engine only without early stopping: a trial stopped inside its Train run's `fit()` makes
    Tune's reset fail ("Could not re-use actor") and, in Ray 2.60, the sweep hang."""
    if not spec.resources.uses_train:
        return True
    return scheduler is None or type(scheduler) is FIFOScheduler


def build_tuner(spec, plan: SweepPlan, progress, resume: bool = False,
                phase: Phase | None = None):
    """A fresh Tuner for `plan`, or the interrupted one restored from its directory."""
    import_tensorboardx_without_torch()
    phase = phase or sweep_phase(spec, plan)
    trainable = _trainable(spec, phase, ledger_path(plan.experiment_dir))
    if resume:
        return tune.Tuner.restore(plan.experiment_dir, trainable=trainable,
                                  param_space=phase.param_space, resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)
    # Several objectives: the searcher has them all; Tune's single metric stays unset.
    metric, mode = (None, None) if spec.budget.multi_objective else spec.budget.primary
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, search_alg=phase.searcher,
        scheduler=phase.scheduler, num_samples=phase.num_samples,
        # A ready-made generator (grid/random) takes the limit itself; Tune would warn here.
        max_concurrent_trials=plan.max_concurrent_trials if phase.limit_concurrency else None,
        time_budget_s=spec.budget.time_budget_s, reuse_actors=reuses_actors(spec, phase.scheduler))
    storage, name = plan.experiment_dir.rsplit("/", 1)
    callbacks = [progress, *tracking_callbacks(spec, plan)]
    # A tune-engine trial is restarted by Tune, from its last checkpoint; a Train run restarts
    # its own workers, so Tune does not restart its driver.
    restarts = 0 if spec.resources.uses_train else spec.resources.max_failures
    run_config = tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=restarts))
    return tune.Tuner(trainable, param_space=phase.param_space, tune_config=tune_config,
                      run_config=run_config)


def interrupted(spec, phase: Phase, results, progress) -> bool:
    """True when Tune returned early (Ctrl-C): trials left unfinished or never made.

    Tune marks trials it stops on Ctrl-C as terminated, like finished ones, so the progress
    callback's ledger of trials that completed, stopped early or failed tells them apart.
    """
    # The callback Tune runs after a restore is the one pickled with the first session, not
    # `progress`; the ledger on disk is what both share.
    finished = (read_ledger(progress.ledger) if progress.ledger
                else progress.finished | progress.errored)
    ids = {(r.metrics or {}).get("trial_id") or trial_id_of(r.path) for r in results}
    if ids - finished:
        return True
    # A time budget may legitimately end the sweep early.
    return len(results) < phase.expected and spec.budget.time_budget_s is None


def run_sweep(spec, plan: SweepPlan, progress, resume: bool = False,
              phase: Phase | None = None) -> Summary | None:
    """Run (or resume) the sweep (or one `phase` of an ablation) and write summary.json;
    returns the summary, or None when the run was interrupted (Tune saved its state; nothing
    is summarised until it finishes)."""
    start = time.perf_counter()
    ledger = ledger_path(plan.experiment_dir)
    if ledger is not None:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        progress.use_ledger(ledger)
    phase = phase or sweep_phase(spec, plan)
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    tuner = build_tuner(spec, plan, progress, resume=resume, phase=phase)
    try:
        results = tuner.fit()
    except (EOFError, pickle.UnpicklingError) as err:
        # Tune reads each errored trial's pickled error back; one written on a full disk is
        # empty. The trials' results are kept: --resume, once there is space, finishes them.
        raise OSError(errno.EIO, f"a trial's error file cannot be read back ({err or 'empty'}"
                      "; was the disk full?)", plan.experiment_dir) from err
    finally:
        # Tune's Ctrl-C handler stays installed after a run that was not interrupted, and
        # would swallow a Ctrl-C that comes before the next phase of an ablation starts.
        if main and before is not None:
            signal.signal(signal.SIGINT, before)
    if interrupted(spec, phase, results, progress):
        return None
    # Trials the ledger saw finish that Tune's restored state lost (they finished after its
    # last save, before a killed driver): trained, told to the searcher, so summarised too.
    known = {(r.metrics or {}).get("trial_id") or trial_id_of(r.path) for r in results}
    lost = {i: e for i, e in ledger_trials(ledger).items()
            if i not in known and "://" not in plan.experiment_dir}
    summary = summarize(spec, plan, results, time.perf_counter() - start, phase.searched,
                        phase.arms, lost)
    write_json(f"{plan.experiment_dir}/{SUMMARY}", summary)
    return summary
