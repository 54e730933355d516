"""Occlusion sensitivity (ZFNet Fig. 7): a grey square slid over an image.

Per square position: the probability of the true class, the most likely class, and the total
activation of the clean image's strongest map in the top conv layer (conv5 on AlexNet/ZFNet,
C5 on LeNet-5). The grey is 0 in normalised units, i.e. the training set's mean colour.
captum's `Occlusion` gives the pixel-level map of the true-class probability drop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from service.analysis.layers import conv_stages

GREY = 0.0  # normalised units: the dataset mean


def positions(size: int, window: int, stride: int) -> list[int]:
    """Top (or left) offsets of the square along one side, as captum's Occlusion places them:
    the last square may stick out past the edge, so every pixel is covered."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def occluded(image: torch.Tensor, window: int, stride: int, fill: float = GREY) -> torch.Tensor:
    """Every occluded copy of one (C, H, W) image, row-major over positions: (P, C, H, W)."""
    offs = positions(image.shape[-1], window, stride)
    out = image.expand(len(offs) ** 2, *image.shape).clone()
    for n, (t, left) in enumerate((t, left) for t in offs for left in offs):
        out[n, :, t:t + window, left:left + window] = fill
    return out


@torch.no_grad()
def occlusion_maps(model: nn.Module, image: torch.Tensor, label: int, window: int,
                   stride: int, batch: int = 128) -> dict[str, Any]:
    """The three panels for one image as (rows, cols) grids, plus the clean values."""
    top = conv_stages(model)[-1]
    head = nn.Sequential(*list(model.features)[: top.index + 1])
    clean_map = head(image[None])[0]  # (C, h, w)
    channel = int(clean_map.amax(dim=(1, 2)).argmax())
    clean_prob = F.softmax(model(image[None]), dim=1)[0]
    probs, acts = [], []
    for chunk in occluded(image, window, stride).split(batch):
        probs.append(F.softmax(model(chunk), dim=1))
        acts.append(head(chunk)[:, channel].sum(dim=(1, 2)))
    side = len(positions(image.shape[-1], window, stride))
    p = torch.cat(probs)  # (P, classes)
    return {
        "label": int(label),
        "window": window,
        "stride": stride,
        "feature_layer": top.name,
        "feature_channel": channel,
        "clean_true_prob": float(clean_prob[label]),
        "clean_class": int(clean_prob.argmax()),
        "clean_activation": float(clean_map[channel].sum()),
        "true_prob": p[:, label].view(side, side).tolist(),
        "top_class": p.argmax(dim=1).view(side, side).tolist(),
        "activation": torch.cat(acts).view(side, side).tolist(),
    }


def captum_drop(model: nn.Module, image: torch.Tensor, label: int, window: int,
                stride: int) -> torch.Tensor:
    """captum's Occlusion of the true-class probability: per pixel, the mean drop over the
    squares covering it (0 where none does); (C, H, W)."""
    def prob(x: torch.Tensor) -> torch.Tensor:
        return F.softmax(model(x), dim=1)

    c = image.shape[0]
    with torch.no_grad():
        attr = Occlusion(prob).attribute(
            image[None], sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=GREY, target=int(label), perturbations_per_eval=64)
    return attr[0]


def occlusion_study(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    n_images: int = 3) -> dict[str, Any]:
    """Occlusion panels for the first `n_images` images; the square is a quarter of the side."""
    size = images.shape[-1]
    window = max(1, size // 4)
    stride = max(1, size // 16)
    per_image, drops = [], []
    for i in range(min(n_images, len(images))):
        res = occlusion_maps(model, images[i], int(labels[i]), window, stride)
        res["image"] = i
        per_image.append(res)
        drops.append(captum_drop(model, images[i], int(labels[i]), window, stride))
    return {"images": per_image, "_drops": drops}


def plot_occlusion(fig, result: dict[str, Any], images: torch.Tensor, display) -> None:
    """Per image a row: image, captum drop map, true-class prob, top class, map activation."""
    rows = result["images"]
    axes = fig.subplots(len(rows), 5, squeeze=False)
    for r, (res, drop) in enumerate(zip(rows, result["_drops"], strict=True)):
        ax = axes[r]
        ax[0].imshow(display(images[res["image"]][None])[0])
        ax[0].set_title(f"label {res['label']}, p={res['clean_true_prob']:.2f}", fontsize=7)
        ax[1].imshow(drop.mean(dim=0).numpy(), cmap="RdBu_r",
                     vmin=-float(drop.abs().max()), vmax=float(drop.abs().max()))
        ax[1].set_title("p(true) drop (captum)", fontsize=7)
        im = ax[2].imshow(np.array(res["true_prob"]), cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax[2], fraction=0.046)
        ax[2].set_title("p(true class)", fontsize=7)
        classes = max(10, int(np.max(res["top_class"])) + 1)
        ax[3].imshow(np.array(res["top_class"]), cmap="tab10" if classes <= 10 else "turbo",
                     vmin=0, vmax=classes - 1)
        ax[3].set_title("most likely class", fontsize=7)
        for (y, x), cls in np.ndenumerate(np.array(res["top_class"])):
            if (y + x) % 3 == 0:
                ax[3].text(x, y, str(cls), ha="center", va="center", fontsize=4)
        ax[4].imshow(np.array(res["activation"]), cmap="magma")
        ax[4].set_title(f"{res['feature_layer']} map {res['feature_channel']} total", fontsize=7)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
