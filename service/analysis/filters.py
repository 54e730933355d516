"""First-layer filters: an image grid, per-filter RMS, dead filters and a frequency profile.

ZFNet's argument for 7x7/2 over 11x11/4: AlexNet's layer-1 filters are a mix of very high and
very low frequencies with little in between, and some of them are dead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from service.analysis.layers import conv_stages

DEAD_RMS_RATIO = 0.1  # a filter is dead (weights) below this fraction of the layer's typical RMS
TYPICAL_QUANTILE = 0.9  # "typical" RMS: the 90th percentile, robust to most filters dying
FFT_SIZE = 64  # filters are zero-padded to this before the FFT (a fine frequency grid)
BANDS = ("low", "mid", "high")  # radial frequency / Nyquist in [0, 1/3), [1/3, 2/3), >= 2/3


def first_layer_weight(model: nn.Module) -> torch.Tensor:
    """conv1's (out, in, k, k) weight (LeNet's partial C3 is never first)."""
    return conv_stages(model)[0].conv.weight.detach().float().cpu()


def filter_rms(weight: torch.Tensor) -> torch.Tensor:
    """Root mean square of each filter: (out,)."""
    return weight.pow(2).mean(dim=(1, 2, 3)).sqrt()


def dead_by_weight(rms: torch.Tensor) -> torch.Tensor:
    """Filters whose RMS is under DEAD_RMS_RATIO x the layer's 90th-percentile RMS: (out,) bool."""
    typical = torch.quantile(rms, TYPICAL_QUANTILE)
    return rms < DEAD_RMS_RATIO * typical


@torch.no_grad()
def dead_by_data(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Filters that are never the strongest response at any conv1 position of `images`.

    Positions where every filter's rectified response is zero have no winner and are skipped.
    """
    stage = conv_stages(model)[0]
    maps = nn.Sequential(*list(model.features)[: stage.index + 1])(images)  # (N, C, H, W)
    best, winner = maps.max(dim=1)  # (N, H, W)
    wins = torch.bincount(winner[best > 0].flatten(), minlength=maps.shape[1])
    return wins == 0


def frequency_shares(weight: torch.Tensor, fft_size: int = FFT_SIZE) -> torch.Tensor:
    """Each filter's spectral energy share in the low/mid/high radial bands: (out, 3).

    The power spectrum is summed over input channels; radius is |f| / Nyquist, so the corners
    beyond the inscribed circle (up to sqrt(2)) count as high.
    """
    k = weight.shape[-1]
    n = max(fft_size, k)
    power = torch.fft.fft2(weight, s=(n, n)).abs().pow(2).sum(dim=1)  # (out, n, n)
    f = torch.fft.fftfreq(n)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / 0.5
    edges = [0.0, 1 / 3, 2 / 3, math.inf]
    bands = torch.stack([power[:, (radius >= lo) & (radius < hi)].sum(dim=1)
                         for lo, hi in zip(edges[:-1], edges[1:], strict=True)], dim=1)
    return bands / bands.sum(dim=1, keepdim=True).clamp_min(1e-30)


def filter_stats(model: nn.Module, images: torch.Tensor | None = None) -> dict[str, Any]:
    """Per-filter RMS, dead fractions and the mean frequency profile of conv1.

    `dead_fraction` is the weight-based one (works without data); with `images`,
    `dead_fraction_data` (never the maximum response) is added.
    """
    weight = first_layer_weight(model)
    rms = filter_rms(weight)
    dead = dead_by_weight(rms)
    shares = frequency_shares(weight)
    alive = shares[~dead] if (~dead).any() else shares
    mean = alive.mean(dim=0)
    stats: dict[str, Any] = {
        "layer": "conv1",
        "shape": list(weight.shape),
        "rms": [float(v) for v in rms],
        "rms_mean": float(rms.mean()),
        "dead": [int(i) for i in torch.nonzero(dead).flatten()],
        "dead_fraction": float(dead.float().mean()),
        "dead_rule": f"rms < {DEAD_RMS_RATIO} x the layer's {TYPICAL_QUANTILE:.0%}-quantile rms",
        "frequency": {b: float(v) for b, v in zip(BANDS, mean / mean.sum(), strict=True)},
        "frequency_per_filter": [[float(v) for v in row] for row in shares],
    }
    if images is not None and len(images):
        dead_d = dead_by_data(model, images)
        stats["dead_data"] = [int(i) for i in torch.nonzero(dead_d).flatten()]
        stats["dead_fraction_data"] = float(dead_d.float().mean())
        stats["dead_data_images"] = len(images)
    return stats


def filter_grid(weight: torch.Tensor) -> np.ndarray:
    """Filters tiled into one (rows*(k+1)-1, cols*(k+1)-1, 3) image, each scaled to [0, 1]."""
    w = weight.detach().float()
    if w.shape[1] != 3:  # grey or many-channel input: show the channel mean as grey
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (w.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    n, _, k, _ = w.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = \
            w[i].permute(1, 2, 0).numpy()
    return grid


def plot_filters(fig, model: nn.Module, stats: dict[str, Any]) -> None:
    """Filter grid (left) and the per-filter band shares, sorted by RMS (right)."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    ax1.imshow(filter_grid(first_layer_weight(model)), interpolation="nearest")
    c_out, c_in, k, _ = stats["shape"]
    dead = f"dead {stats['dead_fraction']:.0%}"
    if "dead_fraction_data" in stats:
        dead += f", never max {stats['dead_fraction_data']:.0%}"
    ax1.set_title(f"conv1 filters ({c_out} @ {k}x{k}; {dead})", fontsize=10)
    ax1.axis("off")
    order = np.argsort(stats["rms"])[::-1]
    shares = np.array(stats["frequency_per_filter"])[order]
    bottom = np.zeros(len(order))
    for j, band in enumerate(BANDS):
        ax2.bar(range(len(order)), shares[:, j], bottom=bottom, label=band, width=1.0)
        bottom += shares[:, j]
    dead = set(stats["dead"])
    for x, i in enumerate(order):
        if i in dead:
            ax2.text(x, 1.01, "x", ha="center", fontsize=6)
    ax2.set(xlabel="filter (by RMS, largest first; x = dead)", ylabel="share of spectral energy",
            ylim=(0, 1.08), title="frequency profile")
    ax2.legend(loc="lower right", fontsize=7)
