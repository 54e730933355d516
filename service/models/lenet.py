"""LeNet-5: the 1998 paper's network and the common modern variant, as presets of one class.

`lenet5-1998` keeps the paper's details: scaled tanh, trainable subsampling (a coefficient and a
bias per map), the C3 partial connection table and RBF output units with fixed +-1 codes, for
exactly 60,000 trainable parameters. `lenet5` is the variant most code calls LeNet-5: full C3,
max pooling, ReLU and a linear output (61,706 parameters at 10 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.models.common import make_activation
from service.models.lenet_plan import LeNetConfig, plan

# LeCun et al. 1998, Table I: which S2 maps (0-5) feed each C3 map (0-15).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class Subsampling(nn.Module):
    """The paper's S2/S4: sum of each 2x2 window times a trainable coefficient plus a bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = F.avg_pool2d(x, 2) * 4.0  # (B, C, H/2, W/2)
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv2d(nn.Module):
    """A conv whose output maps see only the input maps a connection table lists.

    Only the connected kernels are parameters (so the count is the paper's); the dense weight
    is assembled on the fly, zero where the table has no connection.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel: int):
        super().__init__()
        self.out_channels, self.in_channels, self.kernel = len(table), in_channels, kernel
        out_idx = [o for o, ins in enumerate(table) for _ in ins]
        in_idx = [i for ins in table for i in ins]
        self.register_buffer("out_idx", torch.tensor(out_idx), persistent=False)
        self.register_buffer("in_idx", torch.tensor(in_idx), persistent=False)
        fan_in = torch.tensor([len(ins) * kernel * kernel for ins in table])[self.out_idx]
        bound = (1.0 / fan_in.float()).sqrt().view(-1, 1, 1)  # PyTorch-like uniform init
        self.weight = nn.Parameter((torch.rand(len(in_idx), kernel, kernel) * 2 - 1) * bound)
        self.bias = nn.Parameter(torch.zeros(len(table)))

    def dense_weight(self) -> torch.Tensor:
        """The (out, in, k, k) weight with zeros for absent connections."""
        w = self.weight.new_zeros(self.out_channels, self.in_channels, self.kernel, self.kernel)
        return w.index_put((self.out_idx, self.in_idx), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)


class RBFOutput(nn.Module):
    """Euclidean RBF output units: logit_c = -||x - code_c||^2 with fixed +-1 codes.

    The paper drew its 84-dim codes as 7x12 bitmaps of the characters; we use fixed random
    +-1 codes (seeded), which keeps the codes far apart. They are buffers, not parameters.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        gen = torch.Generator().manual_seed(1998)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=gen) * 2.0 - 1.0
        self.register_buffer("codes", codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x, self.codes).pow(2)  # (B, num_classes)


class LeNet5(nn.Module):
    """LeNet-5 as `features` (C1..C5) and `classifier` (F6 and the output layer)."""

    def __init__(self, cfg: LeNetConfig):
        super().__init__()
        self.cfg = cfg
        self.plan = p = plan(cfg)

        def pool(channels: int) -> list[nn.Module]:
            if cfg.pool == "trainable":  # the paper squashes after subsampling too
                return [Subsampling(channels), make_activation(cfg.activation)]
            return [nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2)]

        c3 = PartialConv2d(C3_TABLE, 6, 5) if cfg.c3_table else nn.Conv2d(6, 16, 5)
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 6, 5), make_activation(cfg.activation), *pool(6),  # C1, S2
            c3, make_activation(cfg.activation), *pool(16),  # C3, S4
            nn.Conv2d(16, 120, 5), make_activation(cfg.activation),  # C5
        )
        n = cfg.num_classes
        out = RBFOutput(84, n) if cfg.output == "rbf" else nn.Linear(84, n)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(cfg.dropout),
            nn.Linear(p.fc_input, 84), make_activation(cfg.activation), out,  # F6, output
        )

    def conv_layers(self) -> list[nn.Module]:
        """C1, C3 and C5 in order."""
        return [m for m in self.features if isinstance(m, nn.Conv2d | PartialConv2d)]

    def post_step(self) -> None:
        """LeNet has no per-step constraint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, 1, 32, 32) -> (B, num_classes)
