"""service.results.paired against scipy's and statsmodels' own routines, on fixed and simulated
studies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from service.results import paired
from service.results.paired import analyse_study, compare, holm, mde, paired_power, seeds_needed

BASE = {0: 0.912, 1: 0.905, 2: 0.921, 3: 0.899, 4: 0.915, 5: 0.908}
ARM = {0: 0.918, 1: 0.903, 2: 0.930, 3: 0.907, 4: 0.913, 5: 0.917}


def _diffs(base: dict, arm: dict) -> np.ndarray:
    return np.array([arm[s] - base[s] for s in sorted(base)])


def test_every_number_equals_scipys_own_routine() -> None:
    r = compare("wider", BASE, ARM, mode="max", alpha=0.05)
    seeds = sorted(BASE)
    b, a = np.array([BASE[s] for s in seeds]), np.array([ARM[s] for s in seeds])
    d = a - b
    assert r.n == 6 and [row["seed"] for row in r.per_seed] == seeds
    assert r.per_seed[2] == {"seed": 2, "baseline": 0.921, "arm": 0.930, "diff": 0.930 - 0.921}
    assert r.baseline_mean == pytest.approx(b.mean()) and r.arm_mean == pytest.approx(a.mean())
    assert r.effect == pytest.approx(d.mean(), rel=1e-12)
    assert r.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    low, high = stats.t.interval(0.95, 5, loc=d.mean(), scale=stats.sem(d))
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high), rel=1e-12)
    boot = stats.bootstrap((d,), np.mean, method="BCa", confidence_level=0.95,
                           rng=np.random.default_rng(paired.SEED)).confidence_interval
    assert (r.boot_low, r.boot_high) == pytest.approx((boot.low, boot.high), rel=1e-12)
    assert r.boot_low < r.effect < r.boot_high
    perm = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=np.inf)
    assert r.p_perm == pytest.approx(perm.pvalue, rel=1e-12)
    assert r.d_z == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    assert r.win_share == pytest.approx(4 / 6)  # seeds 1 and 4 got worse
    assert r.mde == pytest.approx(mde(d.std(ddof=1), 6, 0.05), rel=1e-12)
    # The same data give the same bootstrap interval on a second run (fixed seed).
    assert compare("wider", BASE, ARM).boot_low == r.boot_low
    # For mode "min" the same rise is a loss on every winning seed.
    assert compare("wider", BASE, ARM, mode="min").win_share == pytest.approx(2 / 6)


def test_alpha_sets_the_intervals_level() -> None:
    r = compare("wider", BASE, ARM, alpha=0.10)
    d = _diffs(BASE, ARM)
    low, high = stats.t.interval(0.90, 5, loc=d.mean(), scale=stats.sem(d))
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high), rel=1e-12)
    wide = compare("wider", BASE, ARM)  # 95%
    assert r.ci_high - r.ci_low < wide.ci_high - wide.ci_low


def test_holm_equals_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    for p in ([0.01, 0.04, 0.03, 0.20], [0.5, 0.001, 0.04, 0.04, 0.9], [0.3], [0.02, 0.02]):
        expected = multitest.multipletests(p, method="holm")[1]
        assert holm(p) == pytest.approx(list(expected), rel=1e-12)
    named = holm({"a": 0.04, "b": 0.01, "c": 0.03})
    assert named == pytest.approx({"a": 0.06, "b": 0.03, "c": 0.06})


def test_the_exact_sign_flip_p_for_five_seeds() -> None:
    rng = np.random.default_rng(1)
    base = {s: 0.9 for s in range(5)}
    for _ in range(20):
        arm = {s: 0.9 + float(x) for s, x in enumerate(rng.normal(0.01, 0.02, 5))}
        assert compare("x", base, arm).p_perm >= 0.0625 - 1e-12
    same_sign = {s: 0.9 + 0.01 * (s + 1) for s in range(5)}
    r = compare("x", base, same_sign)
    assert r.p_perm == pytest.approx(2 / 2**5)
    assert any("cannot reach p < 0.05" in note for note in r.notes)
    assert "cannot reach" not in compare("x", BASE, ARM).reason  # 2/2^6 < 0.05


def test_a_large_real_effect_at_four_seeds_hurts() -> None:
    base = {s: 0.90 + 0.01 * s for s in range(4)}
    worse = {s: base[s] - 0.5 + 0.01 * x for s, x in enumerate([1, -1, 2, 0])}
    noise = {s: base[s] + 0.01 * x for s, x in enumerate([1, -2, 1, -1])}
    results = analyse_study(base, {"no-dropout": worse, "no-lrn": noise}, mode="max")
    hurt, unresolved = results
    assert hurt.name == "no-dropout" and hurt.verdict == "hurts"
    assert hurt.p_adjusted < 0.05 and hurt.p_adjusted == pytest.approx(min(1, 2 * hurt.p))
    assert hurt.win_share == 0 and hurt.ci_high < 0
    assert hurt.reason.startswith(f"hurts — {hurt.effect:+.2f} ± ")
    assert "4 seeds detect ≥" in hurt.reason
    assert unresolved.verdict == "not resolved"
    # For a metric to minimise (a loss), the same fall helps.
    assert analyse_study(base, {"no-dropout": worse}, mode="min")[0].verdict == "helps"


def test_zero_spread_and_too_few_seeds_are_refused_or_explained() -> None:
    base = {s: 0.9 for s in range(4)}
    same = compare("no-op", base, dict(base))
    assert same.p is None and same.d_z is None and same.mde is None
    assert same.boot_low == same.boot_high == same.effect == 0
    assert same.verdict == "not resolved" and "no spread" in same.reason
    spread = {s: 0.9 + 0.01 * x for s, x in enumerate([1, -2, 3, 1])}
    shift, other = analyse_study(base, {"shift": {s: 0.95 for s in range(4)}, "other": spread})
    assert shift.p_adjusted is None and shift.verdict == "not resolved"
    assert shift.p_perm == pytest.approx(2 / 2**4)
    # The untestable arm still counts in Holm's family (as p = 1): k stays 2.
    assert other.p_adjusted == pytest.approx(min(1.0, 2 * other.p))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare("x", {1: 0.9, 2: 0.8}, {2: 0.85, 3: 0.7})
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare("x", {1: 0.9, 2: float("nan")}, {1: 0.95, 2: 0.8})
    with pytest.raises(ValueError, match="mode"):
        compare("x", BASE, ARM, mode="up")  # type: ignore[arg-type]


def test_the_mde_has_exactly_the_target_power() -> None:
    power_mod = pytest.importorskip("statsmodels.stats.power")
    for n, sd, alpha in [(2, 0.7, 0.05), (4, 1.3, 0.05), (6, 1.0, 0.05), (12, 0.02, 0.10)]:
        m = mde(sd, n, alpha)
        assert paired_power(m, sd, n, alpha) == pytest.approx(0.80, abs=1e-6)
        # statsmodels' one-sample t power (its own noncentral t) gives the same effect size.
        es = power_mod.TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8)
        assert m / sd == pytest.approx(es, rel=1e-4)
    assert paired_power(0.5, 1.0, 10) == pytest.approx(
        power_mod.TTestPower().power(0.5, nobs=10, alpha=0.05), rel=1e-8)


def test_seeds_needed_is_the_smallest_n_reaching_the_power() -> None:
    for effect, sd, power in [(0.5, 1.0, 0.8), (1.0, 0.4, 0.8), (0.2, 1.0, 0.9), (-3.0, 1.0, 0.8)]:
        n = seeds_needed(effect, sd, 0.05, power)
        assert paired_power(effect, sd, n) >= power
        assert n == 2 or paired_power(effect, sd, n - 1) < power
    assert seeds_needed(0.5, 1.0) == 34
    with pytest.raises(ValueError):
        seeds_needed(0.0, 1.0)


@pytest.mark.slow
def test_under_the_null_holm_keeps_the_family_wise_error_rate() -> None:
    rng = np.random.default_rng(20240611)
    studies, alpha = 400, 0.05
    any_verdict, raw = 0, 0
    for _ in range(studies):
        base = {s: float(x) for s, x in enumerate(rng.normal(90.0, 1.0, 6))}
        arms = {f"arm{k}": {s: base[s] + float(x) for s, x in enumerate(rng.normal(0, 0.8, 6))}
                for k in range(3)}
        results = analyse_study(base, arms, mode="max", alpha=alpha)
        any_verdict += any(r.verdict != "not resolved" for r in results)
        raw += sum(r.p < alpha for r in results)
    margin = 3 * math.sqrt(alpha * (1 - alpha) / studies)  # three Monte-Carlo standard errors
    assert any_verdict / studies <= alpha + margin
    # Not vacuous: unadjusted, each arm's t-test rejects at about alpha (exact for normal d).
    assert abs(raw / (3 * studies) - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / (3 * studies))


def test_beyond_sixteen_seeds_the_sign_flip_p_is_sampled_and_repeats() -> None:
    rng = np.random.default_rng(3)
    base = {s: float(x) for s, x in enumerate(rng.normal(90, 1, 20))}
    arm = {s: base[s] + float(x) for s, x in enumerate(rng.normal(0.3, 1, 20))}
    r = compare("x", base, arm)
    assert any("random flips" in note for note in r.notes)
    assert r.p_perm == compare("x", base, arm).p_perm
    assert r.p_perm == pytest.approx(r.p, abs=0.05)  # t and permutation agree for normal d
