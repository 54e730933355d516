"""Feature evolution during training: a few fixed units per layer, projected at every epoch.

ZFNet Fig. 4: lower layers settle within a few epochs, upper ones only much later. The units
are chosen once, on the last checkpoint (each layer's strongest channels); for every epoch
whose checkpoint Ray Train registered, the strongest activation of each unit over the image
subset is projected back to pixels with the deconvnet.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.analysis.deconv import (
    crop,
    project,
    projection_rgb,
    strongest_channels,
    top_activations,
)
from service.analysis.layers import all_stage_maps, conv_stages, unit_box
from service.analysis.load import load_weights


def feature_evolution(model: nn.Module, checkpoints: list[tuple[int, Path]],
                      images: torch.Tensor, units_per_layer: int = 2) -> dict[str, Any]:
    """Rows (layer, channel) x columns (epochs) of strongest projections.

    `model` carries the final weights (the units are picked on it) and is left unchanged.
    """
    stages = conv_stages(model)
    final = all_stage_maps(model, images)
    units = [(s, c) for s in stages for c in strongest_channels(final[s.name], units_per_layer)]
    work = copy.deepcopy(model).eval()
    size = images.shape[-1]
    epochs, rows = [], {f"{s.name}/{c}": [] for s, c in units}
    pictures: dict[tuple[str, int], list[np.ndarray | None]] = {(s.name, c): [] for s, c in units}
    for epoch, ckpt in checkpoints:
        load_weights(work, ckpt)
        epochs.append(epoch)
        maps = all_stage_maps(work, images)
        for s, c in units:
            top = top_activations(maps[s.name], c, k=1)
            if not top:  # the unit never fires on this subset at this epoch
                rows[f"{s.name}/{c}"].append(None)
                pictures[(s.name, c)].append(None)
                continue
            t = top[0]
            i = t["image"]
            proj = project(work, images[i:i + 1], s.index, [(c, t["y"], t["x"])])[0]
            box = unit_box(work, s.index, t["y"], t["x"], size)
            rows[f"{s.name}/{c}"].append({"image": i, "y": t["y"], "x": t["x"],
                                           "value": t["value"]})
            pictures[(s.name, c)].append(projection_rgb(crop(proj, box)))
    return {"epochs": epochs, "units": rows, "_pictures": pictures}


def plot_evolution(fig, result: dict[str, Any]) -> None:
    """A grid: one row per (layer, channel) unit, one column per epoch."""
    pictures, epochs = result["_pictures"], result["epochs"]
    keys = list(pictures)
    axes = fig.subplots(len(keys), len(epochs), squeeze=False)
    for r, key in enumerate(keys):
        for col, pic in enumerate(pictures[key]):
            ax = axes[r, col]
            if pic is None:
                ax.text(0.5, 0.5, "silent", ha="center", va="center", fontsize=6)
            else:
                ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"epoch {epochs[col]}", fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{key[0]}\nmap {key[1]}", fontsize=6)
