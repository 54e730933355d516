"""The AlexNet family: AlexNet (2012), ZFNet (2013) and torchvision's AlexNet, one class.

Every architectural difference the papers argue about is a named knob of `AlexNetConfig`, so a
sweep can vary it. `plan()` does the shape arithmetic before any weight is allocated and raises a
`ValueError` naming the knob at fault.
"""

from __future__ import annotations

import torch
from torch import nn

from service.models.alexnet_plan import AlexNetConfig, plan, removed
from service.models.common import clip_filter_rms, make_activation


class AlexNet(nn.Module):
    """AlexNet/ZFNet as `features` (conv stack) / `avgpool` / `classifier` (three FC layers)."""

    def __init__(self, cfg: AlexNetConfig):
        super().__init__()
        self.cfg = cfg
        self.plan = p = plan(cfg)
        self.filter_rms_clip = cfg.filter_rms_clip
        self.features = nn.Sequential(*self._feature_layers(cfg, p.widths))
        self.avgpool = (nn.AdaptiveAvgPool2d(cfg.adaptive_pool) if cfg.adaptive_pool
                        else nn.Identity())
        self.classifier = nn.Sequential(*self._classifier_layers(cfg, p.fc_input))
        if cfg.init == "paper":
            self._paper_init()
        elif cfg.init == "kaiming":
            self._kaiming_init()

    @staticmethod
    def _feature_layers(cfg: AlexNetConfig, widths: tuple[int, ...]) -> list[nn.Module]:
        pk, ps = (3, 2) if cfg.pool == "overlap" else (2, 2)
        gone = removed(cfg)
        convs = [  # (layer, in, out, kernel, stride, padding, groups)
            (0, cfg.in_channels, widths[0], cfg.conv1_kernel, cfg.conv1_stride,
             cfg.conv1_padding, 1),
            (1, widths[0], widths[1], 5, cfg.conv2_stride, cfg.conv2_padding, cfg.groups),
            (2, widths[1], widths[2], 3, 1, 1, 1),
            (3, widths[2], widths[3], 3, 1, 1, cfg.groups),
            (4, widths[1] if 4 in gone else widths[3], widths[4], 3, 1, 1, cfg.groups),
        ]
        layers: list[nn.Module] = []
        for i, c_in, c_out, k, s, pad, g in convs:
            if i + 1 in gone:
                continue
            layers += [nn.Conv2d(c_in, c_out, k, s, pad, groups=g), make_activation(cfg.activation)]
            # PyTorch's LRN divides alpha by n, as Caffe's reference AlexNet does.
            lrn = cfg.lrn and i < 2
            norm = [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []
            pool = [nn.MaxPool2d(pk, ps, ceil_mode=cfg.pool_ceil)] if i in (0, 1, 4) else []
            layers += norm + pool if cfg.lrn_position == "before_pool" else pool + norm
        return layers

    @staticmethod
    def _classifier_layers(cfg: AlexNetConfig, fc_input: int) -> list[nn.Module]:
        act, gone = cfg.activation, removed(cfg)
        if 6 in gone:  # FC8 straight on the conv features
            return [nn.Linear(fc_input, cfg.num_classes)]
        fc6, fc7 = nn.Linear(fc_input, cfg.fc_width), nn.Linear(cfg.fc_width, cfg.fc_width)
        fc8 = nn.Linear(cfg.fc_width, cfg.num_classes)
        if 7 in gone:
            drop = [nn.Dropout(cfg.dropout)]
            return (drop + [fc6, make_activation(act)] if cfg.dropout_position == "input"
                    else [fc6, make_activation(act)] + drop) + [fc8]
        if cfg.dropout_position == "input":  # torchvision's order: dropout feeds FC6 and FC7
            return [nn.Dropout(cfg.dropout), fc6, make_activation(act),
                    nn.Dropout(cfg.dropout), fc7, make_activation(act), fc8]
        return [fc6, make_activation(act), nn.Dropout(cfg.dropout),
                fc7, make_activation(act), nn.Dropout(cfg.dropout), fc8]

    @torch.no_grad()
    def _paper_init(self) -> None:
        # AlexNet: weights N(0, 0.01); bias 1 in conv2, conv4, conv5 and the hidden FCs, else 0.
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for m in convs + fcs:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        # Bias 1 in conv2, conv4, conv5 and the hidden FCs (those not removed).
        numbers = [n for n in (1, 2, 3, 4, 5) if n not in removed(self.cfg)]
        ones = [c for n, c in zip(numbers, convs, strict=True) if n in (2, 4, 5)] + fcs[:-1]
        for m in ones:
            nn.init.ones_(m.bias)

    @torch.no_grad()
    def _kaiming_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def conv_layers(self) -> list[nn.Conv2d]:
        """The five conv layers in order (for analyses such as filters and deconvnet)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def post_step(self) -> None:
        """Apply the constraints the paper applies after each SGD step (ZFNet's RMS clip)."""
        if self.filter_rms_clip:
            clip_filter_rms(self, self.filter_rms_clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C5, s, s)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, C5 * s * s)
        return self.classifier(x)  # (B, num_classes)
