"""The model presets by name, their knobs and shape checks, without torch.

Spec validation runs in the sweep's driver, which never imports torch (its memory): the
registry, the config dataclasses and their shape arithmetic live here; the modules in
`service.models` import torch and are built by `build_model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.models import alexnet_plan, fig1_plan, lenet_plan
from service.models.alexnet_plan import AlexNetConfig
from service.models.fig1_plan import Fig1Config
from service.models.lenet_plan import LeNetConfig
from service.models.shapes import ARCHITECTURE


@dataclass(frozen=True)
class Family:
    """A configurable network: its config dataclass (the knobs), the torch-free shape
    arithmetic that checks a config (`plan(config)`), and the torch module that builds it, as
    "module:Class" (imported only by `build_model`). A new family is one record here plus its
    three files (plan, module, config); its presets follow."""

    config: type
    plan: Callable[[Any], Any]
    module: str


FAMILIES: dict[str, Family] = {
    "lenet": Family(LeNetConfig, lenet_plan.plan, "service.models.lenet:LeNet5"),
    "alexnet": Family(AlexNetConfig, alexnet_plan.plan, "service.models.alexnet:AlexNet"),
    "fig1": Family(Fig1Config, fig1_plan.plan, "service.models.fig1:Fig1Net"),
}

# name -> (family, the knobs it sets, overriding the family config's defaults)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "lenet5": ("lenet", {}),
    "lenet5-1998": ("lenet", dict(
        activation="scaled_tanh", pool="trainable", c3_table=True, output="rbf")),
    "alexnet": ("alexnet", {}),
    # The paper's one-GPU comparison net (-1.7 % top-1 for two GPUs): half the kernels of every
    # conv layer but the last, which keeps 256 so that FC6 and the parameter count stay alike.
    "alexnet-one-tower": ("alexnet", dict(widths=(48, 128, 192, 192, 256), groups=1)),
    "zfnet": ("alexnet", dict(
        image_size=224, conv1_kernel=7, conv1_stride=2, conv1_padding=1, conv2_stride=2,
        conv2_padding=0, groups=1, lrn_position="after_pool", pool_ceil=True,
        filter_rms_clip=0.1)),
    "alexnet-torchvision": ("alexnet", dict(
        image_size=224, widths=(64, 192, 384, 256, 256), conv1_padding=2, groups=1, lrn=False,
        dropout_position="input", adaptive_pool=6)),
    # AlexNet's Figure 1 net (ReLU vs tanh to 25 % training error on CIFAR-10); the paper gives
    # no layers: we assume cuda-convnet's layers-18pct net (see fig1_plan).
    "alexnet-fig1": ("fig1", {}),
}


def list_models() -> list[str]:
    """Names of every preset, in registry order."""
    return list(PRESETS)


def preset(name: str) -> tuple[str, type, dict[str, Any]]:
    """(family, config class, the preset's own settings) of preset `name`; ValueError naming
    every preset for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"model={name!r}: unknown model; choose one of {', '.join(PRESETS)}")
    family, settings = PRESETS[name]
    return family, FAMILIES[family].config, settings


def knob_names(name: str) -> list[str]:
    """The knobs a preset accepts (the fields of its config class)."""
    _, cfg_cls, _ = preset(name)
    return [f.name for f in dataclasses.fields(cfg_cls)]


def architecture_knobs(name: str) -> tuple[str, ...]:
    """The knobs of a preset that make a different network (declared `architectural` in its
    config class), as opposed to how it is trained or fed; in knob order."""
    _, cfg_cls, _ = preset(name)
    return tuple(f.name for f in dataclasses.fields(cfg_cls) if f.metadata.get(ARCHITECTURE))


def model_knobs(name: str) -> dict[str, Any]:
    """The preset's knob values (config defaults overridden by the preset)."""
    _, cfg_cls, settings = preset(name)
    cfg = cfg_cls(**settings)
    return {k: getattr(cfg, k) for k in knob_names(name)}


def make_config(name: str, **knobs: Any):
    """The preset's config with `knobs` applied; unknown knobs raise ValueError."""
    _, cfg_cls, settings = preset(name)
    allowed = knob_names(name)
    for key in knobs:
        if key not in allowed:
            raise ValueError(f"{key}: not a knob of {name}; knobs are {', '.join(allowed)}")
    if "widths" in knobs:
        knobs["widths"] = tuple(knobs["widths"])
    return cfg_cls(**{**settings, **knobs})


def check_model(name: str, **knobs: Any):
    """Validate a preset plus knobs by shape arithmetic alone; returns the model's plan."""
    family, _, _ = preset(name)
    return FAMILIES[family].plan(make_config(name, **knobs))
