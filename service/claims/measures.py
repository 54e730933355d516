"""What the claims read from finished claim sweeps: trials grouped by condition and seed, the
claims' rows (a condition's level with its 95% interval; an effect paired by seed with
`service.results.paired`, Holm-adjusted across the claim, and its verdict), and the per-trial
measures that need a trial's checkpoints live in `service.claims.checkpoints` (torch), so that
`claims table` never imports torch. Used by `service.claims`, as `service.report.data` is by
`service.report`."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from service.claims.cells import resolver
from service.metrics import Mode
from service.results.paired import ArmResult, compare, holm, seeds_needed, verdict
from service.results.records import Summary, TrialRecord
from service.results.stats import mean_ci95
from service.rundir import SEED_KEY

Trials = dict[int, TrialRecord]  # seed index -> trial (with its per-epoch history)


class ClaimError(Exception):
    """A problem with the input (claim number, run directory) with one printable message;
    `code`: the exit code it ends the command with (2, bad input, unless a sweep said more)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# --- reading runs ---------------------------------------------------------------------------


def conditions(run: Summary, keys: list[str],
               run_dir: str | Path | None = None) -> dict[tuple, Trials]:
    """Finished trials grouped by the values of `keys`, then by seed index. A grid run's are
    its trial configs'; an ablation run's are its cells' effective settings (`cells.resolver`:
    the baseline, the arm(s), the tuned values read from `run_dir`'s ablation.json, else the
    spec's own)."""
    value = resolver(run, run_dir)
    out: dict[tuple, Trials] = {}
    for t in run.trials:
        if t.failed or not t.history:
            continue
        cond = tuple(value(t.config, k) for k in keys)
        out.setdefault(cond, {})[int(t.config.get(SEED_KEY, 0))] = t
    return out


def final(trial: TrialRecord, key: str = "val_acc") -> float:
    """The value of `key` at the trial's last epoch."""
    return float(trial.history[-1][key])


def crossing(history: list[dict[str, Any]], key: str, level: float,
             start: float) -> float | None:
    """The (linearly interpolated) epoch at which `key` first reaches `level`; the curve starts
    at (0, `start`). None if it never does."""
    prev_e, prev_v = 0.0, start
    for row in history:
        e, v = float(row["epoch"]), float(row[key])
        if v >= level:
            if v == prev_v:
                return e
            return prev_e + (e - prev_e) * (level - prev_v) / (v - prev_v)
        prev_e, prev_v = e, v
    return None


def settled(curve: list[tuple[int, float]], threshold: float = 0.9) -> float:
    """The first epoch from which a layer's CKA to the last epoch stays at or above
    `threshold` (`curve`: [(epoch, cka)] ending at the last epoch)."""
    epoch = curve[-1][0]
    for e, cka in reversed(curve):
        if cka < threshold:
            break
        epoch = e
    return float(epoch)


def level(quantity: str, values: list[float | None], paper: str = "", unit: str = "",
          note: str = "") -> dict[str, Any]:
    """One condition's quantity, not an effect: per-seed values, their mean and the half-width
    of its 95% interval (`mean_ci95`, the report's own); no verdict."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    mean, half = mean_ci95(values) if values else (None, None)
    return {"quantity": quantity, "kind": "level", "unit": unit,
            "per_seed": [round(v, 5) for v in values], "n": len(values), "mean": mean,
            "ci95": half, "paper": paper, "expect": None, "verdict": None, "note": note}


def by_seed(trials: Trials, f: Callable[[TrialRecord], float | None]) -> dict[int, float | None]:
    """f of each trial, by seed index (None where f has no value)."""
    return {seed: f(t) for seed, t in trials.items()}


# The paired verdict (service.results.paired.verdict, in the paper's direction) in claim words.
WORDS = {"helps": "agrees", "hurts": "opposite", "not resolved": "not resolved"}


def effect(quantity: str, baseline: Mapping[Any, float | None],
           arm: Mapping[Any, float | None], paper: str = "", expect: str | None = None,
           unit: str = "", note: str = "", ratio: bool = False,
           target: float | None = None) -> dict[str, Any]:
    """arm - baseline paired by seed with `service.results.paired.compare`: the mean difference,
    its t and BCa intervals, p, sign-flip p, d_z, win share and MDE.

    `ratio`: arm / baseline, compared on the logs (a value <= 0 has none and is left out), so
    the effect is reported as the geometric mean of the per-seed ratios, exp of its interval
    and of the MDE (a factor either way). `expect`: the paper's direction ("+": arm above
    baseline, "-": below, None: no verdict). The verdict and the Holm-adjusted p across the
    claim's rows come from `finish`.

    `target`: the paper's effect carried over to this row's units (a factor for a ratio); the
    row then says how many paired seeds the t-test at alpha needs to detect it with the
    engine's power at the spread measured here (`paired.seeds_needed`): `n_target`."""
    mode: Mode = "min" if expect == "-" else "max"
    out: dict[str, Any] = {"quantity": quantity, "kind": "ratio" if ratio else "diff",
                           "unit": unit, "paper": paper, "expect": expect,
                           "zero": 1.0 if ratio else 0.0, "note": note, "target": target,
                           "n_target": None}
    try:
        result = compare(quantity, _logs(baseline) if ratio else baseline,
                         _logs(arm) if ratio else arm, mode)
    except ValueError as err:  # fewer than 2 seeds with a value on both sides
        return {**out, "n": None, "mean": None, "verdict": None, "notes": [str(err)],
                "values": {"baseline": _clean(baseline), "arm": _clean(arm)}}
    scale: Callable[[float], float] = math.exp if ratio else float
    rows = [{"seed": r["seed"],
             "baseline": round(scale(r["baseline"]), 5), "arm": round(scale(r["arm"]), 5),
             ("ratio" if ratio else "diff"): round(scale(r["diff"]), 5)}
            for r in result.per_seed]
    return {**out, "n": result.n, "mean": scale(result.effect),
            "ci_low": scale(result.ci_low), "ci_high": scale(result.ci_high),
            "boot_low": _num(scale(result.boot_low)), "boot_high": _num(scale(result.boot_high)),
            "p": result.p, "p_holm": None, "holm_k": None, "p_perm": result.p_perm,
            "d_z": result.d_z, "win_share": result.win_share,
            "mde": None if result.mde is None else scale(result.mde),
            "verdict": None, "notes": list(result.notes), "per_seed": rows,
            "n_target": _n_target(target, result, ratio), "_result": result}


