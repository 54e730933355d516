"""Seed groups: each configuration the Optuna searcher suggests is trained `budget.seeds` times
(one Tune trial per seed), and the study holds one trial per configuration.

Tune's own `Repeater` tells its searcher only the mean of the seeds' last values, so a group
in which a scheduler stopped a seed early reached the study as COMPLETE with a truncated mean,
and TPE took it for a finished score. `SeedGroups` keeps every seed's learning curve and, once
all seeds of a configuration have ended, tells the searcher the group as a whole:

- COMPLETE, valued at the mean of the seeds' final `metric` (its value at the last epoch, as a
  single trial is scored), only when every seed ran all `max_epochs` epochs without error or
  divergence;
- PRUNED otherwise (a seed stopped early, diverged or failed), with the seeds' mean at each
  epoch up to the last one all of them reached as intermediate values: TPE ranks pruned trials
  by the last step they reached and their value there, so the group counts as far as its
  shortest seed got (a seed that failed before its first epoch does not count);
- FAIL when no seed reported a value.

Early stopping still decides per seed. Deciding for the whole group would mean holding a seed
at each rung until its twins got there (pausing a Train-in-Tune trial restarts its worker
group from a checkpoint) or stopping twins on one seed's noisy value; neither fits Tune's
schedulers cleanly, and the group is PRUNED either way.

Tune saves wrappers like this one with `get_state` (its SearchGenerator walks the `searcher`
attributes) and the Optuna searcher itself with `save`, so groups half finished when a driver
stops are completed after `Tuner.restore`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher

from service.rundir import SEED_KEY
from service.tune.schedulers import PrunedAwareOptunaSearch


class SeedGroups(Searcher):
    """Hands each configuration of `searcher` to `seeds` trials (their `SEED_KEY` 0, 1, ...)
    and records each group in the searcher's study as described in the module docstring."""

    def __init__(self, searcher: PrunedAwareOptunaSearch, seeds: int, max_epochs: int,
                 time_attr: str = "epoch") -> None:
        self.searcher = searcher  # the name Tune's SearchGenerator looks for
        self.seeds = seeds
        self._max_epochs = max_epochs
        self._time_attr = time_attr
        self._members: dict[str, list[str]] = {}  # group id (its first seed's) -> seed ids
        self._group_of: dict[str, str] = {}  # seed trial id -> group id
        self._open: str | None = None  # the group still handing out seeds
        self._open_config: dict[str, Any] = {}  # its configuration
        self._curves: dict[str, dict[int, float]] = {}  # seed trial id -> epoch -> metric
        self._full: dict[str, bool] = {}  # seed trial id -> ran the full budget (once ended)
        self._told: set[str] = set()  # groups recorded in the study
        super().__init__()  # metric and mode are the searcher's (properties below)

    @property
    def metric(self) -> str | None:
        return self.searcher.metric

    @property
    def mode(self) -> str | None:
        return self.searcher.mode

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._open is None or len(self._members[self._open]) >= self.seeds:
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self._open, self._open_config = trial_id, copy.deepcopy(config)
            self._members[trial_id] = []
        group = self._open
        self._members[group].append(trial_id)
        self._group_of[trial_id] = group
        return {**copy.deepcopy(self._open_config), SEED_KEY: len(self._members[group]) - 1}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        group = self._group_of.get(trial_id)
        if group is None or group in self._told:
            return
        # Tune hands the searcher the result that made a scheduler stop a trial only here.
        self._record(trial_id, result)
        self._full[trial_id] = not error and self._ran_full_budget(result)
        members = self._members[group]
        if len(members) == self.seeds and all(t in self._full for t in members):
            self._tell(group)

    def _record(self, trial_id: str, result: dict | None) -> None:
        metric, group = self.metric, self._group_of.get(trial_id)
        if (group is None or group in self._told or not result or not isinstance(metric, str)
                or metric not in result or self._time_attr not in result):
            return
        self._curves.setdefault(trial_id, {})[int(result[self._time_attr])] = float(
            result[metric])

    def _ran_full_budget(self, result: dict | None) -> bool:
        metric = self.metric
        return (bool(result) and isinstance(metric, str) and metric in result
                and self._time_attr in result and result[self._time_attr] >= self._max_epochs
                and result.get("status") != "diverged" and math.isfinite(result[metric]))

    def _tell(self, group: str) -> None:
        members = self._members[group]
        curves = [self._curves.pop(t, {}) for t in members]
        self._told.add(group)
        reported = [c for c in curves if c]
        if not reported:
            self.searcher.record(group, TrialState.FAIL)
            return
        # Up to the last epoch every seed reached; an epoch whose result a restored driver
        # never saw (reported after Tune last saved this state) is the mean of the others.
        last = min(max(c) for c in reported)
        epochs = sorted({e for c in reported for e in c if e <= last})
        curve = {e: _mean([c[e] for c in reported if e in c]) for e in epochs}
        if all(self._full[t] for t in members):  # then every seed has a curve to the end
            finals = [c[max(c)] for c in curves]
            self.searcher.record(group, TrialState.COMPLETE, value=_mean(finals), curve=curve)
        else:
            self.searcher.record(group, TrialState.PRUNED, curve=curve)

    def get_state(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "searcher"}
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
