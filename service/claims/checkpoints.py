"""The claims' measures that read a trial's checkpoints: eval-mode training accuracy, each conv
layer's CKA to its last-epoch features at every epoch, and invariance. They import torch; the
rows and their statistics (`service.claims.measures`) do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from service.analysis import AnalysisError, load_trial
from service.analysis.invariance import invariance
from service.analysis.layers import all_stage_maps
from service.analysis.load import load_weights, val_images
from service.claims.measures import ClaimError
from service.config.data import AugmentConfig
from service.results.records import TrialRecord
from service.training.loop import prepare


def loaded_trial(run_dir: Path, trial: TrialRecord):
    """The trial's model at its last checkpoint (service.analysis); ClaimError if unloadable."""
    try:
        return load_trial(run_dir, trial.trial_id)
    except AnalysisError as err:
        raise ClaimError(str(err)) from None


def train_accuracy(run_dir: Path, trial: TrialRecord) -> float:
    """Accuracy on the images the trial trained on (its split, its `train_subset`) in eval mode
    (no dropout) and without augmentation (no crop, no lighting) at the last checkpoint."""
    loaded = loaded_trial(run_dir, trial)
    train = loaded.datasets.train
    if loaded.config.data.augmentation != AugmentConfig():  # the same images, unaugmented
        plain = loaded.config.model_copy(update={"data": loaded.config.data.model_copy(
            update={"augmentation": AugmentConfig()})})
        _, datasets = prepare(plain)
        train = datasets.train
    loader = torch.utils.data.DataLoader(train, batch_size=256)
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


def cka_to_last(run_dir: Path, trial: TrialRecord, images: int = 128
                ) -> dict[str, list[tuple[int, float]]]:
    """Per conv layer, its features' linear CKA to the last epoch's at every registered
    checkpoint, [(epoch, cka)] (on fixed validation images)."""
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
    return curves


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
