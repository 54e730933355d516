"""How the report writes a number: one module for the HTML and the Markdown renderers, the
findings paragraph and the figures' axes, so that a value reads the same everywhere.

Accuracies in percent with one decimal (0.9639 -> 96.4%), their differences in points,
p-values to three decimals, parameters with thousands separators, FLOPs in k/M/G, seconds to
one decimal, hyperparameters to three significant digits. A missing value is a dash."""

from __future__ import annotations

import math
import numbers
from typing import Any

from service.metrics import ACCURACIES

MINUS = "−"  # U+2212: a minus sign, not a hyphen
DASH = "—"
SHARES = ("dead_fraction", "aliasing", "importance")  # fractions of a whole: shown in percent
PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def _real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _minus(text: str) -> str:
    return text.replace("-", MINUS)


def is_accuracy(metric: str) -> bool:
    """Whether `metric` is a fraction of correct predictions (shown in percent)."""
    return metric in ACCURACIES or metric.endswith("_acc")


def percent(value: float | None, decimals: int = 1) -> str:
    """A fraction in percent: 0.9639 -> '96.4%'."""
    if not _real(value):
        return DASH
    return _minus(f"{value * 100:.{decimals}f}%")


def signed(value: float, decimals: int = 1) -> str:
    """'+1.4', '−0.3'; '0.0' rather than a signed zero."""
    text = f"{value:+.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else _minus(text)


def count(value: float | None) -> str:
    """A whole number with thousands separators: 617992 -> '617,992'."""
    return f"{round(value):,}" if _real(value) else DASH


def si(value: float | None, digits: int = 3) -> str:
    """A large quantity with a k/M/G prefix at `digits` significant digits: '28.6 M'."""
    if not _real(value):
        return DASH
    for size, prefix in PREFIXES:
        if abs(value) >= size:
            return f"{sig(value / size, digits, zeros=True)} {prefix}"
    return sig(value, digits, zeros=True)


def seconds(value: float | None) -> str:
    """Seconds to one decimal: '4.4'."""
    return f"{value:.1f}" if _real(value) else DASH


def sig(value: float | None, digits: int = 3, zeros: bool = False) -> str:
    """A float at `digits` significant digits (0.2842 -> '0.284', 0.01234 -> '0.0123'); below
    0.001 in exponent form ('1.2e-5'), so that no number runs to many zeros. `zeros` keeps
    trailing zeros (a measured 0.500, where a setting reads 0.5)."""
    if not _real(value):
        return DASH
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        if "." in mantissa and not zeros:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return _minus(f"{mantissa}e{int(exponent)}")
    text = f"{value:{'#' if zeros else ''}.{digits}g}".rstrip(".")
    if "e" in text:  # a large float: write it out with separators
        return _minus(f"{value:,.0f}")
    return _minus(text)


def setting(value: Any) -> str:
    """A configuration value (a hyperparameter, a knob): floats at 3 significant digits,
    whole numbers with separators from 10,000, everything else as written."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return sig(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(setting(v) for v in value) + "]"
    return str(value)


def settings(config: dict[str, Any], keys: list[str] | None = None) -> str:
    """'conv1_kernel=11, dropout=0.284'."""
    return ", ".join(f"{k}={setting(config.get(k))}" for k in (keys or list(config)))


def metric(name: str, value: float | None) -> str:
    """A value of a reported metric, written for its kind: accuracies in percent, parameters
    with separators, FLOPs and throughput with a prefix, seconds, losses at 3 digits."""
    if not _real(value):
        return DASH
    if is_accuracy(name):
        return percent(value)
    if name in SHARES:
        return percent(value)
    if name == "params":
        return count(value)
    if name in ("flops", "images_per_s"):
        return si(value)
    if name.endswith("_s"):
        return seconds(value)
    return sig(value, zeros=True)


def ratio(value: float | None) -> str:
    """A measured ratio near 1 to two decimals: '0.45'."""
    return f"{value:.2f}" if _real(value) else DASH


def spread(name: str, half: float | None) -> str:
    """The half-width of a mean's interval: '± 1.3 pts' for an accuracy (percentage points),
    '± 0.0123' otherwise; a dash when there is none (fewer than 3 values)."""
    if not _real(half):
        return DASH
    if is_accuracy(name):
        return f"± {abs(half) * 100:.1f} pts"
    return f"± {metric(name, abs(half))}"


def p_value(p: float | None, alpha: float | None = None) -> str:
    """'<0.001', '0.0031', '0.059', '0.723': three decimals, two significant digits below 0.01,
    and a fourth decimal where three would round a p below `alpha` up to it."""
    if not _real(p):
        return DASH
    if p < 0.001:
        return "<0.001"
    text = f"{p:.2g}" if p < 0.01 else f"{p:.3f}"
    if alpha is not None and p < alpha <= float(text):
        text = f"{p:.4f}"
        if float(text) >= alpha:
            text = f"<{alpha:g}"
    return text


def axis(name: str) -> tuple[float, str]:
    """(scale, label) for a figure's axis of `name`: accuracies in percent, FLOPs and
    parameters in millions."""
    if is_accuracy(name):
        return 100.0, f"{name} (%)"
    if name == "flops":
        return 1e-6, "FLOPs per image (millions)"
    if name == "params":
        return 1e-6, "parameters (millions)"
    if name == "images_per_s":
        return 1.0, "training images per second"
    if name.endswith("_s"):
        return 1.0, f"{name} (seconds)"
    return 1.0, name


def percent_axis(ax, which: str = "y") -> None:
    """Tick labels of a fraction axis (0..1) in percent."""
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if which == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.0f}%"))


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 trial', '3 trials'."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def join(items: list[str], last: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"
