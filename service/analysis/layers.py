"""The conv stages of a model's `features` stack, their receptive fields and their activations.

A stage is a conv layer's rectified output (the module right after the conv, if it is an
activation): "conv1" .. "conv5" on AlexNet/ZFNet, "conv1" .. "conv3" (C1, C3, C5) on LeNet-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from service.models.common import ScaledTanh
from service.models.lenet import PartialConv2d, Subsampling

ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Sigmoid, ScaledTanh)
CONV_TYPES = (nn.Conv2d, PartialConv2d)


@dataclass(frozen=True)
class Stage:
    """One conv stage: its name and the index of its last module in `model.features`."""

    name: str  # conv1, conv2, ...
    index: int  # features[: index + 1] computes this stage's maps
    conv: nn.Module


def conv_stages(model: nn.Module) -> list[Stage]:
    """Every conv of `model.features` with the activation that follows it, in order."""
    feats = list(model.features)
    stages = []
    for i, m in enumerate(feats):
        if isinstance(m, CONV_TYPES):
            last = i + 1 if i + 1 < len(feats) and isinstance(feats[i + 1], ACTIVATION_TYPES) else i
            stages.append(Stage(f"conv{len(stages) + 1}", last, m))
    return stages


def uses_relu(model: nn.Module) -> bool:
    """True when every activation of the conv stack is a ReLU (the deconvnet's premise)."""
    acts = [m for m in model.features if isinstance(m, ACTIVATION_TYPES)]
    return bool(acts) and all(isinstance(m, nn.ReLU) for m in acts)


def _window(m: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a spatial module, None for pointwise ones."""
    def first(v):
        return v[0] if isinstance(v, tuple | list) else v

    if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        return first(m.kernel_size), first(m.stride), first(m.padding)
    if isinstance(m, PartialConv2d):
        return m.kernel, 1, 0
    if isinstance(m, Subsampling):
        return 2, 2, 0
    return None


def receptive_field(model: nn.Module, index: int) -> tuple[int, int, int]:
    """(size, jump, offset) of features[index]'s units: unit y covers input rows
    [y * jump - offset, y * jump - offset + size)."""
    size, jump, offset = 1, 1, 0
    for m in list(model.features)[: index + 1]:
        w = _window(m)
        if w is None:
            continue
        k, s, p = w
        size += (k - 1) * jump
        offset += p * jump
        jump *= s
    return size, jump, offset


def unit_box(model: nn.Module, index: int, y: int, x: int, image_size: int
             ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel box a unit sees, clipped to the image."""
    size, jump, offset = receptive_field(model, index)
    top, left = y * jump - offset, x * jump - offset
    return (max(top, 0), min(top + size, image_size), max(left, 0), min(left + size, image_size))


@torch.no_grad()
def stage_maps(model: nn.Module, images: torch.Tensor, index: int,
               batch: int = 256) -> torch.Tensor:
    """features[: index + 1] applied to `images` in batches: (N, C, H, W)."""
    head = nn.Sequential(*list(model.features)[: index + 1])
    return torch.cat([head(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def all_stage_maps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage's maps for `images` in one pass through `features`."""
    stages = {s.index: s.name for s in conv_stages(model)}
    out, x = {}, images
    for i, m in enumerate(model.features):
        x = m(x)
        if i in stages:
            out[stages[i]] = x.clone()  # a later in-place activation must not change it
    return out
