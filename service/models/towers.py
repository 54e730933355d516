"""AlexNet's two towers on two devices: the paper's model parallelism, built from a grouped model.

Krizhevsky et al. (2012) put half of every layer's kernels on each of two GPUs; the GPUs
exchange activations only at conv3 and at the fully-connected layers. Our `AlexNet` with
`groups=2` computes the same function on one device: conv1 is dense but conv2's two groups read
its two output halves, so tower k owns conv1's output half k, and conv2/4/5 are grouped. Every
split layer is therefore the grouped layer's output half k (dim 0 of weight and bias), which
makes the mapping back to the grouped state_dict a concatenation.

The one departure from the paper: its LRN normalises within a GPU's own maps, while the grouped
model's LRN window (n=5) crosses the half boundary. The split reproduces the grouped model, so
each tower borrows its neighbour's 2 boundary maps (a "halo") before its LRN. See
docs/model-parallel.md.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from service.models.alexnet import AlexNet
from service.models.alexnet_plan import TOWERS, check_towers
from service.models.common import clip_filter_rms


def tower_devices(primary: torch.device) -> tuple[torch.device, torch.device]:
    """Tower 0 on `primary`; tower 1 on the next visible GPU if there is one, else `primary`.

    Under Ray Train a worker with gpus_per_worker: 2 sees exactly its two GPUs (cuda:0, cuda:1).
    """
    if primary.type != "cuda" or torch.cuda.device_count() < 2:
        return primary, primary
    index = primary.index if primary.index is not None else torch.cuda.current_device()
    return primary, torch.device("cuda", (index + 1) % torch.cuda.device_count())


def _gather(xs: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The towers' halves side by side on `device`, in the grouped model's channel order."""
    return torch.cat([x.to(device) for x in xs], 1)


class _Tower(nn.Module):
    """One tower: its half of conv1..conv5 and FC6/FC7 (stateless layers copied alongside)."""

    def __init__(self, grouped: AlexNet, k: int, device: torch.device):
        super().__init__()
        self.features = nn.Sequential(*[_half(m, k, device) for m in grouped.features])
        self.avgpool = copy.deepcopy(grouped.avgpool)
        self.classifier = nn.Sequential(*[_half(m, k, device) for m in grouped.classifier[:-1]])


@torch.no_grad()
def _half(module: nn.Module, k: int, device: torch.device) -> nn.Module:
    """Tower k's part of a grouped layer: output half k of a conv/FC, else a copy of the layer."""
    if not isinstance(module, nn.Conv2d | nn.Linear):
        return copy.deepcopy(module)
    w, b = module.weight.chunk(TOWERS, 0)[k], module.bias.chunk(TOWERS, 0)[k]
    if isinstance(module, nn.Conv2d):
        # A grouped conv's weight is (out, in/groups, kh, kw): its half k reads input half k.
        half = nn.Conv2d(w.shape[1], w.shape[0], module.kernel_size, module.stride,
                         module.padding, device=device)
    else:
        half = nn.Linear(w.shape[1], w.shape[0], device=device)
    half.weight.copy_(w)
    half.bias.copy_(b)
    return half


