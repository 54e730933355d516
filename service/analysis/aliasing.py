"""Aliasing in layer 2: the checkerboard energy of layer-2 feature maps (ZFNet, conv1 stride).

ZFNet blames conv1's stride 4 for "aliasing artifacts" in layer 2. We measure them as the share
of each layer-2 map's energy (mean removed) at the map grid's Nyquist frequencies: the
patterns (-1)^y, (-1)^x and (-1)^(x+y), i.e. period-2 stripes and the checkerboard.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from service.analysis.layers import conv_stages, stage_maps


def _nyquist_patterns(h: int, w: int) -> torch.Tensor:
    """The three Nyquist patterns of an h x w grid, each with unit norm: (3, h, w)."""
    sy = (-1.0) ** torch.arange(h, dtype=torch.float64)
    sx = (-1.0) ** torch.arange(w, dtype=torch.float64)
    pats = torch.stack([sy[:, None].expand(h, w), sx[None, :].expand(h, w), sy[:, None] * sx])
    return (pats / pats.flatten(1).norm(dim=1).view(3, 1, 1)).float()


def nyquist_energy(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Nyquist energy, total energy) of each map of (N, C, H, W), the mean removed first.

    On an even-sized grid the Nyquist energy is exactly the energy of the DFT bins
    (H/2, 0), (0, W/2) and (H/2, W/2) (Parseval); on odd sizes it is the projection onto
    the same alternating patterns.
    """
    m = maps.double() - maps.double().mean(dim=(2, 3), keepdim=True)
    h, w = m.shape[-2:]
    coeff = torch.einsum("nchw,phw->ncp", m, _nyquist_patterns(h, w).double())
    return coeff.pow(2).sum(dim=-1), m.pow(2).sum(dim=(2, 3))


def layer2_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Rectified conv2 maps of `images`: (N, C, H, W)."""
    stages = conv_stages(model)
    if len(stages) < 2:
        raise ValueError("the model has no second conv layer")
    return stage_maps(model, images, stages[1].index)


def layer2_aliasing(model: nn.Module, images: torch.Tensor) -> float:
    """Share of layer-2 map energy at the Nyquist frequencies, pooled over maps and images.

    0 for perfectly smooth maps; a white-noise map scores about 3 / (H * W); a pure
    checkerboard scores 1. Returns 0.0 when every map is constant.
    """
    nyq, total = nyquist_energy(layer2_maps(model, images))
    return float(nyq.sum() / total.sum()) if total.sum() > 0 else 0.0


def aliasing_stats(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """layer2_aliasing plus its per-channel values, the map size and the white-noise baseline."""
    maps = layer2_maps(model, images)
    nyq, total = nyquist_energy(maps)
    per_channel = nyq.sum(0) / total.sum(0).clamp_min(1e-30)
    h, w = maps.shape[-2:]
    conv1 = conv_stages(model)[0].conv
    stride = getattr(conv1, "stride", (1,))[0]
    share = float(nyq.sum() / total.sum()) if total.sum() > 0 else 0.0
    return {
        "layer": "conv2",
        "aliasing": share,
        # Comparable across map sizes (conv1 stride 4 gives smaller conv2 maps than stride 2).
        "aliasing_vs_noise": share / (3.0 / (h * w)),
        "per_channel": [float(v) for v in per_channel],
        "map_size": [h, w],
        "white_noise_baseline": 3.0 / (h * w),
        "conv1_stride": int(stride),
        "images": len(images),
    }


def plot_aliasing(fig, model: nn.Module, images: torch.Tensor, stats: dict[str, Any]) -> None:
    """Mean layer-2 power spectrum (left) and the most checkerboarded maps of one image."""
    maps = layer2_maps(model, images)
    m = maps - maps.mean(dim=(2, 3), keepdim=True)
    spectrum = torch.fft.fftshift(torch.fft.fft2(m).abs().pow(2).mean(dim=(0, 1)))
    axes = fig.subplots(2, 5)
    big = fig.add_subplot(1, 5, (1, 2))
    for ax in axes[:, :2].flat:
        ax.remove()
    big.imshow(np.log10(spectrum.numpy() + 1e-12), cmap="magma")
    big.set_title(f"conv2 power spectrum (log)\nNyquist share {stats['aliasing']:.3f}",
                  fontsize=9)
    big.set_xlabel("corners/edges = Nyquist")
    big.set_xticks([])
    big.set_yticks([])
    top = np.argsort(stats["per_channel"])[::-1][:6]
    for ax, c in zip(axes[:, 2:].flat, top, strict=False):
        ax.imshow(maps[0, c].numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(f"map {c}: {stats['per_channel'][c]:.2f}", fontsize=8)
        ax.axis("off")
