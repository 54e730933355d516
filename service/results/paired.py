"""Paired statistics of an ablation study: each arm against the baseline on per-seed differences
d = arm - baseline (mean effect, t and BCa intervals, t-test and exact sign-flip p, Cohen's d_z,
the minimum detectable effect, Holm's adjustment across arms, and a verdict)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
from scipy import optimize, stats

from service.metrics import Mode

Verdict = Literal["helps", "hurts", "not resolved"]
EXACT_MAX_N = 16  # 2^16 = 65,536 sign flips is cheap; beyond it the test samples flips
N_RESAMPLES = 9999  # bootstrap resamples, and random sign flips when n > EXACT_MAX_N
SEED = 0  # the resampling seed: the same data give the same intervals and p on every run
POWER = 0.8


@dataclass(frozen=True)
class ArmResult:
    """One arm against the baseline: effect = mean(arm - baseline) in the metric's units."""

    name: str
    n: int
    baseline_mean: float
    arm_mean: float
    effect: float
    ci_low: float  # Student t interval at 1 - alpha
    ci_high: float
    boot_low: float  # BCa bootstrap interval of the mean at 1 - alpha
    boot_high: float
    p: float | None  # paired t-test, two-sided; None when every difference is equal
    p_perm: float  # sign-flip permutation test, two-sided
    p_adjusted: float | None  # p after Holm across the study's arms
    d_z: float | None
    win_share: float  # share of seeds where the arm beat the baseline in the mode's direction
    mde: float | None  # smallest effect detected with 80% power at this n and sd(d)
    verdict: Verdict
    reason: str
    per_seed: list[dict[str, Any]]
    mode: Mode = "max"
    alpha: float = 0.05
    notes: tuple[str, ...] = ()


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at alpha to detect `effect` with n seeds and sd(d)."""
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    # The lower tail P(T < -crit) as sf(crit) at -nc: nct.cdf(-crit, df, nc) returns NaN for
    # some large nc (scipy 1.17, df=1), and the two agree wherever cdf is finite.
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def mde(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The effect that the two-sided paired t-test at alpha detects with `power` (noncentral t,
    solved exactly)."""
    if n < 2 or sd <= 0:
        raise ValueError(f"the MDE needs n >= 2 and sd > 0 (n={n}, sd={sd})")
    high = sd
    while paired_power(high, sd, n, alpha) < power:  # power rises with the effect: bracket it
        high *= 2
    return float(optimize.brentq(lambda e: paired_power(e, sd, n, alpha) - power, 0.0, high,
                                 xtol=1e-12 * sd))


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = POWER,
                 max_n: int = 1_000_000) -> int:
    """The smallest n (>= 2) whose paired t-test at alpha detects `effect` with `power`."""
    if effect == 0 or sd <= 0:
        raise ValueError(f"seeds_needed needs effect != 0 and sd > 0 (effect={effect}, sd={sd})")
    low, high = 1, 2  # power at low < target <= power at high; power rises with n
    while paired_power(effect, sd, high, alpha) < power:
        low, high = high, high * 2
        if high > max_n:
            raise ValueError(f"more than {max_n} seeds would be needed")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if paired_power(effect, sd, mid, alpha) >= power else (mid, high)
    return high


