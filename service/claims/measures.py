"""What the claims read from finished claim sweeps: trials grouped by condition and seed, paired
effects with their 95% interval and verdict, and the per-trial measures that need a trial's
checkpoints (eval-mode training accuracy, per-layer settling epochs, invariance). Used by
`service.claims`, as `service.report.data` is by `service.report`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from service.analysis import AnalysisError, load_trial
from service.analysis.invariance import invariance
from service.analysis.layers import all_stage_maps
from service.analysis.load import load_weights, val_images
from service.results.records import Summary, TrialRecord
from service.results.stats import mean_ci95
from service.tune.paths import SEED_KEY

Trials = dict[int, TrialRecord]  # seed index -> trial (with its per-epoch history)


class ClaimError(Exception):
    """A problem with the input (claim number, run directory) with one printable message."""


# --- reading runs ---------------------------------------------------------------------------


def conditions(run: Summary, keys: list[str]) -> dict[tuple, Trials]:
    """Finished trials grouped by the values of `keys`, then by seed index."""
    out: dict[tuple, Trials] = {}
    for t in run.trials:
        if t.failed or not t.history:
            continue
        cond = tuple(t.config.get(k) for k in keys)
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


def row(quantity: str, values: list[float], paper: str, expect: str | None = None,
        zero: float = 0.0, unit: str = "", note: str = "") -> dict[str, Any]:
    """One measured quantity: per-seed values, mean, 95% CI and the verdict.

    `expect` is the paper's direction relative to `zero` ("+" above, "-" below, None: a level,
    not an effect)."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    mean, half = mean_ci95(values) if values else (math.nan, None)
    verdict = None
    if expect is not None and half is not None:
        low, high = mean - half, mean + half
        above, below = low > zero, high < zero
        verdict = ("agrees" if (above and expect == "+") or (below and expect == "-")
                   else "opposite" if above or below else "inconclusive")
    return {"quantity": quantity, "unit": unit, "per_seed": [round(v, 5) for v in values],
            "n": len(values), "mean": mean, "ci95": half, "paper": paper, "expect": expect,
            "zero": zero, "verdict": verdict, "note": note}


def points(trial: TrialRecord) -> float:
    """The trial's last val_acc in percentage points."""
    return 100.0 * final(trial)


def need(conds: dict[tuple, Trials], *wanted: tuple) -> list[Trials]:
    """The trials of each wanted condition; ClaimError naming those the run lacks."""
    missing = [w for w in wanted if w not in conds]
    if missing:
        raise ClaimError(f"the run has no finished trials for {missing}; found "
                         f"{sorted(conds, key=str)}")
    return [conds[w] for w in wanted]


# --- per-trial analyses (need the checkpoints) ----------------------------------------------


def loaded_trial(run_dir: Path, trial: TrialRecord):
    """The trial's model at its last checkpoint (service.analysis); ClaimError if unloadable."""
    try:
        return load_trial(run_dir, trial.trial_id)
    except AnalysisError as err:
        raise ClaimError(str(err)) from None


def train_accuracy(run_dir: Path, trial: TrialRecord) -> float:
    """Accuracy on the training split in eval mode (no dropout) at the last checkpoint."""
    loaded = loaded_trial(run_dir, trial)
    loader = torch.utils.data.DataLoader(loaded.datasets.train, batch_size=256)
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((loaded.model(x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) between two (n, features) activation matrices."""
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    # ||Y'X||^2 / (||X'X|| ||Y'Y||) through the n x n Gram matrices: a conv layer has far more
    # features (channels x positions) than there are images.
    k, g = x @ x.T, y @ y.T
    return float((k * g).sum() / (k.norm() * g.norm()).clamp_min(1e-12))


def settle_epochs(run_dir: Path, trial: TrialRecord, level: float = 0.9,
                  images: int = 128) -> dict[str, float]:
    """Per conv layer, the first epoch from which its features' CKA to the last epoch's stays
    at or above `level` (on fixed validation images, every registered checkpoint)."""
    loaded = loaded_trial(run_dir, trial)
    x, _ = val_images(loaded.datasets, images)
    with torch.no_grad():
        last = {k: v.flatten(1).double() for k, v in all_stage_maps(loaded.model, x).items()}
        curves: dict[str, list[tuple[int, float]]] = {k: [] for k in last}
        for epoch, ckpt in loaded.checkpoints:
            load_weights(loaded.model, ckpt)
            maps = all_stage_maps(loaded.model, x)
            for k, v in maps.items():
                curves[k].append((epoch, linear_cka(v.flatten(1).double(), last[k])))
    out = {}
    for layer, curve in curves.items():
        settled = curve[-1][0]
        for epoch, cka in reversed(curve):
            if cka < level:
                break
            settled = epoch
        out[layer] = float(settled)
    return out


def invariance_probs(run_dir: Path, trial: TrialRecord, images: int = 64
                     ) -> dict[str, float]:
    """Mean true-class probability: untransformed, shifted by the smallest shift tried, scaled
    by the nearest scales to 1, and rotated by 90 and 180 degrees."""
    loaded = loaded_trial(run_dir, trial)
    x, y = val_images(loaded.datasets, images)
    res = invariance(loaded.model, x, y, loaded.datasets, n_images=images)["sweeps"]

    def mean_prob(kind: str, pick: Callable[[float], bool]) -> float:
        values, probs = res[kind]["values"], res[kind]["true_prob"]
        cols = [i for i, v in enumerate(values) if pick(v)]
        return sum(p[i] for p in probs for i in cols) / (len(probs) * len(cols))

    shift = min(abs(v) for v in res["translation"]["values"] if v)
    scales = sorted((abs(v - 1.0), v) for v in res["scale"]["values"] if v != 1.0)
    near = {v for d, v in scales if d == scales[0][0]}
    return {"identity": mean_prob("rotation", lambda v: v == 0),
            "shift": mean_prob("translation", lambda v: abs(v) == shift),
            "scale": mean_prob("scale", lambda v: v in near),
            "rot90": mean_prob("rotation", lambda v: v in (90, 270)),
            "rot180": mean_prob("rotation", lambda v: v == 180),
            "shift_px": shift, "scales": sorted(near)}
