"""Shape arithmetic, knob checks and knob declarations of the model family, without torch.

Spec validation runs these in the sweep's driver, which never imports torch (its memory)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ACTIVATIONS = ("relu", "tanh", "sigmoid", "scaled_tanh")

ARCHITECTURE = "architecture"  # dataclass field metadata key; see `architectural`


def architectural(default: Any) -> Any:
    """A config field whose value makes a different network (its layers, their sizes or their
    functions), as opposed to how the network is trained or fed. The report's model comparison
    groups trials by these (`registry.architecture_knobs`); `default` must be immutable."""
    return dataclasses.field(default=default, metadata={ARCHITECTURE: True})


def require_int(name: str, value: Any, low: int = 1) -> None:
    """ValueError naming the knob unless `value` is an int (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}")


def require_number(name: str, value: Any, low: float, high: float, high_open: bool) -> None:
    """ValueError naming the knob unless `value` is a real number in [low, high] / [low, high)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name}={value!r}: must be a number in [{low:g}, {high:g}"
                         f"{')' if high_open else ']'}")


def require_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """ValueError naming the knob unless `value` is one of `allowed` (bools stay bools)."""
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(str, allowed))}")


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0, ceil: bool = False) -> int:
    """Spatial output size of a convolution or pooling window, as PyTorch computes it."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    steps = math.ceil(span / stride) if ceil else span // stride
    out = steps + 1
    # PyTorch drops a last ceil-mode window that would start in the right padding.
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out
