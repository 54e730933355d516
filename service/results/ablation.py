"""ablation.json: an ablation study's numbers from the values its runs reached.

The tune layer hands over, per cell (the baseline, each arm, or in a factorial design each
combination of arms) and per seed, the metric at the last epoch of the full budget; this module
pairs them by seed with `results.paired`, adjusts across the arms with Holm, adds a factorial
design's main effects and two-way interactions, and each arm's expected best-of-k tuning curve.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from service.metrics import ACCURACIES
from service.results import paired

BASELINE = "baseline"


def display(metric: str) -> tuple[float, str]:
    """How an effect on `metric` is shown: (scale, unit); accuracies in percentage points."""
    return (100.0, " pts") if metric in ACCURACIES else (1.0, "")


def expected_best(values: Sequence[float], mode: str = "max") -> list[float]:
    """The expected best of k trials drawn without replacement from `values`, k = 1..N: the
    unbiased estimator of the expected validation score after k tuning trials (Dodge et al.
    2019's curve; the without-replacement form of Tang et al. 2020).
    E[max_k] = sum_i v_(i) C(i-1, k-1) / C(N, k), with v sorted from worst to best."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    ordered = sorted(finite, reverse=(mode == "min"))  # worst first
    n = len(ordered)
    return [sum(v * math.comb(i - 1, k - 1) for i, v in enumerate(ordered, 1) if i >= k)
            / math.comb(n, k) for k in range(1, n + 1)]


def factors_of(cell: str) -> frozenset[str]:
    """The arms a cell combines: 'a+b' -> {a, b}; the baseline combines none."""
    return frozenset() if cell == BASELINE else frozenset(cell.split("+"))


def factorial_contrasts(values: Mapping[str, Mapping[Any, float | None]], factors: list[str]
                        ) -> dict[str, dict[Any, float]]:
    """Per seed with a value in every cell: each factor's main effect (mean of the cells with
    it minus mean of the cells without) and each pair's interaction (the difference of
    differences: the effect of a with b changed minus the effect of a with b as in the
    baseline, each averaged over the other factors)."""
    cells = {factors_of(c): v for c, v in values.items()}
    seeds = set.intersection(*(set(v) for v in cells.values()))
    seeds = sorted(s for s in seeds
                   if all(v[s] is not None and math.isfinite(v[s]) for v in cells.values()))

    def mean(seed: Any, on: set[str], off: set[str]) -> float:
        """The mean over the cells that change every factor in `on` and none in `off`."""
        picked = [v[seed] for f, v in cells.items() if on <= f and not off & f]
        return sum(picked) / len(picked)

    out: dict[str, dict[Any, float]] = {}
    for a in factors:
        out[a] = {s: mean(s, {a}, set()) - mean(s, set(), {a}) for s in seeds}
    for a, b in combinations(factors, 2):
        out[f"{a}×{b}"] = {s: (mean(s, {a, b}, set()) - mean(s, {b}, {a}))
                           - (mean(s, {a}, {b}) - mean(s, set(), {a, b})) for s in seeds}
    return out


def _untested(name: str, baseline: Mapping[Any, float | None], arm: Mapping[Any, float | None],
              mode: str, alpha: float, **extra: Any) -> dict[str, Any]:
    """An arm with fewer than two seeds valued on both sides: no statistics, and why."""
    n = len(paired.valued_pairs(baseline, arm))
    missing = sorted(s for s in baseline.keys() | arm.keys()
                     if baseline.get(s) is None or arm.get(s) is None)
    numbers = dict.fromkeys(("baseline_mean", "arm_mean", "effect", "ci_low", "ci_high",
                             "boot_low", "boot_high", "p", "p_perm", "p_adjusted", "d_z",
                             "win_share", "mde"))
    reason = (f"not resolved: only {n} seed(s) have a value for both the baseline and the arm "
              f"(no value at seeds {missing}: see excluded)")
    return {"name": name, "n": n, **numbers, "verdict": "not resolved", "reason": reason,
            "per_seed": [], "mode": mode, "alpha": alpha, "notes": [], **extra}


def _row(result: paired.ArmResult, **extra: Any) -> dict[str, Any]:
    row = dataclasses.asdict(result)
    row["notes"] = list(row["notes"])
    return {**row, **extra}


def study(*, name: str, run_id: str, metric: str, mode: str, alpha: float, design: str,
          epochs: int, seeds: list[int], cells: Mapping[str, Mapping[str, Any]],
          changes: Mapping[str, Mapping[str, Any]],
          values: Mapping[str, Mapping[int, float | None]],
          tuned: Mapping[str, Mapping[str, Any]] | None = None,
          tuning: Mapping[str, Sequence[float]] | None = None,
          tuning_space: Mapping[str, Any] | None = None, tuning_trials: int | None = None,
          excluded: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """ablation.json's content. `cells` maps each cell (baseline first) to its settings,
    `changes` each arm to what it changes, `values[cell][seed]` the metric (None: no value),
    `tuned[cell]` the tuned settings and `tuning[cell]` the tuning trials' scores."""
    scale, unit = display(metric)
    tuned = tuned or {}
    arm_cells = [c for c in cells if c != BASELINE]
    testable = [c for c in arm_cells if len(paired.valued_pairs(values[BASELINE], values[c])) >= 2]
    results = dict(zip(testable, paired.analyse_study(
        values[BASELINE], {c: values[c] for c in testable}, mode, alpha, unit, scale),
        strict=True))
    arms = []
    for cell in arm_cells:
        change = {}
        for arm in sorted(factors_of(cell), key=list(changes).index):
            change.update(changes[arm])
        extra = {"changes": change, "settings": dict(cells[cell]), "tuned": tuned.get(cell)}
        arms.append(_row(results[cell], **extra) if cell in results
                    else _untested(cell, values[BASELINE], values[cell], mode, alpha, **extra))
    factorial = None
    if design == "factorial":
        contrasts = factorial_contrasts(values, list(changes))
        family = paired.adjusted([paired.contrast(k, v, mode, alpha, unit, scale)
                                  for k, v in contrasts.items()], unit, scale)
        factorial = {"main_effects": [_row(r) for r in family if "×" not in r.name],
                     "interactions": [_row(r) for r in family if "×" in r.name]}
    tuning_out = None
    if tuning is not None:
        tuning_out = {"trials": tuning_trials, "space": dict(tuning_space or {}),
                      "arms": {c: {"best": tuned.get(c) or None, "values": list(v),
                                   "expected_best": expected_best(v, mode)}
                               for c, v in tuning.items()}}  # best None: nothing to tune by
    return {"name": name, "run_id": run_id, "metric": metric, "mode": mode, "alpha": alpha,
            "design": design, "epochs": epochs, "seeds": list(seeds), "scale": scale,
            "unit": unit,
            "baseline": {"settings": dict(cells[BASELINE]), "tuned": tuned.get(BASELINE),
                         "per_seed": {str(s): v for s, v in values[BASELINE].items()}},
            "arms": arms, "factorial": factorial, "tuning": tuning_out,
            "excluded": [dict(e) for e in excluded]}


SEQUENTIAL_NOTE = ("sequential seeds: the verdict and the repeated CI (rci_*) are the "
                   "group-sequential design's; p and the t interval are fixed-design numbers at "
                   "this n, not valid after a data-dependent stop")


def with_looks(study_: dict[str, Any], schedule: Mapping[str, int], min_effect: float | None,
               looks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A study of sequential seeds: every look's records under `sequential`, and each arm's
    verdict, reason, look and repeated CI from its last record (where it stopped)."""
    last = {r["arm"]: r for r in looks}
    arms = []
    for row in study_["arms"]:
        rec = last.get(row["name"])
        if rec is not None:
            row = {**row, "verdict": rec["verdict"] or "not resolved", "reason": rec["reason"],
                   "decision": rec["decision"], "look": rec["look"], "rci_low": rec["rci_low"],
                   "rci_high": rec["rci_high"], "rci_level": rec["rci_level"],
                   "notes": [*row["notes"], SEQUENTIAL_NOTE]}
        arms.append(row)
    return {**study_, "arms": arms,
            "sequential": {"schedule": dict(schedule), "min_effect": min_effect,
                           "looks": [dict(r) for r in looks]}}


def sentences(ablation: Mapping[str, Any]) -> list[str]:
    """One plain line per arm (and factorial effect): its name and the verdict's reason."""
    lines = [f"{r['name']}: {r['reason']}" for r in ablation["arms"]]
    if ablation.get("factorial"):
        lines += [f"main effect of {r['name']}: {r['reason']}"
                  for r in ablation["factorial"]["main_effects"]]
        lines += [f"interaction {r['name']}: {r['reason']}"
                  for r in ablation["factorial"]["interactions"]]
    return lines
