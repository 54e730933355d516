"""AlexNetConfig, AlexNet's layer table and its shape arithmetic, without torch (spec validation
runs it in the driver).

`CONVS` and `FCS` are AlexNet's layers, written once: `plan()` resolves them against a config
into concrete layers (channels, kernels, map sizes) before any weight is allocated, raising a
`ValueError` naming the knob at fault, and the torch builder (`alexnet.py`) and the two-tower
split (`towers.py`) build from that plan. `check_towers` checks the two-tower split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from service.models.shapes import (
    ACTIVATIONS,
    architectural,
    conv_out,
    require_choice,
    require_int,
    require_number,
)

# pool knob -> max-pool (kernel, stride): AlexNet's overlapping 3x3/2 | the usual 2x2/2
POOLS = {"overlap": (3, 2), "plain": (2, 2)}
# AlexNet sec. 3.3's local response normalisation: n=5, alpha=1e-4, beta=0.75, k=2
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
INITS = ("kaiming", "paper", "default")


@dataclass
class AlexNetConfig:
    """Knobs of the AlexNet family; defaults are AlexNet 2012 at 227x227 (exact arithmetic).

    Knobs made with `architectural` change the network itself; the others say how it is fed
    (num_classes, in_channels, image_size follow the data) or trained (dropout, the RMS clip,
    init).
    """

    num_classes: int = 1000  # ImageNet
    in_channels: int = 3  # RGB; grey data is repeated to 3 channels by the data layer
    image_size: int = 227  # the paper says 224, but 227 makes conv1's 55x55 maps exact
    # conv1..conv5 output channels
    widths: tuple[int, ...] = architectural((96, 256, 384, 384, 256))
    width_mult: float = architectural(1.0)  # scales every conv width (0.25 for CPU sweeps)
    conv1_kernel: int = architectural(11)  # ZFNet: 7
    conv1_stride: int = architectural(4)  # ZFNet: 2 (stride 4 aliases layer-2 features)
    conv1_padding: int = architectural(0)
    conv2_stride: int = architectural(1)  # ZFNet: 2
    conv2_padding: int = architectural(2)
    # conv2/4/5 split into two towers, one per GPU in the paper; 1 = dense
    groups: int = architectural(2)
    fc_width: int = architectural(4096)  # FC6 and FC7 units
    dropout: float = 0.5  # dropout probability on FC6/FC7 (acts only in training)
    dropout_position: Literal["hidden", "input"] = "hidden"  # after FC6/FC7 (paper) | before
    lrn: bool = architectural(True)  # local response normalisation after conv1 and conv2
    # ZFNet: after the pools
    lrn_position: Literal["before_pool", "after_pool"] = architectural("before_pool")
    activation: str = architectural("relu")  # relu | tanh | sigmoid | scaled_tanh
    pool: str = architectural("overlap")  # overlap (3x3/2) | plain (2x2/2)
    # ceil-mode pooling (ZFNet's 110 -> 55 -> 26 -> 13 arithmetic)
    pool_ceil: bool = architectural(False)
    # torchvision's AdaptiveAvgPool2d((6, 6)); None = none
    adaptive_pool: int | None = architectural(None)
    filter_rms_clip: float | None = None  # renormalise conv filters with RMS above this (ZFNet 0.1)
    # kaiming: He-normal weights with ReLU's gain (whatever the activation; fan_out for convs,
    # fan_in for FCs), zero biases; paper: N(0, 0.01) weights, bias 1 in conv2/4/5 and FC6/7
    # and 0 elsewhere; default: PyTorch's own.
    init: Literal["kaiming", "paper", "default"] = "kaiming"
    # ZFNet Table 3's ablations: drop conv3+conv4 ("3,4"; conv5 then reads conv2), FC7 ("7"),
    # FC6+FC7 ("6,7"; FC8 reads the conv features) or all four ("3,4,6,7").
    remove_layers: str = architectural("none")


@dataclass(frozen=True)
class ConvSpec:
    """One of AlexNet's conv layers. Kernel, stride and padding are a number or the knob that
    sets it; the output width is `widths[number - 1]` after `width_mult`."""

    number: int  # conv1..conv5
    kernel: int | str
    stride: int | str
    padding: int | str
    grouped: bool  # split into `groups` (the paper's towers); a dense layer reads both towers
    lrn: bool  # followed by LRN when the `lrn` knob is on
    pool: bool  # followed by a max pool
    paper_bias: float  # its bias under init=paper


@dataclass(frozen=True)
class FcSpec:
    """One of AlexNet's fully-connected layers; all are dense (they read both towers)."""

    number: int  # FC6..FC8
    width: str  # the knob that sets its output units
    hidden: bool  # followed by the activation and dropout; FC8 gives the logits
    paper_bias: float  # its bias under init=paper


