"""Statistics over trials: a mean with its 95% confidence interval (paired effects of an arm
against a baseline are `service.results.paired`'s)."""

from __future__ import annotations

import statistics

from scipy import stats


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% confidence interval (Student t; None for n < 2)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))