@overload
def holm(pvalues: Mapping[str, float]) -> dict[str, float]: ...
@overload
def holm(pvalues: Sequence[float]) -> list[float]: ...
def holm(pvalues):
    """Holm's step-down adjustment: p_(j) -> max over i <= j of min(1, (k - i + 1) * p_(i))."""
    keys = list(pvalues) if isinstance(pvalues, Mapping) else None
    p = np.asarray([pvalues[k] for k in keys] if keys is not None else pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    k = len(p)
    stepped = np.minimum(1.0, (k - np.arange(k)) * p[order])
    adjusted = np.empty(k)
    adjusted[order] = np.maximum.accumulate(stepped)
    out = [float(a) for a in adjusted]
    return dict(zip(keys, out, strict=True)) if keys is not None else out


def valued_pairs(baseline: Mapping[Any, float | None], arm: Mapping[Any, float | None]
                 ) -> list[dict[str, Any]]:
    """Per seed with a finite value on both sides: {seed, baseline, arm, diff}."""
    rows = []
    for seed in sorted(baseline.keys() & arm.keys()):
        b, a = baseline[seed], arm[seed]
        if b is None or a is None or not (math.isfinite(b) and math.isfinite(a)):
            continue  # a failed or diverged trial has no value to pair
        rows.append({"seed": seed, "baseline": float(b), "arm": float(a), "diff": float(a - b)})
    return rows


def pair(baseline: Mapping[Any, float | None], arm: Mapping[Any, float | None]
         ) -> list[dict[str, Any]]:
    """`valued_pairs`; ValueError when fewer than 2 seeds pair."""
    rows = valued_pairs(baseline, arm)
    if len(rows) < 2:
        raise ValueError(f"paired statistics need at least 2 seeds with values on both sides, "
                         f"got {len(rows)} (baseline seeds {sorted(baseline)}, arm {sorted(arm)})")
    return rows


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def compare(name: str, baseline: Mapping[Any, float | None], arm: Mapping[Any, float | None],
            mode: Mode = "max", alpha: float = 0.05, unit: str = "", scale: float = 1.0
            ) -> ArmResult:
    """One arm against the baseline, unadjusted (p_adjusted = p); see `analyse_study` for Holm.
    `unit` and `scale` only shape the reason's text (effect * scale + unit)."""
    return _tested(name, pair(baseline, arm), mode, alpha, unit, scale)


def contrast(name: str, values: Mapping[Any, float | None], mode: Mode = "max",
             alpha: float = 0.05, unit: str = "", scale: float = 1.0) -> ArmResult:
    """A per-seed contrast (e.g. a factorial main effect) tested against zero, like an arm's
    differences: baseline 0 and arm = the contrast on every seed."""
    return compare(name, {s: 0.0 for s in values}, values, mode, alpha, unit, scale)


def _tested(name: str, rows: list[dict[str, Any]], mode: Mode, alpha: float, unit: str,
            scale: float) -> ArmResult:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    d = np.array([r["diff"] for r in rows])
    n = len(d)
    effect = float(d.mean())
    sd = float(d.std(ddof=1))
    rng = np.random.default_rng(SEED)
    notes = []
    if np.ptp(d) == 0:  # every seed moved by the same amount: no spread to test or resample
        p = d_z = mde_ = None
        ci = boot = (effect, effect)
        notes.append(f"every seed's difference is {effect * scale:+.4g}{unit}: no spread, so "
                     f"the t-test, d_z, MDE and bootstrap are undefined (intervals have width 0)")
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        ci = stats.t.interval(1 - alpha, n - 1, loc=effect, scale=sd / math.sqrt(n))
        boot = stats.bootstrap((d,), _mean, vectorized=True, confidence_level=1 - alpha,
                               method="BCa", n_resamples=N_RESAMPLES, rng=rng).confidence_interval
        d_z = effect / sd
        mde_ = mde(sd, n, alpha)
    exact = n <= EXACT_MAX_N
    p_perm = float(stats.permutation_test(
        (d,), _mean, vectorized=True, permutation_type="samples", alternative="two-sided",
        n_resamples=np.inf if exact else N_RESAMPLES, rng=rng).pvalue)
    if not exact:
        notes.append(f"sign-flip p from {N_RESAMPLES} random flips (2^{n} is too many)")
    elif 2 / 2**n >= alpha:  # the most extreme of 2^n equally likely flips, counted both ways
        notes.append(f"{n} seeds: the sign-flip test cannot reach p < {alpha:g} "
                     f"(its smallest p is 2/2^{n} = {2 / 2**n:.3g})")
    sign = 1 if mode == "max" else -1
    result = ArmResult(
        name=name, n=n, baseline_mean=float(np.mean([r["baseline"] for r in rows])),
        arm_mean=float(np.mean([r["arm"] for r in rows])), effect=effect,
        ci_low=float(ci[0]), ci_high=float(ci[1]), boot_low=float(boot[0]),
        boot_high=float(boot[1]), p=p, p_perm=p_perm, p_adjusted=p, d_z=d_z,
        win_share=float(np.mean(sign * d > 0)), mde=mde_, verdict="not resolved", reason="",
        per_seed=rows, mode=mode, alpha=alpha, notes=tuple(notes))
    return _judged(result, unit, scale)


def verdict(result: ArmResult, unit: str = "", scale: float = 1.0) -> tuple[Verdict, str]:
    """"helps"/"hurts" when the adjusted t-test p < alpha (direction from the mode), else "not
    resolved"; with a one-line reason giving the effect, its CI, n and the MDE."""
    p = result.p_adjusted
    if p is not None and p < result.alpha and result.effect != 0:
        better = (result.effect > 0) == (result.mode == "max")
        label: Verdict = "helps" if better else "hurts"
    else:
        label = "not resolved"
    half = (result.ci_high - result.ci_low) / 2 * scale
    text = f"{label} — {result.effect * scale:+.2f} ± {half:.2f}{unit}; {result.n} seeds"
    if result.mde is not None:
        text += f" detect ≥ {result.mde * scale:.2f}{unit}"
    text += f" (Holm p = {p:.3g})" if p is not None else " (no spread: t-test undefined)"
    return label, "; ".join([text, *result.notes])


def _judged(result: ArmResult, unit: str, scale: float = 1.0) -> ArmResult:
    label, reason = verdict(result, unit, scale)
    return dataclasses.replace(result, verdict=label, reason=reason)


def analyse_study(baseline: Mapping[Any, float | None],
                  arms: Mapping[str, Mapping[Any, float | None]], mode: Mode = "max",
                  alpha: float = 0.05, unit: str = "", scale: float = 1.0) -> list[ArmResult]:
    """Every arm against the baseline, Holm-adjusted across the arms; in the arms' order."""
    return adjusted([compare(name, baseline, values, mode, alpha, unit, scale)
                     for name, values in arms.items()], unit, scale)


def adjusted(results: Sequence[ArmResult], unit: str = "", scale: float = 1.0
             ) -> list[ArmResult]:
    """The results with p_adjusted by Holm across them (one family) and verdicts to match."""
    # An arm without spread has no t-test p; it still counts in the family (as p = 1), so the
    # others are not adjusted less because one arm could not be tested.
    holm_p = holm([r.p if r.p is not None else 1.0 for r in results])
    return [_judged(dataclasses.replace(r, p_adjusted=a if r.p is not None else None), unit,
                    scale) for r, a in zip(results, holm_p, strict=True)]
