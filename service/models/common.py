"""Shared pieces of the model family: activations, shape arithmetic and filter renormalisation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ACTIVATIONS = ("relu", "tanh", "sigmoid", "scaled_tanh")


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 * tanh(2a/3) (LeNet-5, 1998)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


def make_activation(name: str) -> nn.Module:
    """Build the activation named by the `activation` knob."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "scaled_tanh":
        return ScaledTanh()
    raise ValueError(f"activation={name!r}: must be one of {', '.join(ACTIVATIONS)}")


def require_int(name: str, value: Any, low: int = 1) -> None:
    """ValueError naming the knob unless `value` is an int (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}")


def require_number(name: str, value: Any, low: float, high: float, high_open: bool) -> None:
    """ValueError naming the knob unless `value` is a real number in [low, high] / [low, high)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name}={value!r}: must be a number in [{low:g}, {high:g}"
                         f"{')' if high_open else ']'}")


def require_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """ValueError naming the knob unless `value` is one of `allowed` (bools stay bools)."""
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(str, allowed))}")


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0, ceil: bool = False) -> int:
    """Spatial output size of a convolution or pooling window, as PyTorch computes it."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    steps = math.ceil(span / stride) if ceil else span // stride
    out = steps + 1
    # PyTorch drops a last ceil-mode window that would start in the right padding.
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@torch.no_grad()
def clip_filter_rms(model: nn.Module, max_rms: float) -> int:
    """Renormalise every conv filter whose RMS exceeds `max_rms` down to `max_rms` (ZFNet).

    Returns how many filters were rescaled, so a caller can log how often the clip bites.
    """
    clipped = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight  # (out, in/groups, k, k)
            rms = w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            over = rms > max_rms
            if over.any():
                w.mul_(torch.where(over, max_rms / rms, torch.ones_like(rms)))
                clipped += int(over.sum())
    return clipped


def count_params(model: nn.Module) -> int:
    """Trainable parameters (fixed buffers such as LeNet's RBF codes do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
