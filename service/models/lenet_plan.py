"""LeNetConfig and its shape arithmetic, without torch (spec validation runs it in the driver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.models.shapes import (
    ACTIVATIONS,
    architectural,
    conv_out,
    require_choice,
    require_int,
    require_number,
)


@dataclass
class LeNetConfig:
    """Knobs of LeNet-5; defaults are the modern variant at 32x32.

    Knobs made with `architectural` change the network itself; num_classes, in_channels and
    image_size follow the data, and dropout acts only in training.
    """

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 32  # the paper pads MNIST's 28x28 digits to 32x32
    activation: str = architectural("relu")  # relu | tanh | sigmoid | scaled_tanh (the paper's)
    # trainable = the paper's subsampling
    pool: Literal["max", "avg", "trainable"] = architectural("max")
    c3_table: bool = architectural(False)  # the paper's partial C3 connectivity instead of full
    # rbf = Euclidean RBF units with fixed codes
    output: Literal["linear", "rbf"] = architectural("linear")
    dropout: float = 0.0  # before F6; LeNet had none


@dataclass(frozen=True)
class LeNetPlan:
    """Shapes computed from a config without allocating weights."""

    conv_maps: list[int]  # C1, C3, C5 spatial sizes
    fc_input: int  # flattened C5 output entering F6


def plan(cfg: LeNetConfig) -> LeNetPlan:
    """Validate `cfg` and compute its feature-map sizes; raises ValueError naming the knob."""
    for name in ("num_classes", "in_channels", "image_size"):
        require_int(name, getattr(cfg, name))
    require_choice("activation", cfg.activation, ACTIVATIONS)
    require_choice("pool", cfg.pool, ("max", "avg", "trainable"))
    require_choice("output", cfg.output, ("linear", "rbf"))
    require_choice("c3_table", cfg.c3_table, (True, False))
    require_number("dropout", cfg.dropout, 0, 1, high_open=True)
    size, maps = cfg.image_size, []
    for layer in ("C1", "S2", "C3", "S4", "C5"):
        size = conv_out(size, 5) if layer[0] == "C" else conv_out(size, 2, 2)
        if size < 1:
            raise ValueError(f"image_size={cfg.image_size}: the feature map shrinks to zero at "
                             f"{layer}; LeNet-5 needs image_size >= 32")
        if layer[0] == "C":
            maps.append(size)
    return LeNetPlan(maps, 120 * size * size)
