"""Early stopping between Optuna and Ray Tune: Optuna's pruners as a Tune scheduler, and an
OptunaSearch that records trials stopped early as pruned.

Tune's `OptunaSearch` creates its study with `NopPruner`, so Optuna's pruners
never see a Tune trial. `OptunaPrunerScheduler` keeps a study of its own, one Optuna trial per
Tune trial, reports every result to it and stops the Tune trial when the pruner says prune.
The study only carries intermediate values: its sampler is never asked for parameters.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from service.rundir import trial_history

STUDY_NAME = "tune-pruner"  # HyperbandPruner picks a trial's bracket from the study's name


def restored_results(trial: Trial) -> list[dict]:
    """The results a trial reported before this driver started, one per epoch.

    Tune saves a searcher's state but not a scheduler's: after `Tuner.restore` the scheduler
    is the object pickled before the first trial, so schedulers rebuild what
    they knew from the trial's own records: Ray Train's checkpoint snapshot (written with
    each checkpoint, straight to storage) and Tune's result.json (copied there every few
    seconds, so it may lag behind a killed driver). Empty for a new trial or remote storage.
    """
    storage = getattr(trial, "storage", None)
    if storage is None or not storage.trial_dir_name:  # a new trial has no directory yet
        return []
    trial_dir = Path(trial.path)
    if "://" in str(trial.path) or not trial_dir.parent.is_dir():
        return []
    return trial_history(trial_dir.parent, trial.trial_id, trial_dir)


class RestorableASHA(ASHAScheduler):
    """ASHA whose rungs survive `Tuner.restore`: a restored trial's results are replayed.

    Without this a resumed sweep compares new trials only against each other, and a weak
    trial that the interrupted run would have stopped at the first rung runs to the end.
    """

    def __init__(self, *args, seed: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(seed)  # Tune draws brackets from numpy's global RNG

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if len(self._brackets) > 1:  # Tune's weights (more rungs, likelier), our own draws
            sizes = np.array([len(b._rungs) for b in self._brackets])
            weights = np.exp(sizes - sizes.max())
            pick = self._rng.choice(len(self._brackets), p=weights / weights.sum())
            self._trial_info[trial.trial_id] = self._brackets[pick]
        rows = [r for r in restored_results(trial)
                if self._time_attr in r and self._metric in r]
        for row in rows:  # the decisions were taken by the earlier driver
            self._trial_info[trial.trial_id].on_result(
                trial, row[self._time_attr], self._metric_op * row[self._metric])
        if rows and trial.status == Trial.TERMINATED:
            del self._trial_info[trial.trial_id]  # as on_trial_complete does


class OptunaPrunerScheduler(FIFOScheduler):
    """Stops Tune trials when an Optuna pruner would prune them.

    Every result's `metric` is reported at step `int(result[time_attr])`; trials the pruner
    prunes are stopped and told PRUNED, trials that end otherwise are told COMPLETE with their
    last value (FAIL on error), so that later decisions compare against them as Optuna would.
    The state is plain Python (an in-memory study), so the scheduler pickles with the Tuner.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, metric: str | None = None,
                 mode: str | None = None, time_attr: str = "epoch", max_t: int | None = None,
                 study_name: str = STUDY_NAME):
        super().__init__()
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self._pruner = pruner
        self._metric = metric
        self._mode = mode
        self._time_attr = time_attr
        self._max_t = max_t  # a restored trial that ended short of it was stopped early
        self._study_name = study_name
        self._study: optuna.Study | None = None  # made once metric and mode are known
        self._ot_trials: dict[str, optuna.trial.Trial] = {}  # Tune trial_id -> Optuna trial
        self._last: dict[str, float] = {}  # Tune trial_id -> last reported value
        self._told: set[str] = set()  # Tune trial_ids whose Optuna trial is finished
        self.pruned: dict[str, int] = {}  # Tune trial_id -> the step it was pruned at

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Take metric/mode from TuneConfig; refuse only values that contradict our own."""
        if (self._metric and metric and metric != self._metric) or (
                self._mode and mode and mode != self._mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    @property
    def study(self) -> optuna.Study:
        """The scheduler's study (created on first use: its direction comes from `mode`)."""
        if self._study is None:
            if not self._metric or not self._mode:
                raise ValueError(f"{type(self).__name__} needs a metric and a mode: pass them "
                                 "to it or to tune.TuneConfig")
            self._study = optuna.create_study(
                study_name=self._study_name, pruner=self._pruner,
                direction="maximize" if self._mode == "max" else "minimize",
                sampler=optuna.samplers.RandomSampler(seed=0))
        return self._study

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if trial.trial_id in self._ot_trials:
            return
        self._ot_trials[trial.trial_id] = self.study.ask()
        # A trial re-added by Tuner.restore (this scheduler is the one pickled before the first
        # trial): its reported values are replayed into the study from its result file.
        rows = [r for r in restored_results(trial)
                if self._metric in r and self._time_attr in r]
        last = rows[-1] if rows else (trial.last_result or {})
        if not rows and self._metric in last and self._time_attr in last:
            rows = [last]
        for row in rows:
            self._last[trial.trial_id] = float(row[self._metric])
            self._ot_trials[trial.trial_id].report(float(row[self._metric]),
                                                   step=int(row[self._time_attr]))
        if trial.status != Trial.TERMINATED:
            return
        if not rows:
            self._tell(trial, TrialState.FAIL)
            return
        short = self._max_t is not None and last[self._time_attr] < self._max_t
        self._tell(trial, TrialState.PRUNED if short else TrialState.COMPLETE)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        ot_trial = self._ot_trials.get(trial.trial_id)
        if ot_trial is None:
            return TrialScheduler.CONTINUE
        if trial.trial_id in self._told:  # a result buffered behind our own STOP
            return TrialScheduler.STOP if trial.trial_id in self.pruned else \
                TrialScheduler.CONTINUE
        if self._metric not in result or self._time_attr not in result:
            return TrialScheduler.CONTINUE
        value, step = float(result[self._metric]), int(result[self._time_attr])
        self._last[trial.trial_id] = value
        ot_trial.report(value, step=step)
        if not ot_trial.should_prune():
            return TrialScheduler.CONTINUE
        self.study.tell(ot_trial, state=TrialState.PRUNED)
        self._told.add(trial.trial_id)
        self.pruned[trial.trial_id] = step
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._tell(trial, TrialState.COMPLETE)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._tell(trial, TrialState.COMPLETE)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._tell(trial, TrialState.FAIL)

    def _tell(self, trial: Trial, state: TrialState) -> None:
        ot_trial = self._ot_trials.get(trial.trial_id)
        if ot_trial is None or trial.trial_id in self._told:
            return
        self._told.add(trial.trial_id)
        value = self._last.get(trial.trial_id)
        if state == TrialState.COMPLETE and (value is None or math.isnan(value)):
            state = TrialState.FAIL  # Optuna refuses a COMPLETE trial without a value
        if state == TrialState.COMPLETE:
            self.study.tell(ot_trial, value, state=state)
        else:
            self.study.tell(ot_trial, state=state)

    def debug_string(self) -> str:
        return (f"OptunaPrunerScheduler: {type(self._pruner).__name__}, "
                f"{len(self.pruned)} of {len(self._ot_trials)} trials pruned.")

    def save(self, checkpoint_path: str) -> None:
        """Pickle the whole scheduler, study included."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Load what `save` wrote."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


TUNE_TRIAL_ATTR = "ray_tune_trial_id"  # an Optuna trial's user attribute: its Tune trial
GHOST_REASON = "asked for after the sweep's last saved state; its driver was killed"


class PrunedAwareOptunaSearch(OptunaSearch):
    """`OptunaSearch` that records trials a scheduler stopped early as PRUNED, not COMPLETE.

    Tune tells the searcher a stopped trial's truncated last value as if it had finished,
    so TPE would learn from early, low scores as final ones. A trial whose
    last result is short of `max_epochs` and did not diverge is told PRUNED instead, its last
    value reported first so that TPE still ranks it by how far it got.
    """

    def __init__(self, *args, max_epochs: int, time_attr: str = "epoch", **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._time_attr = time_attr
        self._last_step: dict[str, int] = {}  # trial_id -> the last step told to Optuna

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        if trial_id not in self._completed_trials and TRAINING_ITERATION in result:
            self._last_step[trial_id] = result[TRAINING_ITERATION]

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials and result and not error:
            self._retried(trial_id, result)
            return
        if error or not self._stopped_early(result) or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        ot_trial = self._ot_trials[trial_id]
        step = result.get(TRAINING_ITERATION)
        value = result.get(self.metric)
        # Tune does not hand the searcher the result that made the scheduler stop the trial.
        if step is not None and value is not None and step != self._last_step.get(trial_id):
            ot_trial.report(value, step)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def record(self, trial_id: str, state: TrialState, value: float | None = None,
               curve: dict[int, float] | None = None) -> None:
        """Tell the study how a trial ended, its learning curve (step -> value) reported first:
        for trials whose results do not come one by one, such as a seed group's means
        (`service.tune.seedgroups`). `value` counts only for COMPLETE."""
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        for step, intermediate in sorted((curve or {}).items()):
            ot_trial.report(intermediate, step)
        self._ot_study.tell(ot_trial, value if state == TrialState.COMPLETE else None,
                            state=state)
        self._completed_trials.add(trial_id)

    def _retried(self, trial_id: str, result: dict) -> None:
        """A trial told FAIL (it ended in error) that `--resume` ran again to its end: Optuna
        cannot change a finished trial, so the study gets a copy with the same parameters
        and the new outcome (COMPLETE, or PRUNED at the epoch it was stopped), naming the
        trial it retries. Anything else told twice is ignored, as OptunaSearch does."""
        study = self._ot_study
        number = self._ot_trials[trial_id].number
        failed = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        copied = self.__dict__.setdefault("_copied", set())  # retried trials already copied
        if failed.state != TrialState.FAIL or trial_id in copied:
            return
        copied.add(trial_id)
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        attrs = {TUNE_TRIAL_ATTR: trial_id, "retry_of": failed.number}
        if any(v is None for v in values):
            return
        if self._stopped_early(result):
            copy = optuna.trial.create_trial(
                params=failed.params, distributions=failed.distributions, user_attrs=attrs,
                state=TrialState.PRUNED, intermediate_values={result[self._time_attr]: values[0]})
        else:
            copy = optuna.trial.create_trial(
                params=failed.params, distributions=failed.distributions, user_attrs=attrs,
                values=values)
        study.add_trial(copy)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            # The study names each trial's Tune trial: in optuna-dashboard, and for `restore`.
            ot_trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return config

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.settle_study()

    def settle_study(self) -> None:
        """Make a persistent study (SQLite, PostgreSQL, the run's journal) agree with the
        searcher state Tune restored, which is what Tune saved last, seconds before a driver
        was killed. A trial the study holds as RUNNING but this state does not know was
        asked for after that save: Tune will never run or tell it, so it is FAIL (a ghost
        otherwise, RUNNING forever). A trial this state knows as unfinished but the study
        already has finished was told before the kill: it is not told again when Tune's
        re-queued trial ends."""
        study = self._ot_study
        for frozen in study.get_trials(deepcopy=False):
            tune_id = frozen.user_attrs.get(TUNE_TRIAL_ATTR)
            known = tune_id in self._ot_trials
            if frozen.state == TrialState.RUNNING and not known:
                study._storage.set_trial_user_attr(  # private: docs/architecture.md
                    frozen._trial_id, "failed_because", GHOST_REASON)
                study.tell(frozen.number, state=TrialState.FAIL)
            elif frozen.state.is_finished() and known:
                self._completed_trials.add(tune_id)

    def _stopped_early(self, result: dict | None) -> bool:
        return (bool(result) and isinstance(self.metric, str) and self.metric in result
                and self._time_attr in result and result[self._time_attr] < self._max_epochs
                and result.get("status") != "diverged")
