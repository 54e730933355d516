"""Fig1Config and the shape arithmetic of AlexNet's Figure 1 network, without torch (spec
validation runs it in the driver).

Krizhevsky et al. 2012, Figure 1: "a four-layer convolutional neural network with ReLUs reaches
a 25% training error rate on CIFAR-10 six times faster than an equivalent network with tanh
neurons"; each network's learning rate was chosen to train as fast as possible, and no
regularisation of any kind was used. The paper gives no layers. We assume the four-weight-layer
CIFAR-10 net of Krizhevsky's own cuda-convnet (example-layers/layers-18pct.cfg): three 5x5 convs
(32, 32, 64 filters, padding 2), each followed by a 3x3/2 pool (max, then average twice), LRN
after the first two pools, and one fully-connected layer to the classes. cuda-convnet sizes a
pool's output as ceil((size - 3) / 2) + 1 (32 -> 16 -> 8 -> 4), which is PyTorch's ceil mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.models.shapes import architectural, conv_out, require_choice, require_int

FIG1_ACTIVATIONS = ("relu", "tanh")  # the figure's two curves
FIG1_INITS = ("kaiming", "cuda-convnet", "default")
KERNEL, PADDING = 5, 2  # every conv: 5x5, padding 2 (keeps the map size)
POOL = (3, 2)  # every pool: 3x3, stride 2, ceil mode


@dataclass(frozen=True)
class Fig1Layer:
    """One conv block of the net: conv -> (activation, pool in the block's order) -> LRN?"""

    number: int  # conv1..conv3
    width: int  # output channels
    pool: Literal["max", "avg"]
    act_after_pool: bool  # cuda-convnet's conv1 applies its neuron after the max pool
    lrn: bool  # followed by LRN when the `lrn` knob is on


# layers-18pct.cfg: conv1 -> pool1 (max, relu) -> rnorm1; conv2 (relu) -> pool2 (avg) -> rnorm2;
# conv3 (relu) -> pool3 (avg); fc10.
LAYERS = (
    Fig1Layer(1, 32, "max", act_after_pool=True, lrn=True),
    Fig1Layer(2, 32, "avg", act_after_pool=False, lrn=True),
    Fig1Layer(3, 64, "avg", act_after_pool=False, lrn=False),
)


@dataclass
class Fig1Config:
    """Knobs of the Figure 1 net; defaults are CIFAR-10 at 32x32 with ReLU and LRN.

    Knobs made with `architectural` change the network itself; num_classes, in_channels and
    image_size follow the data, and init says how it starts training. No dropout: the figure's
    nets had no regularisation.
    """

    num_classes: int = 10  # CIFAR-10
    in_channels: int = 3  # RGB; grey data gives 1
    image_size: int = 32  # CIFAR-10's own size
    activation: str = architectural("relu")  # relu | tanh (the figure's comparison)
    lrn: bool = architectural(True)  # LRN after pool1 and pool2 (AlexNet sec. 3.3's constants)
    # kaiming: He-normal weights with ReLU's gain (whatever the activation), zero biases;
    # cuda-convnet: layers-18pct's N(0, 1e-4) for conv1, N(0, 0.01) elsewhere, zero biases;
    # default: PyTorch's own.
    init: Literal["kaiming", "cuda-convnet", "default"] = "kaiming"


@dataclass(frozen=True)
class Fig1Plan:
    """Shapes computed from a config without allocating weights."""

    channels: tuple[tuple[int, int], ...]  # (input, output) channels of conv1..conv3
    conv_maps: list[int]  # spatial size after each conv (before its pool)
    final_map: int  # spatial size after pool3
    fc_input: int  # flattened features entering the FC layer


def plan(cfg: Fig1Config) -> Fig1Plan:
    """Validate `cfg` and compute its feature-map sizes; raises ValueError naming the knob."""
    for name in ("num_classes", "in_channels", "image_size"):
        require_int(name, getattr(cfg, name))
    require_choice("activation", cfg.activation, FIG1_ACTIVATIONS)
    require_choice("lrn", cfg.lrn, (True, False))
    require_choice("init", cfg.init, FIG1_INITS)
    size, c_in, maps, channels = cfg.image_size, cfg.in_channels, [], []
    for layer in LAYERS:
        size = conv_out(size, KERNEL, 1, PADDING)
        maps.append(size)
        size = conv_out(size, *POOL, ceil=True)
        if size < 1:
            raise ValueError(f"image_size={cfg.image_size}: the feature map shrinks to zero at "
                             f"pool{layer.number}; alexnet-fig1 needs image_size >= 12")
        channels.append((c_in, layer.width))
        c_in = layer.width
    return Fig1Plan(tuple(channels), maps, size, c_in * size * size)