# AlexNet (Krizhevsky et al. 2012, sec. 3.5 and Fig. 2). ZFNet changes conv1 and conv2 only
# through their knobs. The paper sets the biases of conv2, conv4, conv5 and the hidden FCs to 1
# "to accelerate the early stages of learning by providing the ReLUs with positive inputs".
CONVS = (
    ConvSpec(1, "conv1_kernel", "conv1_stride", "conv1_padding", grouped=False, lrn=True,
             pool=True, paper_bias=0.0),
    ConvSpec(2, 5, "conv2_stride", "conv2_padding", grouped=True, lrn=True, pool=True,
             paper_bias=1.0),
    ConvSpec(3, 3, 1, 1, grouped=False, lrn=False, pool=False, paper_bias=0.0),
    ConvSpec(4, 3, 1, 1, grouped=True, lrn=False, pool=False, paper_bias=1.0),
    ConvSpec(5, 3, 1, 1, grouped=True, lrn=False, pool=True, paper_bias=1.0),
)
FCS = (
    FcSpec(6, "fc_width", hidden=True, paper_bias=1.0),
    FcSpec(7, "fc_width", hidden=True, paper_bias=1.0),
    FcSpec(8, "num_classes", hidden=False, paper_bias=0.0),
)
# The `remove_layers` values: ZFNet Table 3's sets of layer numbers from the table above.
REMOVABLE = ("none", "3,4", "7", "6,7", "3,4,6,7")


@dataclass(frozen=True)
class ConvLayer:
    """A conv layer of one config: its spec with the knobs and channel counts filled in."""

    spec: ConvSpec
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    groups: int  # the `groups` knob for a grouped layer, else 1
    map_size: int  # spatial size of its output (before its pool)


@dataclass(frozen=True)
class FcLayer:
    """A fully-connected layer of one config: its spec with the sizes filled in."""

    spec: FcSpec
    d_in: int
    d_out: int


@dataclass(frozen=True)
class AlexNetPlan:
    """Shapes computed from a config without allocating weights."""

    widths: tuple[int, ...]  # conv widths after width_mult
    convs: tuple[ConvLayer, ...]  # the conv layers `remove_layers` keeps, in order
    fcs: tuple[FcLayer, ...]  # the FC layers it keeps, in order
    pool: tuple[int, int]  # max-pool kernel and stride
    final_map: int  # spatial size entering the classifier
    fc_input: int  # flattened features entering the first FC layer

    @property
    def conv_maps(self) -> list[int]:
        """Spatial size after each conv layer."""
        return [c.map_size for c in self.convs]


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
    if not isinstance(cfg.widths, tuple | list) or len(cfg.widths) != len(CONVS):
        raise ValueError(f"widths={cfg.widths!r}: must be five positive conv widths")
    for i, w in enumerate(cfg.widths):
        require_int(f"widths[{i}]", w)
    require_number("width_mult", cfg.width_mult, 1e-3, 16, high_open=False)
    require_number("dropout", cfg.dropout, 0, 1, high_open=True)
    require_choice("activation", cfg.activation, ACTIVATIONS)
    require_choice("pool", cfg.pool, tuple(POOLS))
    for name in ("lrn", "pool_ceil"):
        require_choice(name, getattr(cfg, name), (True, False))
    require_choice("lrn_position", cfg.lrn_position, ("before_pool", "after_pool"))
    require_choice("dropout_position", cfg.dropout_position, ("hidden", "input"))
    require_choice("init", cfg.init, INITS)
    require_choice("remove_layers", cfg.remove_layers, REMOVABLE)
    if cfg.adaptive_pool is not None:
        require_int("adaptive_pool", cfg.adaptive_pool)
    if cfg.filter_rms_clip is not None:
        require_number("filter_rms_clip", cfg.filter_rms_clip, 1e-9, math.inf, high_open=True)


