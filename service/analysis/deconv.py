"""Deconvnet projections (Zeiler & Fergus 2013): one activation projected back to pixels.

The path back mirrors `model.features` in reverse: max-pools are undone with the forward
pass's switches (a pixel that several overlapping windows chose receives their SUM),
activations rectify the signal, convolutions apply their transposed filters (no bias), LRN is
skipped as in the paper, and any other module (average pools, LeNet's subsampling) passes the
signal back through its own linear map (a vector-Jacobian product). The projection starts from
a unit signal at the chosen unit; every step is positively homogeneous, so a projection of the
activation's value is the same picture scaled by that value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.analysis.layers import ACTIVATION_TYPES, all_stage_maps, conv_stages, unit_box
from service.models.lenet import PartialConv2d

SKIPPED = (nn.LocalResponseNorm, nn.Dropout, nn.Identity)
TOP_K = 9  # the paper's top-9 activations per feature map


def _pool_args(m: nn.MaxPool2d) -> dict[str, Any]:
    return dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                dilation=m.dilation, ceil_mode=m.ceil_mode)


def _forward_record(modules: list[nn.Module], x: torch.Tensor) -> tuple[list[Any], torch.Tensor]:
    """Run `modules`, keeping what the way back needs (pool switches, input shapes, inputs);
    returns the records and the output."""
    records: list[Any] = []
    for m in modules:
        if isinstance(m, nn.MaxPool2d):
            out, switches = F.max_pool2d(x, return_indices=True, **_pool_args(m))
            records.append((x.shape, switches))
            x = out
            continue
        records.append(x.shape if isinstance(m, nn.Conv2d | PartialConv2d) else x)
        x = m(x.clone() if isinstance(m, ACTIVATION_TYPES) else x)  # in-place ReLUs
    return records, x


def unpool(signal: torch.Tensor, switches: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """Send each pooled value to the pixel its window chose; pixels chosen twice get the sum."""
    n, c = signal.shape[:2]
    out = signal.new_zeros(n, c, input_shape[-2] * input_shape[-1])
    out.scatter_add_(2, switches.flatten(2), signal.flatten(2))
    return out.view(n, c, *input_shape[-2:])


def _back(m: nn.Module, record: Any, signal: torch.Tensor) -> torch.Tensor:
    if isinstance(m, nn.MaxPool2d):
        return unpool(signal, record[1], record[0])
    if isinstance(m, ACTIVATION_TYPES):
        return F.relu(signal)
    if isinstance(m, SKIPPED):
        return signal
    if isinstance(m, nn.Conv2d):
        return torch.nn.grad.conv2d_input(record, m.weight, signal, m.stride, m.padding,
                                          m.dilation, m.groups)
    if isinstance(m, PartialConv2d):
        return torch.nn.grad.conv2d_input(record, m.dense_weight(), signal)
    _, vjp = torch.func.vjp(m, record)  # linear modules: average pools, subsampling
    return vjp(signal)[0]


@torch.no_grad()
def project(model: nn.Module, images: torch.Tensor, index: int,
            units: torch.Tensor | list[tuple[int, int, int]]) -> torch.Tensor:
    """Deconvnet projection of one unit per image of `features[index]`'s output.

    `units` holds (channel, y, x) per image; returns pixel-space projections (N, C, H, W).
    """
    modules = list(model.features)[: index + 1]
    records, out = _forward_record(modules, images)
    units = torch.as_tensor(units, dtype=torch.long).view(-1, 3)
    signal = torch.zeros_like(out)
    signal[torch.arange(len(images)), units[:, 0], units[:, 1], units[:, 2]] = 1.0
    for m, record in zip(reversed(modules), reversed(records), strict=True):
        signal = _back(m, record, signal)
    return signal


def top_activations(maps: torch.Tensor, channel: int, k: int = TOP_K) -> list[dict[str, Any]]:
    """The k images whose strongest unit in `channel` is largest: image, y, x, value each."""
    flat = maps[:, channel].flatten(1)  # (N, H*W)
    best, where = flat.max(dim=1)
    w = maps.shape[-1]
    order = torch.argsort(best, descending=True)[:k]
    return [{"image": int(i), "y": int(where[i]) // w, "x": int(where[i]) % w,
             "value": float(best[i])} for i in order if best[i] > 0]


def strongest_channels(maps: torch.Tensor, n: int) -> list[int]:
    """The n channels with the largest single activation over the subset."""
    return [int(c) for c in torch.argsort(maps.amax(dim=(0, 2, 3)), descending=True)[:n]]


def crop(img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """(C, H, W) cut to a (top, bottom, left, right) box."""
    t, b, left, r = box
    return img[:, t:b, left:r]


def deconv_layers(model: nn.Module, images: torch.Tensor, channels: int = 4,
                  k: int = TOP_K) -> dict[str, Any]:
    """For each conv stage: its strongest channels, their top-k units, projections and patches.

    Returns {"layers": {name: [{"channel", "top": [...]}]}} plus tensors under "_pictures"
    for the figure (not JSON).
    """
    size = images.shape[-1]
    layers, pictures = {}, {}
    all_maps = all_stage_maps(model, images)
    for stage in conv_stages(model):
        maps = all_maps[stage.name]
        entries = []
        for c in strongest_channels(maps, channels):
            top = top_activations(maps, c, k)
            if not top:
                continue
            idx = torch.tensor([t["image"] for t in top])
            units = [(c, t["y"], t["x"]) for t in top]
            proj = project(model, images[idx], stage.index, units)
            boxes = [unit_box(model, stage.index, t["y"], t["x"], size) for t in top]
            for t, box in zip(top, boxes, strict=True):
                t["box"] = list(box)
            entries.append({"channel": c, "top": top})
            pictures[(stage.name, c)] = [(crop(p, b), crop(images[i], b))
                                         for p, b, i in zip(proj, boxes, idx, strict=True)]
        layers[stage.name] = entries
    return {"layers": layers, "channels_per_layer": channels, "k": k, "_pictures": pictures}


def projection_rgb(p: torch.Tensor) -> np.ndarray:
    """A projection as an (H, W, 3) picture: zero is mid-grey, scaled by its largest |value|."""
    p = p.detach().float()
    p = p / p.abs().max().clamp_min(1e-12) * 0.5 + 0.5
    if p.shape[0] != 3:
        p = p.mean(dim=0, keepdim=True).expand(3, -1, -1)
    return p.permute(1, 2, 0).clamp(0, 1).numpy()


def tile(pictures: list[np.ndarray], cols: int = 3) -> np.ndarray:
    """Up to rows*cols equal-or-smaller (H, W, 3) pictures tiled on a white canvas."""
    if not pictures:
        return np.ones((1, 1, 3))
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    rows = -(-len(pictures) // cols)
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), dtype=np.float32)
    for i, p in enumerate(pictures):
        r, c = divmod(i, cols)
        canvas[r * (h + 1):r * (h + 1) + p.shape[0], c * (w + 1):c * (w + 1) + p.shape[1]] = p
    return canvas


def plot_deconv(fig, result: dict[str, Any], display) -> None:
    """One row per layer; per channel the top-9 projections beside their image patches."""
    pictures = result["_pictures"]
    layers = list(dict.fromkeys(layer for layer, _ in pictures))
    cols = max(sum(1 for key in pictures if key[0] == layer) for layer in layers)
    axes = fig.subplots(len(layers), 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, layer in enumerate(layers):
        axes[r, 0].set_ylabel(layer, fontsize=9)
        for j, c in enumerate(c for name, c in pictures if name == layer):
            pairs = pictures[(layer, c)]
            ax_p, ax_i = axes[r, 2 * j], axes[r, 2 * j + 1]
            ax_p.imshow(tile([projection_rgb(p) for p, _ in pairs]), interpolation="nearest")
            ax_i.imshow(tile([display(img[None])[0] for _, img in pairs]),
                        interpolation="nearest")
            ax_p.set_title(f"map {c}: projections", fontsize=7)
            ax_i.set_title("patches", fontsize=7)
