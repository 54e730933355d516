"""The Pareto front of a sweep with several objectives (`budget.metric: [val_acc, flops]`).

A trial's objective values are those of its last epoch: the values its Optuna study was told,
all at `budget.max_epochs` (no scheduler stops a trial of such a sweep). Only trials that
completed every epoch take part: one stopped early, diverged or failed is never on the front.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

PARETO_STATUSES = ("completed",)  # the only trials whose last epoch is budget.max_epochs


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    mode: str  # max | min


class Pareto(BaseModel):
    """summary.json's `pareto`: the non-dominated trials, best first on the first objective."""

    model_config = ConfigDict(extra="forbid")

    objectives: list[Objective]
    trials: list[str]  # trial ids on the front
    values: dict[str, list[float]]  # trial id -> its objective values (every compared trial)
    # The volume the front dominates up to `reference` (per objective, the worst value among
    # the compared trials pushed a tenth of the range further: `nadir`), in the objectives'
    # own units; None with fewer than 2 compared trials.
    hypervolume: float | None = None
    reference: list[float] | None = None


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether `a` is at least as good as `b` in every objective and better in one."""
    signs = [1.0 if m == "min" else -1.0 for m in modes]
    at_least = all(s * x <= s * y for s, x, y in zip(signs, a, b, strict=True))
    better = any(s * x < s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and better


def non_dominated(values: dict[str, list[float]], modes: Sequence[str]) -> list[str]:
    """The keys of `values` that no other entry dominates (equal points are all kept)."""
    return [k for k, v in values.items()
            if not any(dominates(w, v, modes) for j, w in values.items() if j != k)]


def hypervolume(points: list[list[float]], modes: Sequence[str],
                reference: Sequence[float]) -> float:
    """The volume dominated by `points` and bounded by `reference`, in the objectives' units
    (Optuna's WFG algorithm, on the objectives turned to minimisation)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's own, used by its samplers

    signs = np.array([1.0 if m == "min" else -1.0 for m in modes])
    pts = np.asarray(points, dtype=float) * signs
    ref = np.asarray(reference, dtype=float) * signs
    inside = pts[(pts <= ref).all(axis=1)]
    return float(compute_hypervolume(inside, ref)) if len(inside) else 0.0


NADIR_MARGIN = 0.1  # the reference point lies this share of each objective's range past the worst


def nadir(column: list[float], mode: str) -> float:
    """The hypervolume's reference in one objective: the worst value among the compared trials,
    pushed a tenth of the range further, so that the trials at an extreme still count (at the
    worst value itself their box would be flat)."""
    worst, best = (min(column), max(column)) if mode == "max" else (max(column), min(column))
    span = abs(best - worst) or abs(worst) or 1.0
    return worst - NADIR_MARGIN * span if mode == "max" else worst + NADIR_MARGIN * span


def pareto_front(objectives: list[tuple[str, str]], finals: dict[str, dict[str, float]]
                 ) -> Pareto:
    """The front of the trials in `finals` (trial id -> its last epoch's metrics; only trials
    that completed every epoch belong there). A trial missing an objective, or with a
    non-finite value, is left out."""
    metrics = [m for m, _ in objectives]
    modes = [mode for _, mode in objectives]
    values = {tid: [float(f[m]) for m in metrics] for tid, f in finals.items()
              if all(isinstance(f.get(m), int | float) and math.isfinite(f[m]) for m in metrics)}
    front = non_dominated(values, modes)
    sign = -1.0 if modes[0] == "max" else 1.0
    front.sort(key=lambda tid: sign * values[tid][0])
    hv = reference = None
    if len(values) >= 2:
        reference = [nadir([v[i] for v in values.values()], mode)
                     for i, mode in enumerate(modes)]
        hv = hypervolume([values[t] for t in front], modes, reference)
    return Pareto(objectives=[Objective(metric=m, mode=mode) for m, mode in objectives],
                  trials=front, values=values, hypervolume=hv, reference=reference)


def pareto_of(trials: Iterable[Any], objectives: list[tuple[str, str]]) -> Pareto:
    """The front of a sweep's `TrialRecord`s: only trials that completed every epoch compare
    (a trial stopped early, diverged or failed never joins the front)."""
    return pareto_front(objectives, {t.trial_id: t.final for t in trials
                                     if t.status in PARETO_STATUSES})
