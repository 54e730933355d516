"""Seeds until resolved: group-sequential paired t-tests of every arm against the baseline.

A study trains every undecided cell with seeds 0..start-1, looks, and adds `step` seeds to the
cells still needed, up to `n_max`. At each look every undecided arm's paired t statistic on its
per-seed differences d = arm - baseline is compared with a two-sided boundary that spends alpha
with the Lan-DeMets O'Brien-Fleming-shaped function of the information fraction n / n_max. The
boundaries are those of the t statistics themselves (not of z): their joint null distribution
across looks is simulated once per schedule from normal paths with a fixed seed. Holm's step-down
runs across the arms: an arm is tested at level alpha / m, m being the arms not yet decided
`helps` or `hurts`, so the family-wise error over arms and looks stays at alpha. An arm whose
conditional power to detect `min_effect` by `n_max` falls below `futility_power` stops as
`futile` (non-binding: the boundaries ignore it). docs/statistics.md gives the reasons and the
simulated error rates. numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from service.results import paired

Decision = Literal["helps", "hurts", "continue", "futile", "not resolved"]
REJECTED = ("helps", "hurts")
N_PATHS = 1_000_000  # simulated null paths per schedule: the t boundaries' spending is within ~1%
PATH_SEED = 20240611  # the same schedule gives the same boundaries on every run
CHUNK = 125_000  # paths generated per block (each block has its own seed)
FUTILITY_POWER = 0.2
GRID = 401  # odd: Simpson's rule in the known-variance recursion


def planned_looks(start: int, step: int, n_max: int) -> tuple[int, ...]:
    """The seed counts at which a study looks: start, start + step, ..., n_max (always last)."""
    if start < 2 or step < 1 or n_max < start:
        raise ValueError(f"need start >= 2, step >= 1 and n_max >= start "
                         f"(start={start}, step={step}, n_max={n_max})")
    return tuple(range(start, n_max, step)) + (n_max,)


def spending(t: float | np.ndarray, alpha: float) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-shaped alpha spent by information fraction t (capped at 1):
    alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)); alpha(1) = alpha."""
    t = np.minimum(np.asarray(t, dtype=float), 1.0)
    return 2.0 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(t))


def _increments(looks: tuple[int, ...], n_max: int, alpha: float) -> np.ndarray:
    """The alpha each look may spend; a look at or past n_max spends all that is left."""
    if len(looks) == 0 or looks[0] < 2 or np.any(np.diff(looks) <= 0):
        raise ValueError(f"looks must be increasing seed counts >= 2, got {looks}")
    fractions = np.minimum(np.asarray(looks, dtype=float) / n_max, 1.0)
    cumulative = spending(fractions, alpha)
    cumulative[fractions >= 1.0] = alpha
    return np.diff(np.concatenate([[0.0], cumulative]))


def _simpson(x: np.ndarray) -> np.ndarray:
    w = np.ones(len(x))
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * (x[-1] - x[0]) / (len(x) - 1) / 3.0


@lru_cache(maxsize=256)
def z_boundaries(looks: tuple[int, ...], n_max: int, alpha: float) -> tuple[float, ...]:
    """Two-sided boundaries for z statistics (known variance) at `looks`: the recursive
    numerical integration of Armitage, McPherson and Rowe (1969) over the sum S_k, whose
    increments are independent N(0, n_k - n_{k-1}). For reference beside `t_boundaries`."""
    inc = _increments(looks, n_max, alpha)
    c = [float(stats.norm.isf(inc[0] / 2))]
    s = np.linspace(-c[0], c[0], GRID) * math.sqrt(looks[0])
    w = stats.norm.pdf(s, scale=math.sqrt(looks[0])) * _simpson(s)
    for k in range(1, len(looks)):
        ck, s, w = _z_step(s, w, looks[k] - looks[k - 1], looks[k], float(inc[k]))
        c.append(ck)
    return tuple(c)