def _knob(cfg: AlexNetConfig, value: int | str) -> int:
    """A spec's number, or the value of the knob it names."""
    return getattr(cfg, value) if isinstance(value, str) else value


def _channels(cfg: AlexNetConfig, widths: tuple[int, ...]) -> list[tuple[ConvSpec, int, int]]:
    """(spec, input, output channels) of each kept conv; a layer reads the last kept one."""
    gone, c_in, out = removed(cfg), cfg.in_channels, []
    for spec in CONVS:
        if spec.number in gone:
            continue
        c_out = widths[spec.number - 1]
        if spec.grouped and (c_in % cfg.groups or c_out % cfg.groups):
            raise ValueError(f"groups={cfg.groups}: does not divide conv{spec.number}'s "
                             f"{c_in} input / {c_out} output channels")
        out.append((spec, c_in, c_out))
        c_in = c_out
    return out


def plan(cfg: AlexNetConfig) -> AlexNetPlan:
    """Validate `cfg` and resolve the layer table against it (channels, kernels, feature-map
    sizes); raises ValueError naming the knob."""
    _check_ranges(cfg)
    widths = scaled_widths(cfg)
    channels = _channels(cfg, widths)  # every channel check before any map-size check
    pool = POOLS[cfg.pool]

    def shrink(size: int, kernel: int, stride: int, padding: int, what: str) -> int:
        size = conv_out(size, kernel, stride, padding, ceil=cfg.pool_ceil and what == "pool")
        if size < 1:
            raise ValueError(
                f"image_size={cfg.image_size}: the feature map shrinks to zero at {what} "
                f"(conv1 {cfg.conv1_kernel}x{cfg.conv1_kernel}/{cfg.conv1_stride}, "
                f"pool={cfg.pool}); use a larger image_size or a smaller stride")
        return size

    size, convs = cfg.image_size, []
    for spec, c_in, c_out in channels:
        k, s, p = (_knob(cfg, v) for v in (spec.kernel, spec.stride, spec.padding))
        # The error names the knobs that shrink the map (kernel, stride), else the layer.
        what = "/".join(v for v in (spec.kernel, spec.stride) if isinstance(v, str))
        size = shrink(size, k, s, p, what or f"conv{spec.number}")
        convs.append(ConvLayer(spec, c_in, c_out, k, s, p,
                               cfg.groups if spec.grouped else 1, size))
        if spec.pool:
            size = shrink(size, *pool, 0, "pool")
    final = cfg.adaptive_pool or size
    fc_input = convs[-1].c_out * final * final
    gone, d_in, fcs = removed(cfg), fc_input, []
    for fc in FCS:
        if fc.number not in gone:
            fcs.append(FcLayer(fc, d_in, getattr(cfg, fc.width)))
            d_in = fcs[-1].d_out
    return AlexNetPlan(widths, tuple(convs), tuple(fcs), pool, final, fc_input)


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
    p = plan(cfg)
    # Each tower holds the output half of every layer but FC8 (which lives whole on tower 0).
    odd = [f"conv{c.spec.number}'s {c.c_out} (widths, width_mult)"
           for c in p.convs if c.c_out % TOWERS]
    odd += [f"FC{f.spec.number}'s {f.d_out} (fc_width)"
            for f in p.fcs if f.spec.hidden and f.d_out % TOWERS]
    if odd:
        raise ValueError("model_parallel=towers: each tower holds half of a layer's outputs, "
                         f"which must be even; got {', '.join(odd)}")
