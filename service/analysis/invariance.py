"""Invariance (ZFNet Fig. 5): translate, scale and rotate a few images and watch the features.

Per layer: the normalised Euclidean distance ||f(x) - f(T x)|| / ||f(x)|| between the original
and transformed feature vectors; and the true-class probability. Transforms are torchvision's
v2 affine ops applied in [0, 1] pixel space, uncovered pixels filled with black (digits'
background), then normalised again as the model expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from service.analysis.layers import conv_stages
from service.training.data import Datasets


def sweeps(image_size: int) -> dict[str, list[float]]:
    """Parameters of the three sweeps: vertical shift (pixels), scale factor, angle (degrees)."""
    shift = max(1, image_size // 4)
    return {
        "translation": [float(v) for v in np.linspace(-shift, shift, 9).round()],
        "scale": [float(v) for v in np.linspace(0.6, 1.8, 7).round(2)],
        "rotation": [float(v) for v in range(0, 361, 30)],
    }


def _transform(kind: str, value: float, img01: torch.Tensor) -> torch.Tensor:
    angle, translate, scale = 0.0, [0, 0], 1.0
    if kind == "translation":
        translate = [0, int(value)]
    elif kind == "scale":
        scale = value
    else:
        angle = value
    return TF.affine(img01, angle=angle, translate=translate, scale=scale, shear=[0.0, 0.0],
                     interpolation=v2.InterpolationMode.BILINEAR, fill=0.0)


def _pixel_space(datasets: Datasets | None) -> tuple[Callable, Callable]:
    """(to [0, 1], back to normalised) for the data's normalisation (identity if unknown)."""
    if datasets is None or datasets.mean is None or datasets.std is None:
        return (lambda x: x), (lambda x: x)
    mean = torch.tensor(datasets.mean).view(-1, 1, 1)
    std = torch.tensor(datasets.std).view(-1, 1, 1)
    return (lambda x: x * std + mean), (lambda x: (x - mean) / std)


@torch.no_grad()
def layer_vectors(model: nn.Module, images: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                                    torch.Tensor]:
    """Flattened features of every conv stage and of the classifier's last input; logits."""
    grabbed: dict[str, torch.Tensor] = {}
    hooks = []
    for s in conv_stages(model):
        hooks.append(model.features[s.index].register_forward_hook(
            lambda _m, _i, out, name=s.name: grabbed.__setitem__(name, out.flatten(1).clone())))
    hooks.append(model.classifier[-1].register_forward_hook(
        lambda _m, inp, _o: grabbed.__setitem__("penultimate", inp[0].flatten(1).clone())))
    try:
        logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return grabbed, logits


def invariance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               datasets: Datasets | None = None, n_images: int = 5) -> dict[str, Any]:
    """Distances per (sweep, layer, step) averaged over images, and per-image true-class
    probabilities per (sweep, step)."""
    to01, back = _pixel_space(datasets)
    images, labels = images[:n_images], labels[:n_images]
    out: dict[str, Any] = {"images": len(images), "sweeps": {}}
    for kind, values in sweeps(images.shape[-1]).items():
        dist: dict[str, list[list[float]]] = {}
        probs = []
        for img, label in zip(images, labels, strict=True):
            batch = torch.stack([back(_transform(kind, v, to01(img))) for v in values])
            ref, _ = layer_vectors(model, img[None])
            feats, logits = layer_vectors(model, batch)
            for name, f in feats.items():
                d = (f - ref[name]).norm(dim=1) / ref[name].norm(dim=1).clamp_min(1e-12)
                dist.setdefault(name, []).append(d.tolist())
            probs.append(F.softmax(logits, dim=1)[:, int(label)].tolist())
        out["sweeps"][kind] = {
            "values": values,
            "distance": {k: np.mean(v, axis=0).tolist() for k, v in dist.items()},
            "true_prob": probs,
        }
    return out


def plot_invariance(fig, result: dict[str, Any]) -> None:
    """Columns: translation, scale, rotation; rows: distance per layer, true-class prob."""
    units = {"translation": "vertical shift (px)", "scale": "scale", "rotation": "angle (deg)"}
    sweeps_ = result["sweeps"]
    axes = fig.subplots(2, len(sweeps_), squeeze=False)
    for col, (kind, res) in enumerate(sweeps_.items()):
        x = res["values"]
        for name, d in res["distance"].items():
            axes[0, col].plot(x, d, marker=".", label=name)
        axes[0, col].set(title=kind, ylabel="normalised distance" if col == 0 else None)
        for i, p in enumerate(res["true_prob"]):
            axes[1, col].plot(x, p, marker=".", label=f"image {i}")
        axes[1, col].set(xlabel=units[kind], ylim=(-0.02, 1.02),
                         ylabel="p(true class)" if col == 0 else None)
    axes[0, -1].legend(fontsize=6)
    axes[1, -1].legend(fontsize=6)
