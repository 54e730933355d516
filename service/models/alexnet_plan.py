"""AlexNetConfig and its shape arithmetic, without torch (spec validation runs it in the driver).

`plan()` does the shape arithmetic before any weight is allocated and raises a `ValueError`
naming the knob at fault; `check_towers` does the same for the two-tower split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from service.models.shapes import ACTIVATIONS, conv_out, require_choice, require_int, require_number

POOLS = ("overlap", "plain")  # 3x3 stride 2 (AlexNet's overlapping pools) | 2x2 stride 2


@dataclass
class AlexNetConfig:
    """Knobs of the AlexNet family; defaults are AlexNet 2012 at 227x227 (exact arithmetic)."""

    num_classes: int = 1000  # ImageNet
    in_channels: int = 3  # RGB; grey data is repeated to 3 channels by the data layer
    image_size: int = 227  # the paper says 224, but 227 makes conv1's 55x55 maps exact
    widths: tuple[int, ...] = (96, 256, 384, 384, 256)  # conv1..conv5 output channels
    width_mult: float = 1.0  # scales every conv width (e.g. 0.25 for CPU-sized sweeps)
    conv1_kernel: int = 11  # ZFNet: 7
    conv1_stride: int = 4  # ZFNet: 2 (stride 4 aliases layer-2 features)
    conv1_padding: int = 0
    conv2_stride: int = 1  # ZFNet: 2
    conv2_padding: int = 2
    groups: int = 2  # conv2/4/5 split into two towers, one per GPU in the paper; 1 = dense
    fc_width: int = 4096  # FC6 and FC7 units
    dropout: float = 0.5  # dropout probability on FC6/FC7
    dropout_position: Literal["hidden", "input"] = "hidden"  # after FC6/FC7 (paper) | before
    lrn: bool = True  # local response normalisation after conv1 and conv2
    lrn_position: Literal["before_pool", "after_pool"] = "before_pool"  # ZFNet: after the pools
    activation: str = "relu"  # relu | tanh | sigmoid | scaled_tanh
    pool: str = "overlap"  # overlap (3x3/2) | plain (2x2/2)
    pool_ceil: bool = False  # ceil-mode pooling (ZFNet's 110 -> 55 -> 26 -> 13 arithmetic)
    adaptive_pool: int | None = None  # torchvision's AdaptiveAvgPool2d((6, 6)); None = none
    filter_rms_clip: float | None = None  # renormalise conv filters with RMS above this (ZFNet 0.1)
    # kaiming: He-normal convs, N(0, 0.01) FCs (trains from scratch in a few epochs);
    # paper: N(0, 0.01) everywhere, bias 1 in conv2/4/5 and FC6/7; default: PyTorch's own.
    init: Literal["kaiming", "paper", "default"] = "kaiming"
    # ZFNet Table 3's ablations: drop conv3+conv4 ("3,4"; conv5 then reads conv2), FC7 ("7"),
    # FC6+FC7 ("6,7"; FC8 reads the conv features) or all four ("3,4,6,7").
    remove_layers: str = "none"
    conv_maps: list[int] = field(default_factory=list, repr=False)  # filled by plan()


@dataclass(frozen=True)
class AlexNetPlan:
    """Shapes computed from a config without allocating weights."""

    widths: tuple[int, ...]  # conv widths after width_mult
    conv_maps: list[int]  # spatial size after each conv layer
    final_map: int  # spatial size entering the classifier
    fc_input: int  # flattened features entering FC6


REMOVABLE = ("none", "3,4", "7", "6,7", "3,4,6,7")  # ZFNet Table 3


def removed(cfg: AlexNetConfig) -> set[int]:
    """The layer numbers (conv 1-5, FC 6-7) that `remove_layers` takes out."""
    return set() if cfg.remove_layers == "none" else {
        int(x) for x in cfg.remove_layers.split(",")}


def scaled_widths(cfg: AlexNetConfig) -> tuple[int, ...]:
    """Conv widths after `width_mult`; scaled widths stay multiples of `groups`."""
    if cfg.width_mult == 1.0:
        return tuple(cfg.widths)
    g = max(cfg.groups, 1)
    return tuple(max(g, round(w * cfg.width_mult / g) * g) for w in cfg.widths)


def _check_ranges(cfg: AlexNetConfig) -> None:
    for name in ("num_classes", "in_channels", "image_size", "conv1_kernel", "conv1_stride",
                 "conv2_stride", "groups", "fc_width"):
        require_int(name, getattr(cfg, name))
    for name in ("conv1_padding", "conv2_padding"):
        require_int(name, getattr(cfg, name), low=0)
    if not isinstance(cfg.widths, tuple | list) or len(cfg.widths) != 5:
        raise ValueError(f"widths={cfg.widths!r}: must be five positive conv widths")
    for i, w in enumerate(cfg.widths):
        require_int(f"widths[{i}]", w)
    require_number("width_mult", cfg.width_mult, 1e-3, 16, high_open=False)
    require_number("dropout", cfg.dropout, 0, 1, high_open=True)
    require_choice("activation", cfg.activation, ACTIVATIONS)
    require_choice("pool", cfg.pool, POOLS)
    for name in ("lrn", "pool_ceil"):
        require_choice(name, getattr(cfg, name), (True, False))
    require_choice("lrn_position", cfg.lrn_position, ("before_pool", "after_pool"))
    require_choice("dropout_position", cfg.dropout_position, ("hidden", "input"))
    require_choice("init", cfg.init, ("kaiming", "paper", "default"))
    require_choice("remove_layers", cfg.remove_layers, REMOVABLE)
    if cfg.adaptive_pool is not None:
        require_int("adaptive_pool", cfg.adaptive_pool)
    if cfg.filter_rms_clip is not None:
        require_number("filter_rms_clip", cfg.filter_rms_clip, 1e-9, math.inf, high_open=True)


def plan(cfg: AlexNetConfig) -> AlexNetPlan:
    """Validate `cfg` and compute its feature-map sizes; raises ValueError naming the knob."""
    _check_ranges(cfg)
    widths = scaled_widths(cfg)
    # conv2, conv4 and conv5 are the grouped (two-tower) layers; conv3 and the FCs are dense.
    gone = removed(cfg)
    grouped = {2: (widths[0], widths[1]), 4: (widths[2], widths[3]),
               5: (widths[1] if 4 in gone else widths[3], widths[4])}
    for layer, (c_in, c_out) in grouped.items():
        if layer in gone:
            continue
        if c_in % cfg.groups or c_out % cfg.groups:
            raise ValueError(f"groups={cfg.groups}: does not divide conv{layer}'s "
                             f"{c_in} input / {c_out} output channels")
    pk, ps = (3, 2) if cfg.pool == "overlap" else (2, 2)
    steps = [  # (what, kernel, stride, padding) in order; pools after conv1, conv2 and conv5
        ("conv1_kernel/conv1_stride", cfg.conv1_kernel, cfg.conv1_stride, cfg.conv1_padding),
        ("pool", pk, ps, 0),
        ("conv2_stride", 5, cfg.conv2_stride, cfg.conv2_padding),
        ("pool", pk, ps, 0),
        ("conv3", 3, 1, 1), ("conv4", 3, 1, 1), ("conv5", 3, 1, 1),
        ("pool", pk, ps, 0),
    ]
    steps = [st for st in steps if st[0] not in {f"conv{i}" for i in gone}]
    size, conv_maps = cfg.image_size, []
    for what, k, s, p in steps:
        size = conv_out(size, k, s, p, ceil=cfg.pool_ceil and what == "pool")
        if size < 1:
            raise ValueError(
                f"image_size={cfg.image_size}: the feature map shrinks to zero at {what} "
                f"(conv1 {cfg.conv1_kernel}x{cfg.conv1_kernel}/{cfg.conv1_stride}, "
                f"pool={cfg.pool}); use a larger image_size or a smaller stride")
        if what != "pool":
            conv_maps.append(size)
    final = cfg.adaptive_pool or size
    return AlexNetPlan(widths, conv_maps, final, widths[4] * final * final)


TOWERS = 2  # the paper's two GPUs


def check_towers(cfg: Any) -> None:
    """ValueError unless `cfg` is an AlexNet-family config that splits into two towers."""
    if not isinstance(cfg, AlexNetConfig):
        raise ValueError("model_parallel=towers: needs an AlexNet-family model (alexnet), "
                         f"not {type(cfg).__name__}")
    if cfg.remove_layers != "none":
        raise ValueError("model_parallel=towers: needs all of AlexNet's layers, "
                         f"got remove_layers={cfg.remove_layers!r}")
    if cfg.groups != TOWERS:
        raise ValueError(f"model_parallel=towers: needs groups=2 (the two towers), "
                         f"got groups={cfg.groups}")
    if cfg.fc_width % TOWERS or scaled_widths(cfg)[2] % TOWERS:
        raise ValueError(f"model_parallel=towers: fc_width={cfg.fc_width} and conv3's width "
                         "must be even (each tower holds half)")