def _n_target(target: float | None, result: ArmResult, ratio: bool) -> int | None:
    """Paired seeds that detect `target` at the spread of `result`'s differences (None without a
    target or without spread; more than MAX_SEEDS counts as MAX_SEEDS + 1)."""
    diffs = [r["diff"] for r in result.per_seed]
    if target is None or result.p is None or len(diffs) < 2:  # p is None: no spread
        return None
    sd = statistics.stdev(diffs)
    size = math.log(target) if ratio else target
    if size == 0 or not math.isfinite(size):
        return None
    try:
        return seeds_needed(abs(size), abs(sd), max_n=MAX_SEEDS)
    except ValueError:  # beyond MAX_SEEDS
        return MAX_SEEDS + 1


MAX_SEEDS = 100_000  # the paired-seed counts worth computing exactly


def per_seed_diffs(row: dict[str, Any]) -> dict[Any, float]:
    """An `effect` row's per-seed differences (on the logs for a ratio), unrounded; empty when
    it had too few seeds. Only before `finish`."""
    result = row.get("_result")
    return {} if result is None else {r["seed"]: r["diff"] for r in result.per_seed}


def finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A claim's rows made final: the p of the effects with a paper direction adjusted across
    the claim with Holm (`paired.holm`; an effect without spread has no p and counts as 1, as in
    `paired.analyse_study`), each such row's verdict from its adjusted p (`paired.verdict`), and
    the ArmResults dropped."""
    tested = [r for r in rows if r.get("_result") is not None and r["expect"] is not None]
    adjusted = holm([r["_result"].p if r["_result"].p is not None else 1.0 for r in tested])
    for r, p_holm in zip(tested, adjusted, strict=True):
        result = dataclasses.replace(r["_result"],
                                     p_adjusted=None if r["p"] is None else p_holm)
        label, _ = verdict(result)
        r.update(p_holm=result.p_adjusted, holm_k=len(tested), verdict=WORDS[label])
    for r in rows:
        r.pop("_result", None)
    return rows


def _logs(values: Mapping[Any, float | None]) -> dict[Any, float | None]:
    return {k: math.log(v) if v is not None and math.isfinite(v) and v > 0 else None
            for k, v in values.items()}


def _num(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _clean(values: Mapping[Any, float | None]) -> dict[str, float | None]:
    return {str(k): _num(v) for k, v in values.items()}


def points(trial: TrialRecord) -> float:
    """The trial's last val_acc in percentage points."""
    return 100.0 * final(trial)


def error_share(trials: Trials, share: float) -> float:
    """`share` of the trials' mean final validation error, in points: a paper's error change
    relative to its own error, carried over to this data's error."""
    errors = [100.0 - points(t) for t in trials.values()]
    return share * sum(errors) / len(errors) if errors else float("nan")


def need(conds: dict[tuple, Trials], *wanted: tuple) -> list[Trials]:
    """The trials of each wanted condition; ClaimError naming those the run lacks."""
    missing = [w for w in wanted if w not in conds]
    if missing:
        raise ClaimError(f"the run has no finished trials for {missing}; found "
                         f"{sorted(conds, key=str)}")
    return [conds[w] for w in wanted]


# --- per-trial analyses (need the checkpoints) ----------------------------------------------
