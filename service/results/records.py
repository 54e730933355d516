"""summary.json as typed records (`TrialRecord`, `Summary`) and the one `score` that ranks trials.

A trial's score is the best value of the sweep's metric it reached over its epochs in the
direction of the sweep's mode (Tune's scope="all"), read from the lowest and highest value of
every metric that the record keeps; failed and diverged trials have none.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from service.metrics import FIT_METRICS, METRICS, Mode, default_mode
from service.results.pareto import Pareto

FAILED = ("error", "diverged")  # statuses without a score, never a sweep's best
Status = Literal["completed", "stopped-early", "diverged", "error"]
# Metrics whose lowest and highest values are kept; best_val_acc is val_acc's highest.
TRACKED = tuple(m for m in METRICS if m != "best_val_acc")


def _number(value: Any) -> bool:
    # numbers.Real takes numpy scalars from a pandas row too; a bool is not a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _native(value: numbers.Real) -> int | float:
    return int(value) if isinstance(value, numbers.Integral) else float(value)


class _Record(BaseModel):
    # NaN and infinity (a diverged loss) are written as null: summary.json stays strict JSON.
    model_config = ConfigDict(ser_json_inf_nan="null")


class TrialRecord(_Record):
    """One trial of summary.json: its configuration, how it ended, its last result and, per
    metric, the lowest and highest value it reached over its epochs."""

    trial_id: str
    config: dict[str, Any]
    status: Status
    epochs: int
    best_val_acc: float | None = None
    final: dict[str, int | float | None] = Field(default_factory=dict)  # the last result
    error: str | None = None  # the last line of the error, for status error
    stopped_at: int | None = None  # the epoch a scheduler stopped it (stopped-early only)
    # None in summaries written before they were recorded (score falls back to final).
    lowest: dict[str, float | None] | None = None
    highest: dict[str, float | None] | None = None
    # Per-epoch results, attached by store.load_run; never written into summary.json.
    history: list[dict[str, Any]] = Field(default_factory=list, exclude=True)

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler) -> dict[str, Any]:
        # stopped_at is written only for stopped trials, and an old record stays old-shaped.
        data = handler(self)
        for key in ("stopped_at", "lowest", "highest"):
            if getattr(self, key) is None:
                data.pop(key, None)
        return data

    @property
    def failed(self) -> bool:
        """Whether the trial errored or diverged."""
        return self.status in FAILED

    @classmethod
    def from_history(cls, trial_id: str, config: Mapping[str, Any], status: str,
                     history: Iterable[Mapping[str, Any]],
                     error: str | None = None) -> TrialRecord:
        """The record of a trial from its results, one per epoch, oldest first (the last one is
        its final result)."""
        rows = list(history)
        last = rows[-1] if rows else {}
        lowest, highest = extremes(rows)
        epoch = last.get("epoch")
        epochs = int(epoch) if _number(epoch) and math.isfinite(epoch) else 0
        return cls(trial_id=trial_id, config=dict(config), status=status, epochs=epochs,
                   best_val_acc=highest.get("val_acc"),
                   final={k: _native(last[k]) for k in FIT_METRICS if _number(last.get(k))},
                   error=error, stopped_at=epochs if status == "stopped-early" else None,
                   lowest=lowest, highest=highest)


def extremes(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per tracked metric, its lowest and highest value over `rows` (a NaN is no value)."""
    lowest: dict[str, float] = {}
    highest: dict[str, float] = {}
    for row in rows:
        for metric in TRACKED:
            value = row.get(metric)
            if not _number(value) or math.isnan(value):
                continue
            value = float(value)
            lowest[metric] = min(lowest.get(metric, value), value)
            highest[metric] = max(highest.get(metric, value), value)
    return lowest, highest


def score(record: TrialRecord, metric: str, mode: str) -> float | None:
    """The best value of `metric` the trial reached over its epochs in the direction of `mode`
    (Tune's scope="all"); None for a failed or diverged trial or a missing or non-finite value."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode {mode!r}: must be max or min")
    if record.failed:
        return None
    if metric == "best_val_acc":  # fit's running maximum of val_acc
        metric, mode = "val_acc", "max"
    extreme = record.highest if mode == "max" else record.lowest
    if extreme is not None:
        value = extreme.get(metric)
    elif metric == "val_acc" and mode == "max":  # written before the extremes were recorded
        value = record.best_val_acc
    else:
        value = record.final.get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def rank(trials: Iterable[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials by score, best first; those without a score after them, in their given order."""
    trials = list(trials)
    scores = [score(t, metric, mode) for t in trials]
    sign = -1.0 if mode == "max" else 1.0
    scored = sorted((i for i, s in enumerate(scores) if s is not None),
                    key=lambda i: sign * scores[i])  # stable: ties keep their given order
    return [trials[i] for i in scored] + [t for t, s in zip(trials, scores, strict=True)
                                          if s is None]


class Summary(_Record):
    """summary.json: the validated spec, the plan, every trial (ranked) and the best one."""

    name: str
    spec: dict[str, Any]  # as validated when the sweep ran, storage password redacted
    plan: dict[str, Any] = Field(default_factory=dict)
    searched: list[str] = Field(default_factory=list)
    trials: list[TrialRecord]
    best: TrialRecord | None = None
    wall_s: float | None = None
    pareto: Pareto | None = None  # several objectives: the non-dominated trials
    ray_version: str | None = None
    torch_version: str | None = None

    @model_serializer(mode="wrap")
    def _pareto_when_multi_objective(self, handler) -> dict[str, Any]:
        data = handler(self)  # a single-metric summary keeps its old shape
        if self.pareto is None:
            data.pop("pareto", None)
        return data

    @model_validator(mode="after")
    def _best_is_one_of_the_trials(self) -> Summary:
        # The file holds `best` as a copy; one object means what is attached to a trial (its
        # history) is seen through `best` too.
        if self.best is not None:
            same = [t for t in self.trials if t.trial_id == self.best.trial_id]
            if same:
                self.best = same[0]
        return self

    @property
    def objectives(self) -> list[tuple[str, Mode]]:
        """(metric, mode) of every objective the sweep optimised (one for most sweeps)."""
        budget = self.spec.get("budget", {})
        metric, mode = budget.get("metric", "val_acc"), budget.get("mode")
        metrics = metric if isinstance(metric, list) else [metric]
        modes = mode if isinstance(mode, list) else [mode] * len(metrics)
        return [(m, mo or default_mode(m)) for m, mo in zip(metrics, modes, strict=True)]

    @property
    def metric(self) -> str:
        """The metric the sweep optimised (the first objective when there are several): it
        ranks the trials and names `best`."""
        return self.objectives[0][0]

    @property
    def mode(self) -> Mode:
        """The direction the sweep optimised its (first) metric in."""
        return self.objectives[0][1]

    def score(self, trial: TrialRecord) -> float | None:
        """`trial`'s score on this sweep's metric and mode."""
        return score(trial, self.metric, self.mode)

    @classmethod
    def ranked(cls, trials: Iterable[TrialRecord], **fields: Any) -> Summary:
        """A summary of `trials` sorted by score (scored first); `best` is the top-scored trial
        (None when no trial has a score)."""
        summary = cls(trials=list(trials), **fields)
        summary.trials = rank(summary.trials, summary.metric, summary.mode)
        top = summary.trials[0] if summary.trials else None
        summary.best = top if top is not None and summary.score(top) is not None else None
        return summary
