"""Model registry: LeNet-5, AlexNet, its Figure 1 net and ZFNet as named presets over three
configurable classes; imports torch for the builders only, never Ray.

`build_model("zfnet", width_mult=0.25, image_size=67)` validates the knobs by shape arithmetic
before allocating any weight; a bad combination raises a ValueError that names the knob.

Importing this package does not import torch: the registry and the shape arithmetic are
torch-free (the sweep's driver validates specs with them), and the torch-built names below are
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from service.models.alexnet_plan import AlexNetConfig
from service.models.fig1_plan import Fig1Config
from service.models.lenet_plan import LeNetConfig
from service.models.registry import (
    FAMILIES,
    architecture_knobs,
    check_model,
    knob_names,
    list_models,
    make_config,
    model_knobs,
)

# name -> the module defining it (torch): the builders, and each family's module class
_LAZY = {"build_model": "service.models.build", "describe": "service.models.build",
         "count_params": "service.models.common", "TowerAlexNet": "service.models.towers",
         **{f.module.split(":")[1]: f.module.split(":")[0] for f in FAMILIES.values()}}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["architecture_knobs", "build_model", "check_model", "describe", "knob_names",
           "list_models", "model_knobs", "make_config", "count_params", "AlexNet",
           "AlexNetConfig", "LeNet5", "LeNetConfig", "TowerAlexNet", "Fig1Net", "Fig1Config"]
