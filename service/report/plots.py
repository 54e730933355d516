"""The sweep report's figures (matplotlib, Agg): learning curves, knob effects, importance and
parallel coordinates. Each function returns PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from service.results.records import TrialRecord  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def learning_curves(trials: list[TrialRecord], metric: str, max_epochs: int) -> bytes:
    """The sweep's metric per epoch for every trial; stopped trials end in an x, failed in red."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        hist = [h for h in t.history if metric in h]
        if not hist:
            continue
        x, y = [h["epoch"] for h in hist], [h[metric] for h in hist]
        style = {"completed": ("-", None, None), "stopped-early": ("--", "x", None)}.get(
            t.status, (":", "x", "tab:red"))
        line, = ax.plot(x, y, linestyle=style[0], color=style[2], alpha=0.85, lw=1.4,
                        label=t.trial_id if len(trials) <= 12 else None)
        if style[1]:
            ax.plot(x[-1], y[-1], style[1], color=line.get_color(), ms=8)
    ax.set_xlim(0.8, max_epochs + 0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("learning curves (dashed + x: stopped early; red: diverged or failed)")
    if len(trials) <= 12:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def knob_effects(effects: dict[str, dict[str, Any]], metric: str, epoch: int | None) -> bytes:
    """One panel per knob: mean metric at `epoch` with its 95% CI (from 3 trials on) per value
    (or per half of a range), over the individual trials as dots."""
    n = max(len(effects), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (knob, eff) in zip(axes[0], effects.items(), strict=False):
        rows = eff["rows"]
        xs = np.arange(len(rows))
        means = [r["mean"] if r["mean"] is not None else np.nan for r in rows]
        errs = [r["ci95"] or 0.0 for r in rows]
        ax.errorbar(xs, means, yerr=errs, fmt="o", capsize=5, color="tab:blue", zorder=3)
        if eff["kind"] == "choice":
            for x, r in zip(xs, rows, strict=True):
                pts = [v for k, v in eff["points"] if _same(k, r["value"])]
                ax.scatter(np.full(len(pts), x) + 0.12, pts, s=10, color="grey", alpha=0.6)
        ax.set_xticks(xs, [f"{r['value']}\nn={r['n']}" for r in rows], rotation=30, fontsize=8)
        pts = [v for _, v in eff["points"]]
        if pts:  # a CI from two trials can be wider than the metric's range: keep the data
            lo, hi = min(pts), max(pts)
            pad = 0.15 * (hi - lo) or 0.05
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(knob, fontsize=10)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} at epoch {epoch} per value (mean, 95% CI when n ≥ 3; dots: "
                 "trials)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _same(value: Any, label: str) -> bool:
    return (f"{value:.4g}" if isinstance(value, float) else str(value)) == label


def importance(importances: dict[str, float]) -> bytes:
    """Optuna's parameter importances as horizontal bars."""
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.45 * len(importances)))
    names = list(importances)[::-1]
    ax.barh(names, [importances[k] for k in names], color="tab:green")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    return _png(fig)


def parallel_coordinates(trials: list[TrialRecord], knobs: list[str], metric: str,
                         values: list[float | None]) -> bytes:
    """One polyline per trial across the searched knobs and the metric, coloured by the
    metric; categorical values are spread evenly on their axis."""
    cols = [*knobs, metric]
    table, ticks = [], []
    for k in knobs:
        raw = [t.config.get(k) for t in trials]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
            lo, hi = min(raw), max(raw)
            table.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in raw])
            ticks.append(([0, 1], [f"{lo:.3g}", f"{hi:.3g}"]))
        else:
            cats = sorted({str(v) for v in raw})
            pos = {c: i / max(len(cats) - 1, 1) for i, c in enumerate(cats)}
            table.append([pos[str(v)] for v in raw])
            ticks.append((list(pos.values()), cats))
    scored = [v for v in values if v is not None]
    lo, hi = (min(scored), max(scored)) if scored else (0.0, 1.0)
    table.append([((v - lo) / (hi - lo) if hi > lo else 0.5) if v is not None else 0.0
                  for v in values])
    ticks.append(([0, 1], [f"{lo:.3g}", f"{hi:.3g}"]))
    data = np.array(table).T  # (trials, columns)
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 4))
    cmap = plt.get_cmap("viridis")
    for row, t, v in zip(data, trials, values, strict=True):
        failed = t.failed or v is None
        ax.plot(range(len(cols)), row, color="tab:red" if failed else cmap(row[-1]),
                alpha=0.8, lw=1.5, linestyle=":" if failed else "-")
    for i, (pos, labels) in enumerate(ticks):
        ax.axvline(i, color="black", lw=0.8)
        for p, label in zip(pos, labels, strict=True):
            ax.text(i + 0.03, p, label, fontsize=7, va="center")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks([])
    ax.set_title(f"parallel coordinates (colour: {metric}; red dotted: failed)", fontsize=10)
    return _png(fig)