class TowerAlexNet(nn.Module):
    """A grouped AlexNet split into two towers, each owning its weights on its own device.

    Why own copies rather than views of the grouped weights: a view cannot live on a second GPU,
    and the paper's point is that each GPU holds half the weights. The grouped layout stays the
    source of truth on disk: `state_dict()` returns the grouped model's keys and shapes and
    `load_state_dict()` takes them, so checkpoints load into either model. (The optimiser's
    state follows this module's own parameters: resume with the same `model_parallel`.)
    """

    def __init__(self, grouped: AlexNet, devices: Sequence[torch.device]):
        super().__init__()
        check_towers(grouped.cfg)
        if len(devices) != TOWERS:
            raise ValueError(f"devices: need {TOWERS}, one per tower; got {len(devices)}")
        self.cfg = grouped.cfg
        self.devices = tuple(torch.device(d) for d in devices)
        self.filter_rms_clip = grouped.cfg.filter_rms_clip
        # Which convs exchange activations, from the layer table: conv1 reads the image (whole on
        # every tower) and a grouped conv its own tower's half; a dense conv after conv1 (conv3)
        # reads both towers' maps.
        self._exchange = tuple(i > 0 and not c.spec.grouped
                               for i, c in enumerate(grouped.plan.convs))
        self.towers = nn.ModuleList(_Tower(grouped, k, d) for k, d in enumerate(self.devices))
        # FC8 reads both towers' FC7 units; it lives with tower 0, where the logits are wanted.
        self.fc8 = copy.deepcopy(grouped.classifier[-1]).to(self.devices[0])
        self._fc8_key = f"classifier.{len(grouped.classifier) - 1}"

    @classmethod
    def from_grouped(cls, model: AlexNet,
                     devices: Sequence[torch.device | str] = ("cpu", "cpu")) -> TowerAlexNet:
        """The tower split of `model` (AlexNet, groups=2) with tower k's weights on devices[k]."""
        return cls(model, [torch.device(d) for d in devices])

    # --- the grouped layout ----------------------------------------------------------------

    def _to_grouped(self, get: Callable[[nn.Parameter], torch.Tensor | None]
                    ) -> OrderedDict[str, torch.Tensor | None]:
        out: OrderedDict[str, torch.Tensor | None] = OrderedDict()
        dev = self.devices[0]
        for name, _ in self.towers[0].named_parameters():
            halves = [get(t.get_parameter(name)) for t in self.towers]
            out[name] = (None if any(h is None for h in halves)
                         else torch.cat([h.to(dev) for h in halves], 0))
        for name, p in self.fc8.named_parameters():
            out[f"{self._fc8_key}.{name}"] = get(p)
        return OrderedDict(sorted(out.items(), key=lambda kv: _grouped_order(kv[0])))

    def grouped_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """The weights in the grouped AlexNet's layout (keys, shapes), on tower 0's device."""
        return self._to_grouped(lambda p: p.detach())  # type: ignore[return-value]

    def grouped_grads(self) -> OrderedDict[str, torch.Tensor | None]:
        """The gradients in the grouped AlexNet's layout (None where a tower has none)."""
        return self._to_grouped(lambda p: p.grad)

    def state_dict(self, *, destination: dict[str, Any] | None = None, prefix: str = "",
                   keep_vars: bool = False) -> dict[str, Any]:  # type: ignore[override]
        """The grouped model's state_dict, so a checkpoint loads into `AlexNet` as well.

        `keep_vars` cannot hold: the grouped tensors are concatenations, not the parameters.
        """
        out = OrderedDict() if destination is None else destination
        for key, value in self.grouped_state_dict().items():
            out[prefix + key] = value
        return out

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> None:  # type: ignore[override]
        """Load a grouped AlexNet's state_dict (as saved by either model), slicing the halves."""
        expected = self.grouped_state_dict()
        missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
        if strict and (missing or unexpected):
            raise RuntimeError(f"TowerAlexNet.load_state_dict: missing {sorted(missing)}, "
                               f"unexpected {sorted(unexpected)}")
        for name, _ in self.towers[0].named_parameters():
            if name in state_dict:
                for k, tower in enumerate(self.towers):
                    tower.get_parameter(name).copy_(state_dict[name].chunk(TOWERS, 0)[k])
        for name, p in self.fc8.named_parameters():
            key = f"{self._fc8_key}.{name}"
            if key in state_dict:
                p.copy_(state_dict[key])

    # --- training --------------------------------------------------------------------------

    def post_step(self) -> None:
        """ZFNet's filter RMS clip, as AlexNet.post_step: each filter lives whole in one tower."""
        if self.filter_rms_clip:
            clip_filter_rms(self, self.filter_rms_clip)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Every tower sees the whole image, as both GPUs did in the paper.
        xs = [x.to(d) for d in self.devices]
        exchange = iter(self._exchange)
        for layers in zip(*(t.features for t in self.towers), strict=True):
            m0 = layers[0]
            if isinstance(m0, nn.Conv2d):
                ins = [_gather(xs, d) for d in self.devices] if next(exchange) else xs
                xs = [m(x) for m, x in zip(layers, ins, strict=True)]
            elif isinstance(m0, nn.LocalResponseNorm):
                xs = _lrn_with_halo(m0, xs)
            else:
                xs = [m(x) for m, x in zip(layers, xs, strict=True)]
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self._features(x)  # per tower (B, C5/2, s, s)
        xs = [torch.flatten(t.avgpool(x), 1) for t, x in zip(self.towers, xs, strict=True)]
        for layers in zip(*(t.classifier for t in self.towers), strict=True):
            if isinstance(layers[0], nn.Linear):  # FC6, FC7: each tower reads both halves
                xs = [m(_gather(xs, d)) for m, d in zip(layers, self.devices, strict=True)]
            else:  # activations and dropout act on a tower's own units
                xs = [m(x) for m, x in zip(layers, xs, strict=True)]
        return self.fc8(_gather(xs, self.devices[0]))  # (B, num_classes) on tower 0's device


def _lrn_with_halo(lrn: nn.LocalResponseNorm, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The grouped model's LRN across the tower boundary: borrow the neighbour's edge maps."""
    before, after = lrn.size // 2, (lrn.size - 1) // 2  # PyTorch's window around channel c
    x0, x1 = xs
    left = x0[:, max(0, x0.shape[1] - before):]  # (B, <=before, H, W); empty for n=1
    y0 = lrn(torch.cat([x0, x1[:, :after].to(x0.device)], 1))[:, :x0.shape[1]]
    y1 = lrn(torch.cat([left.to(x1.device), x1], 1))[:, left.shape[1]:]
    return [y0, y1]


def _grouped_order(key: str) -> tuple[int, int]:
    """Sort key giving AlexNet's own state_dict order (a stable sort keeps weight before bias)."""
    block, index, _ = key.split(".")
    return (0 if block == "features" else 1, int(index))


def split_towers(model: AlexNet, primary: torch.device) -> TowerAlexNet:
    """`model`'s tower split on `tower_devices(primary)` (what `model_parallel: towers` does)."""
    return TowerAlexNet.from_grouped(model, tower_devices(primary))
