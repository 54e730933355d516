"""Shared pieces of the model family: activations, shape arithmetic and filter renormalisation."""

from __future__ import annotations

import torch
from torch import nn

from service.models.shapes import ACTIVATIONS


class FeaturesClassifier(nn.Module):
    """A net built as `features` (convs, pools, norms) then `classifier` (the FC layers): its
    conv and FC layers in order, for the analyses (filters, deconvnet, aliasing)."""

    features: nn.Sequential
    classifier: nn.Sequential

    def conv_layers(self) -> list[nn.Conv2d]:
        """The conv layers in order."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def fc_layers(self) -> list[nn.Linear]:
        """The fully-connected layers in order (the output layer last)."""
        return [m for m in self.classifier if isinstance(m, nn.Linear)]


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 * tanh(2a/3) (LeNet-5, 1998)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


def make_activation(name: str) -> nn.Module:
    """Build the activation named by the `activation` knob."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "scaled_tanh":
        return ScaledTanh()
    raise ValueError(f"activation={name!r}: must be one of {', '.join(ACTIVATIONS)}")


@torch.no_grad()
def clip_filter_rms(model: nn.Module, max_rms: float) -> int:
    """Renormalise every conv filter whose RMS exceeds `max_rms` down to `max_rms` (ZFNet).

    Returns how many filters were rescaled, so a caller can log how often the clip bites.
    """
    clipped = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight  # (out, in/groups, k, k)
            rms = w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            over = rms > max_rms
            if over.any():
                w.mul_(torch.where(over, max_rms / rms, torch.ones_like(rms)))
                clipped += int(over.sum())
    return clipped


def count_params(model: nn.Module) -> int:
    """Trainable parameters (fixed buffers such as LeNet's RBF codes do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
