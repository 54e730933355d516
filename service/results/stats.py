"""Statistics over trials: a mean with its 95% confidence interval, and values paired by seed."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

from scipy import stats

T = TypeVar("T")


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% confidence interval (Student t; None for n < 2)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))


def paired(a: Mapping[int, T], b: Mapping[int, T], f: Callable[[T], float | None],
           op: Literal["diff", "ratio"] = "diff") -> list[float]:
    """Per seed present in both: f(b) - f(a) ("diff") or f(b) / f(a) ("ratio"); seeds where
    either value is missing (or a ratio's f(a) is 0) are left out."""
    out = []
    for seed in sorted(a.keys() & b.keys()):
        fa, fb = f(a[seed]), f(b[seed])
        if fa is None or fb is None or (op == "ratio" and fa == 0):
            continue
        out.append(fb - fa if op == "diff" else fb / fa)
    return out
