"""The Ablation section's figures: the forest plot of the arms' effects, each seed's paired
values and the expected best-of-k tuning curves. Each function returns PNG bytes."""

from __future__ import annotations

from typing import Any

from service.report import fmt
from service.report.data import MIN_CI_N
from service.report.plots import plt, to_png

VERDICT_COLOURS = {"helps": "tab:green", "hurts": "tab:red", "not resolved": "tab:gray"}


def forest(groups: list[tuple[str, list[tuple[dict[str, Any], str]]]], scale: float, unit: str,
           metric: str, mode: str, alpha: float) -> bytes:
    """An ablation's forest plot: per row (arm, then a factorial design's main effects and
    interactions, each group under its label) the effect * scale with its Student t interval,
    coloured by its verdict, around a zero line (no interval below MIN_CI_N seeds: the point
    alone); beside it the row's text (effect, interval and verdict, so that a short bar next to a
    long one still reads)."""
    lines: list[tuple[float, tuple[dict[str, Any], str]]] = []
    labels: list[tuple[float, str]] = []
    y = 0.0
    for label, rows in groups:
        if len(groups) > 1:
            labels.append((y, label))
            y -= 1
        for row in rows:
            lines.append((y, row))
            y -= 1
        y -= 0.5
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.42 * (len(lines) + len(labels))))
    ax.axvline(0, color="black", lw=1)
    for y, (row, text) in lines:
        colour = VERDICT_COLOURS.get(row["verdict"], "tab:gray")
        if row["n"] >= MIN_CI_N:
            ax.hlines(y, row["ci_low"] * scale, row["ci_high"] * scale, color=colour, lw=3)
        ax.plot(row["effect"] * scale, y, "o", color=colour, ms=7, mec="black", mew=0.6)
        ax.text(1.02, y, text, transform=ax.get_yaxis_transform(), va="center",
                color=colour, fontsize=9)
    for y, label in labels:
        ax.text(0.0, y, label, transform=ax.get_yaxis_transform(), va="center",
                fontsize=9, fontweight="bold")
        if y < 0:
            ax.axhline(y + 0.75, color="grey", lw=0.6, ls="--")
    ax.set_yticks([y for y, _ in lines], [row["name"] for _, (row, _) in lines])
    ax.set_ylim(min(y for y, _ in lines) - 0.7, 0.7)
    ax.set_xlabel(f"{metric}: arm − baseline" + (f" ({unit.strip()})" if unit.strip() else "")
                  + f"; {'higher' if mode == 'max' else 'lower'} is better")
    ax.set_title(f"effect of each arm, {1 - alpha:.0%} t interval, paired by seed", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def paired_seeds(arms: list[dict[str, Any]], metric: str) -> bytes:
    """One panel per arm: each seed's baseline value joined to its arm value (green where the
    arm did better, red where worse), so that the pairing is visible."""
    arms = [a for a in arms if a.get("per_seed")]
    cols = min(4, len(arms))
    nrows = -(-len(arms) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(arms):]:
        ax.set_visible(False)
    for ax, arm in zip(axes.flat, arms, strict=False):
        sign = 1 if arm.get("mode", "max") == "max" else -1
        for r in arm["per_seed"]:
            better = sign * r["diff"] > 0
            colour = "tab:green" if better else ("tab:red" if r["diff"] else "tab:gray")
            ax.plot([0, 1], [r["baseline"], r["arm"]], "-o", color=colour, ms=4, alpha=0.8)
            ax.text(1.06, r["arm"], str(r["seed"]), fontsize=7, va="center")
        ax.set_xticks([0, 1], ["baseline", arm["name"]], fontsize=8)
        ax.set_xlim(-0.25, 1.3)
        ax.set_title(f"{arm['name']} (n={arm['n']})", fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
        if fmt.is_accuracy(metric):
            fmt.percent_axis(ax)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("per seed: baseline → arm (green: arm better; numbers: seeds)", fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def expected_best(curves: dict[str, list[float]], metric: str) -> bytes:
    """Each arm's expected best value after k tuning trials, k = 1..trials."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in curves.items():
        if values:
            ax.plot(range(1, len(values) + 1), values, "-o", ms=3, label=name)
    ax.set_xlabel("tuning trials k")
    ax.set_ylabel(f"expected best {metric}")
    if fmt.is_accuracy(metric):
        fmt.percent_axis(ax)
    ax.set_title("expected best of k tuning trials (equal budget per arm)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def boundaries(looks: list[dict[str, Any]], n_max: int) -> bytes:
    """Sequential seeds: each arm's paired t statistic at every look it was tested (x: seeds n
    so far), with the two-sided boundary it was tested against (±, dashed, the arm's colour);
    an arm that stopped is marked by its decision at its last look."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    arms = list(dict.fromkeys(r["arm"] for r in looks))
    for i, arm in enumerate(arms):
        rows = [r for r in looks if r["arm"] == arm and r["statistic"] is not None]
        if not rows:
            continue
        colour = f"C{i % 10}"
        n = [r["n"] for r in rows]
        ax.plot(n, [r["statistic"] for r in rows], "-o", color=colour, label=arm)
        bound = [(r["n"], r["boundary"]) for r in rows if r["boundary"] is not None]
        if bound:
            xs, bs = zip(*bound, strict=True)
            for sign in (1, -1):  # a marker too: an arm tested once has a one-point boundary
                ax.plot(xs, [sign * b for b in bs], "--_", color=colour, alpha=0.6, ms=14)
        last = rows[-1]
        if last["decision"] != "continue":
            ax.annotate(last["decision"], (last["n"], last["statistic"]),
                        textcoords="offset points", xytext=(6, 4), fontsize=8, color=colour)
    ax.axhline(0, color="black", linewidth=0.8)
    reach = [abs(r[k]) for r in looks for k in ("statistic", "boundary") if r[k] is not None]
    top = 1.6 * max(reach, default=1.0)
    ax.set_ylim(-top, top)
    ax.set_xlim(0, n_max + 1)
    ax.set_xlabel("seeds per cell (n) at the look")
    ax.set_ylabel("paired t (arm − baseline)")
    ax.set_yscale("symlog", linthresh=2)
    ax.legend(fontsize=8, loc="best")
    return to_png(fig)