def _z_step(s: np.ndarray, w: np.ndarray, added: int, n: int, spend: float
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """One look of the recursion: from the sub-density w of S on grid s (paths not stopped yet)
    to the boundary that `spend` buys at n, and the sub-density of S there inside it."""
    sd = math.sqrt(added)

    def crossed(ck: float) -> float:
        b = ck * math.sqrt(n)
        return float((stats.norm.sf((b - s) / sd) + stats.norm.cdf((-b - s) / sd)) @ w)

    if spend <= 0 or crossed(40.0) >= spend:  # nothing to spend: no boundary, S spreads on
        ck, half = math.inf, float(np.max(np.abs(s))) + 10 * sd
    else:
        ck = float(optimize.brentq(lambda x: crossed(x) - spend, 0.0, 40.0, xtol=1e-10))
        half = ck * math.sqrt(n)
    grid = np.linspace(-half, half, GRID)
    dens = stats.norm.pdf((grid[:, None] - s[None, :]) / sd) / sd @ w
    return ck, grid, dens * _simpson(grid)


@lru_cache(maxsize=2)  # 4 MB per look; t_boundaries keeps what is computed from them
def _null_t_paths(looks: tuple[int, ...]) -> np.ndarray:
    """|t| at each look for N_PATHS standard-normal paths (float32, shape paths x looks). Block
    b draws its values seed by seed from its own generator, so the first n seeds of a path do
    not depend on the last look: a schedule's prefix gets the same boundaries."""
    out = np.empty((N_PATHS, len(looks)), dtype=np.float32)
    for b, start in enumerate(range(0, N_PATHS, CHUNK)):
        rng = np.random.default_rng([PATH_SEED, b])
        x = rng.standard_normal((looks[-1], CHUNK), dtype=np.float32)
        for k, n in enumerate(looks):  # centred sums of squares: no cancellation at small n
            mean = x[:n].mean(axis=0, dtype=np.float64)
            sd = x[:n].std(axis=0, ddof=1, dtype=np.float64)
            with np.errstate(divide="ignore"):
                out[start:start + CHUNK, k] = np.abs(mean) / (sd / math.sqrt(n))
    return out


@lru_cache(maxsize=512)
def t_boundaries(looks: tuple[int, ...], n_max: int, alpha: float) -> tuple[float, ...]:
    """Two-sided boundaries for the paired t statistics at `looks` (seed counts so far, planned
    or not) so that, for normal differences, the chance of first crossing at look k is the
    spending increment of look k: alpha(n_k / n_max) - alpha(n_{k-1} / n_max). The first look's
    boundary is the exact t quantile; later ones are quantiles of simulated null paths that have
    not crossed before (`N_PATHS`, fixed seed). inf where a look has no alpha left to spend."""
    inc = _increments(looks, n_max, alpha)
    c = [float(stats.t.isf(inc[0] / 2, looks[0] - 1))]
    if len(looks) == 1:
        return tuple(c)
    paths = _null_t_paths(tuple(looks))
    alive = paths[:, 0] < c[0]
    for k in range(1, len(looks)):
        count = int(inc[k] * N_PATHS)
        values = paths[alive, k]
        if count < 1 or count >= len(values):
            c.append(math.inf if count < 1 else 0.0)
        else:  # just above the (count + 1)-th largest: `count` live paths cross
            kth = np.partition(values, len(values) - count - 1)[len(values) - count - 1]
            c.append(float(np.nextafter(kth, np.float32(np.inf))))
        alive &= paths[:, k] < c[k]
    return tuple(c)


def holm_step_down(stat: np.ndarray, rejected_before: np.ndarray | int,
                   boundary_by_m: Sequence[float]) -> np.ndarray:
    """Holm's step-down across arms at one look, for many studies at once. `stat`: |t| per
    study and arm (studies x arms; NaN for arms not tested now); `rejected_before`: arms of the
    family already decided helps/hurts; `boundary_by_m[m]`: this look's boundary at level
    alpha / m (index 0 unused). The largest |t| is tested at alpha / m, m = family - rejected;
    each rejection frees its alpha for the rest. Returns the arms rejected now (bool)."""
    stat = np.atleast_2d(np.where(np.isnan(stat), -np.inf, stat))
    bounds = np.asarray(boundary_by_m, dtype=float)
    family = len(bounds) - 1
    count = np.broadcast_to(np.asarray(rejected_before), stat.shape[:1]).astype(int).copy()
    rows = np.arange(stat.shape[0])
    rejected = np.zeros(stat.shape, dtype=bool)
    for _ in range(stat.shape[1]):
        left = np.where(rejected, -np.inf, stat)
        best = left.argmax(axis=1)
        hit = left[rows, best] >= bounds[np.maximum(family - count, 1)]
        if not hit.any():
            break
        rejected[rows[hit], best[hit]] = True
        count += hit
    return rejected


def conditional_power(effect: np.ndarray | float, sd: np.ndarray | float, n: int, n_max: int,
                      min_effect: float, final_boundary: np.ndarray | float) -> np.ndarray:
    """The chance that the t statistic at n_max crosses `final_boundary` if the true mean
    difference were `min_effect` in the direction the estimate leans and sd(d) stayed at the
    current estimate: Phi((n |effect| + (n_max - n) min_effect - c sd sqrt(n_max)) /
    (sd sqrt(n_max - n))). Crossings at intermediate looks are not counted."""
    effect, sd = np.asarray(effect, dtype=float), np.asarray(sd, dtype=float)
    rest = n_max - n
    if rest <= 0:
        raise ValueError(f"no seeds left: n={n} >= n_max={n_max}")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (n * np.abs(effect) + rest * abs(min_effect) - final_boundary * sd * math.sqrt(n_max)
             ) / (sd * math.sqrt(rest))
    return stats.norm.cdf(z)


def fixed_design_seeds(effect: float, sd: float, alpha: float = 0.05,
                       power: float = paired.POWER, arms: int = 1) -> int:
    """Seeds per cell of the fixed design: the paired t-test at alpha / arms (Holm's first step,
    which an arm with the only real effect must pass) detecting `effect` with `power`."""
    return paired.seeds_needed(effect, sd, alpha / arms, power)


def _summary(d: np.ndarray) -> tuple[float, float, float | None]:
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    return mean, sd, (mean / (sd / math.sqrt(n)) if sd > 0 else None)


def _prepare(diffs: Mapping[str, Sequence[float]], looks: Sequence[int],
             decided: Mapping[str, str]) -> tuple[dict[str, np.ndarray], int]:
    arms = {a: np.asarray(v, dtype=float) for a, v in diffs.items() if a not in decided}
    sizes = {len(v) for v in arms.values()}
    if len(sizes) > 1:
        raise ValueError(f"arms still running must have the same n, got {sorted(sizes)}")
    n = sizes.pop() if sizes else looks[-1]
    if n != looks[-1]:
        raise ValueError(f"the arms have {n} differences but this look is at n={looks[-1]}")
    if any(not np.all(np.isfinite(v)) for v in arms.values()):
        raise ValueError("differences must be finite: pair only seeds valued on both sides")
    return arms, n


def look(diffs: Mapping[str, Sequence[float]], looks: Sequence[int], n_max: int,
         alpha: float = 0.05, *, min_effect: float | None = None,
         decided: Mapping[str, str] | None = None, mode: str = "max",
         futility_power: float = FUTILITY_POWER) -> list[dict[str, Any]]:
    """One look of the study. `diffs`: arm -> its per-seed differences (arm - baseline, seeds
    0..n-1); `looks`: n at every look so far, this one last (planned or not); `decided`: arms
    stopped earlier -> their decision (helps/hurts/futile/...), which are not tested again but
    stay in the family. Returns one JSON-ready record per arm tested now: n, effect, sd,
    statistic (paired t), boundary and level (Holm's alpha / m for this arm), decision
    (helps/hurts/continue/futile, or `not resolved` at n_max), verdict (None while continuing),
    reason, the repeated CI (rci_*, level 1 - alpha / family: valid at any stopping time, over
    all arms at once), the plain t interval at 1 - alpha (t_*, not valid after a data-dependent
    stop) and conditional power. The baseline continues while any record continues."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    decided = dict(decided or {})
    looks = tuple(int(n) for n in looks)
    arms, n = _prepare(diffs, looks, decided)
    family = len(set(arms) | set(decided))
    before = sum(v in REJECTED for v in decided.values())
    by_m = [math.inf] + [t_boundaries(looks, n_max, alpha / m)[-1] for m in range(1, family + 1)]
    names = list(arms)
    summary = {a: _summary(arms[a]) for a in names}
    stat = np.array([[abs(summary[a][2]) if summary[a][2] is not None else np.nan
                      for a in names]])
    now = holm_step_down(stat, before, by_m)[0] if names else np.zeros(0, dtype=bool)
    m_after = max(family - before - int(np.sum(now)), 1)
    final = None
    if min_effect is not None and n < n_max:
        final = t_boundaries((*looks, n_max), n_max, alpha / m_after)[-1]
    context = {"n": n, "n_max": n_max, "alpha": alpha, "family": family, "mode": mode,
               "min_effect": min_effect, "futility_power": futility_power, "final": final,
               "rci_boundary": by_m[family], "look": len(looks)}
    m_of = _holm_m(stat[0], now, family - before)
    return [_record(a, summary[a], bool(now[i]), by_m[m_of[i]], alpha / m_of[i], context)
            for i, a in enumerate(names)]


def _holm_m(stat: np.ndarray, rejected: np.ndarray, m: int) -> list[int]:
    """The m of alpha / m each arm was tested at: rejected arms in order of |t|, m, m - 1, ...;
    the rest at what is left."""
    out = [max(m - int(np.sum(rejected)), 1)] * len(stat)
    for i, j in enumerate(sorted(np.flatnonzero(rejected), key=lambda j: -stat[j])):
        out[j] = m - i
    return out


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _record(arm: str, summary: tuple[float, float, float | None], rejected: bool,
            boundary: float, level: float, ctx: dict[str, Any]) -> dict[str, Any]:
    mean, sd, t = summary
    n, n_max = ctx["n"], ctx["n_max"]
    half = stats.t.isf(ctx["alpha"] / 2, n - 1) * sd / math.sqrt(n)
    rci = ctx["rci_boundary"] * sd / math.sqrt(n)
    cp = None
    if ctx["final"] is not None and sd > 0 and not rejected:
        cp = float(conditional_power(mean, sd, n, n_max, ctx["min_effect"], ctx["final"]))
    decision, reason = _decide(mean, t, rejected, cp, boundary, level, ctx)
    return {"arm": arm, "look": ctx["look"], "n": n, "effect": mean, "sd": sd, "statistic": t,
            "boundary": _finite(boundary), "level": level, "decision": decision,
            "verdict": None if decision == "continue" else
            (decision if decision in REJECTED else "not resolved"), "reason": reason,
            "rci_low": _finite(mean - rci), "rci_high": _finite(mean + rci),
            "rci_level": 1 - ctx["alpha"] / ctx["family"], "t_low": mean - half,
            "t_high": mean + half, "t_level": 1 - ctx["alpha"], "conditional_power": cp}


def _decide(mean: float, t: float | None, rejected: bool, cp: float | None, boundary: float,
            level: float, ctx: dict[str, Any]) -> tuple[Decision, str]:
    n, n_max = ctx["n"], ctx["n_max"]
    where = f"look {ctx['look']}, n = {n}"
    if rejected:
        label: Decision = "helps" if (mean > 0) == (ctx["mode"] == "max") else "hurts"
        return label, (f"{label}: |t| = {abs(t):.3g} >= {boundary:.3g}, the boundary of level "
                       f"{level:.3g} (Holm) spent to n/n_max = {n}/{n_max} ({where})")
    if t is None:
        text = "every seed's difference is equal: no spread, no t statistic"
    else:
        text = f"|t| = {abs(t):.3g} < {boundary:.3g}"
    if n >= n_max:
        return "not resolved", f"not resolved: {text} at the last look ({where})"
    if cp is not None and cp < ctx["futility_power"]:
        return "futile", (f"not resolved (futile): were the effect ±{ctx['min_effect']:.4g}, "
                          f"{n_max} seeds would find it with probability {cp:.2f} < "
                          f"{ctx['futility_power']:g} at this sd ({where})")
    return "continue", f"continue: {text} ({where})"


def running(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The arms a look leaves running; the baseline trains more seeds while this is not empty."""
    return [r["arm"] for r in records if r["decision"] == "continue"]
