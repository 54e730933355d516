"""Building the presets as torch modules (and describing them on the meta device)."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from service.models.common import count_params
from service.models.registry import FAMILIES, check_model, make_config, preset


def module_class(family: str) -> type[nn.Module]:
    """The torch module of a family (`registry.FAMILIES[family].module`, imported here)."""
    module, cls = FAMILIES[family].module.split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, **knobs: Any) -> nn.Module:
    """Build preset `name` with `knobs` applied (validated before any weight is allocated)."""
    family, _, _ = preset(name)
    check_model(name, **knobs)
    return module_class(family)(make_config(name, **knobs))


def describe(name: str, flops: bool = False, **knobs: Any) -> dict[str, Any]:
    """Parameters, input size and conv map sizes (and forward FLOPs per image) of a preset.

    Built on the meta device, so describing a 60M-parameter AlexNet allocates nothing.
    """
    plan = check_model(name, **knobs)
    with torch.device("meta"):
        model = build_model(name, **knobs)
    cfg = model.cfg
    info: dict[str, Any] = {
        "name": name,
        "params": count_params(model),
        "input_size": [cfg.in_channels, cfg.image_size, cfg.image_size],
        "num_classes": cfg.num_classes,
        "conv_maps": list(plan.conv_maps),
    }
    if flops:
        x = torch.empty(1, cfg.in_channels, cfg.image_size, cfg.image_size, device="meta")
        with FlopCounterMode(display=False) as counter:
            model.eval()(x)
        info["flops"] = counter.get_total_flops()
    return info
