"""Model registry: LeNet-5, AlexNet and ZFNet as named presets over two configurable classes.

`build_model("zfnet", width_mult=0.25, image_size=67)` validates the knobs by shape arithmetic
before allocating any weight; a bad combination raises a ValueError that names the knob.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from . import alexnet, lenet
from .alexnet import AlexNet, AlexNetConfig
from .common import count_params
from .lenet import LeNet5, LeNetConfig
from .towers import TowerAlexNet

_FAMILIES = {LeNet5: lenet.plan, AlexNet: alexnet.plan}  # model class -> its shape arithmetic

# name -> (model class, config class, preset knobs overriding the config's defaults)
_PRESETS: dict[str, tuple[type[nn.Module], type, dict[str, Any]]] = {
    "lenet5": (LeNet5, LeNetConfig, {}),
    "lenet5-1998": (LeNet5, LeNetConfig, dict(
        activation="scaled_tanh", pool="trainable", c3_table=True, output="rbf")),
    "alexnet": (AlexNet, AlexNetConfig, {}),
    # The paper's one-GPU comparison net (-1.7 % top-1 for two GPUs): half the kernels of every
    # conv layer but the last, which keeps 256 so that FC6 and the parameter count stay alike.
    "alexnet-one-tower": (AlexNet, AlexNetConfig, dict(widths=(48, 128, 192, 192, 256), groups=1)),
    "zfnet": (AlexNet, AlexNetConfig, dict(
        image_size=224, conv1_kernel=7, conv1_stride=2, conv1_padding=1, conv2_stride=2,
        conv2_padding=0, groups=1, lrn_position="after_pool", pool_ceil=True,
        filter_rms_clip=0.1)),
    "alexnet-torchvision": (AlexNet, AlexNetConfig, dict(
        image_size=224, widths=(64, 192, 384, 256, 256), conv1_padding=2, groups=1, lrn=False,
        dropout_position="input", adaptive_pool=6)),
}


def list_models() -> list[str]:
    """Names of every preset, in registry order."""
    return list(_PRESETS)


def _preset(name: str) -> tuple[type[nn.Module], type, dict[str, Any]]:
    if name not in _PRESETS:
        raise ValueError(f"model={name!r}: unknown model; choose one of {', '.join(_PRESETS)}")
    return _PRESETS[name]


def knob_names(name: str) -> list[str]:
    """The knobs a preset accepts (the fields of its config class)."""
    _, cfg_cls, _ = _preset(name)
    return [f.name for f in dataclasses.fields(cfg_cls) if f.repr]


def model_knobs(name: str) -> dict[str, Any]:
    """The preset's knob values (config defaults overridden by the preset)."""
    _, cfg_cls, preset = _preset(name)
    cfg = cfg_cls(**preset)
    return {k: getattr(cfg, k) for k in knob_names(name)}


def make_config(name: str, **knobs: Any):
    """The preset's config with `knobs` applied; unknown knobs raise ValueError."""
    _, cfg_cls, preset = _preset(name)
    allowed = knob_names(name)
    for key in knobs:
        if key not in allowed:
            raise ValueError(f"{key}: not a knob of {name}; knobs are {', '.join(allowed)}")
    if "widths" in knobs:
        knobs["widths"] = tuple(knobs["widths"])
    return cfg_cls(**{**preset, **knobs})


def check_model(name: str, **knobs: Any):
    """Validate a preset plus knobs by shape arithmetic alone; returns the model's plan."""
    model_cls, _, _ = _preset(name)
    return _FAMILIES[model_cls](make_config(name, **knobs))


def build_model(name: str, **knobs: Any) -> nn.Module:
    """Build preset `name` with `knobs` applied (validated before any weight is allocated)."""
    model_cls, _, _ = _preset(name)
    check_model(name, **knobs)
    return model_cls(make_config(name, **knobs))


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
        from torch.utils.flop_counter import FlopCounterMode

        x = torch.empty(1, cfg.in_channels, cfg.image_size, cfg.image_size, device="meta")
        with FlopCounterMode(display=False) as counter:
            model.eval()(x)
        info["flops"] = counter.get_total_flops()
    return info


__all__ = ["build_model", "check_model", "describe", "knob_names", "list_models", "model_knobs",
           "make_config", "count_params", "AlexNet", "AlexNetConfig", "LeNet5", "LeNetConfig",
           "TowerAlexNet"]
