"""AlexNet's Figure 1 network (ReLU vs tanh on CIFAR-10) as a torch module.

The layers come from `fig1_plan.LAYERS` as sized by `plan()`, which validates the knobs before
any weight is allocated; see `fig1_plan` for what the paper says and what we assume.
"""

from __future__ import annotations

import torch
from torch import nn

from service.models.alexnet_plan import LRN
from service.models.common import FeaturesClassifier, make_activation
from service.models.fig1_plan import KERNEL, LAYERS, PADDING, POOL, Fig1Config, plan


class Fig1Net(FeaturesClassifier):
    """Three conv blocks (`features`) and one fully-connected layer (`classifier`)."""

    def __init__(self, cfg: Fig1Config):
        super().__init__()
        self.cfg = cfg
        self.plan = p = plan(cfg)
        layers: list[nn.Module] = []
        for layer, (c_in, c_out) in zip(LAYERS, p.channels, strict=True):
            pool = (nn.MaxPool2d if layer.pool == "max" else nn.AvgPool2d)(*POOL, ceil_mode=True)
            act = make_activation(cfg.activation)
            layers += [nn.Conv2d(c_in, c_out, KERNEL, padding=PADDING),
                       *((pool, act) if layer.act_after_pool else (act, pool))]
            if cfg.lrn and layer.lrn:
                layers.append(nn.LocalResponseNorm(**LRN))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(p.fc_input, cfg.num_classes))
        if cfg.init != "default":
            self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for i, m in enumerate(self.conv_layers() + self.fc_layers()):
            if self.cfg.init == "kaiming":  # as AlexNet's kaiming init: fan_out for convs
                mode = "fan_out" if isinstance(m, nn.Conv2d) else "fan_in"
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            else:  # cuda-convnet's initW: 1e-4 for conv1, 0.01 for the rest
                nn.init.normal_(m.weight, 0.0, 1e-4 if i == 0 else 0.01)
            nn.init.zeros_(m.bias)

    def post_step(self) -> None:
        """No per-step constraint (the figure's nets had no regularisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, C, s, s) -> (B, num_classes)
