"""The AlexNet family: AlexNet (2012), ZFNet (2013) and torchvision's AlexNet, one class.

Every architectural difference the papers argue about is a named knob of `AlexNetConfig`, so a
sweep can vary it. The layers come from the table in `alexnet_plan` (`CONVS`, `FCS`) as
resolved by `plan()`, which does the shape arithmetic before any weight is allocated and raises
a `ValueError` naming the knob at fault.
"""

from __future__ import annotations

import torch
from torch import nn

from service.models.alexnet_plan import LRN, AlexNetConfig, AlexNetPlan, plan
from service.models.common import FeaturesClassifier, clip_filter_rms, make_activation


class AlexNet(FeaturesClassifier):
    """AlexNet/ZFNet as `features` (conv stack) / `avgpool` / `classifier` (the FC layers)."""

    def __init__(self, cfg: AlexNetConfig):
        super().__init__()
        self.cfg = cfg
        self.plan = p = plan(cfg)
        self.filter_rms_clip = cfg.filter_rms_clip
        self.features = nn.Sequential(*_feature_layers(cfg, p))
        self.avgpool = (nn.AdaptiveAvgPool2d(cfg.adaptive_pool) if cfg.adaptive_pool
                        else nn.Identity())
        self.classifier = nn.Sequential(*_classifier_layers(cfg, p))
        if cfg.init == "paper":
            self._paper_init()
        elif cfg.init == "kaiming":
            self._kaiming_init()

    @torch.no_grad()
    def _paper_init(self) -> None:
        # AlexNet sec. 5: weights N(0, 0.01); biases as the layer table's paper_bias says.
        layers = self.plan.convs + self.plan.fcs
        for layer, m in zip(layers, self.conv_layers() + self.fc_layers(), strict=True):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.constant_(m.bias, layer.spec.paper_bias)

    @torch.no_grad()
    def _kaiming_init(self) -> None:
        # He et al. 2015 with ReLU's gain whatever the activation; zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def post_step(self) -> None:
        """Apply the constraints the paper applies after each SGD step (ZFNet's RMS clip)."""
        if self.filter_rms_clip:
            clip_filter_rms(self, self.filter_rms_clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C5, s, s)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, C5 * s * s)
        return self.classifier(x)  # (B, num_classes)


def _feature_layers(cfg: AlexNetConfig, p: AlexNetPlan) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for c in p.convs:
        layers += [nn.Conv2d(c.c_in, c.c_out, c.kernel, c.stride, c.padding, groups=c.groups),
                   make_activation(cfg.activation)]
        # PyTorch's LRN divides alpha by n, as Caffe's reference AlexNet does.
        norm = [nn.LocalResponseNorm(**LRN)] if cfg.lrn and c.spec.lrn else []
        pool = [nn.MaxPool2d(*p.pool, ceil_mode=cfg.pool_ceil)] if c.spec.pool else []
        layers += norm + pool if cfg.lrn_position == "before_pool" else pool + norm
    return layers


def _classifier_layers(cfg: AlexNetConfig, p: AlexNetPlan) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for f in p.fcs:
        fc = nn.Linear(f.d_in, f.d_out)
        if not f.spec.hidden:
            layers.append(fc)
        elif cfg.dropout_position == "input":  # torchvision's order: dropout feeds the FC
            layers += [nn.Dropout(cfg.dropout), fc, make_activation(cfg.activation)]
        else:
            layers += [fc, make_activation(cfg.activation), nn.Dropout(cfg.dropout)]
    return layers
