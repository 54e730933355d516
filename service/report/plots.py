"""The sweep report's figures (matplotlib, Agg): learning curves, knob effects, importance and
parallel coordinates. Each function returns PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from service.report import fmt  # noqa: E402
from service.results.records import TrialRecord  # noqa: E402


def to_png(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _metric_axis(ax, metric: str, size: int | None = None) -> None:
    """Label the y axis with the metric; an accuracy's ticks in percent."""
    ax.set_ylabel(metric, fontsize=size)
    if fmt.is_accuracy(metric):
        fmt.percent_axis(ax)


STYLES = {"completed": ("-", None, None), "stopped-early": ("--", "x", None)}
FAILED_STYLE = (":", "x", "tab:red")


def _curve(ax, trial: TrialRecord, metric: str, **kw) -> None:
    """One trial's curve: dashed and ending in an x when stopped early, red when it failed."""
    hist = [h for h in trial.history if metric in h]
    if not hist:
        return
    x, y = [h["epoch"] for h in hist], [h[metric] for h in hist]
    style = STYLES.get(trial.status, FAILED_STYLE)
    line, = ax.plot(x, y, linestyle=style[0], color=style[2] or kw.pop("color", None),
                    marker="o" if len(x) == 1 else None, **kw)
    if style[1]:
        ax.plot(x[-1], y[-1], style[1], color=line.get_color(), ms=8)


def learning_curves(trials: list[TrialRecord], metric: str, max_epochs: int,
                    bands: dict[str, Any] | None = None) -> bytes:
    """The sweep's metric per epoch for every trial; stopped trials end in an x, failed in red.
    With `bands` (report.data.curve_bands: a sweep of many trials) the median and 10-90% band
    per epoch instead, with the best few trials drawn one by one."""
    if bands is not None:
        return _learning_bands(trials, metric, max_epochs, bands)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        _curve(ax, t, metric, alpha=0.85, lw=1.4,
               label=t.trial_id if len(trials) <= 12 else None)
    ax.set_xlim(0.8, max_epochs + 0.2)
    ax.set_xlabel("epoch")
    _metric_axis(ax, metric)
    ax.set_title("learning curves (dashed + x: stopped early; red: diverged or failed)")
    if len(trials) <= 12 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return to_png(fig)


def _learning_bands(trials: list[TrialRecord], metric: str, max_epochs: int,
                    bands: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = bands["epochs"]
    x = np.array([r["epoch"] for r in rows], dtype=float)
    lo, mid, hi = (np.array([r[k] for r in rows]) for k in ("p10", "median", "p90"))
    band = "10-90% of the trials at each epoch (n under it)"
    if len(x) > 1:
        ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.22, lw=0, label=band)
    else:  # one epoch: the band is a bar, over every trial's value as a dot
        ax.bar(x, hi - lo, bottom=lo, width=0.25, color="tab:blue", alpha=0.22, label=band)
        values = [h[metric] for t in trials for h in t.history
                  if h.get("epoch") == x[0] and metric in h]
        jitter = np.random.default_rng(0).uniform(-0.1, 0.1, len(values))
        ax.scatter(x[0] + jitter, values, s=5, color="grey", alpha=0.5, lw=0,
                   label="each trial")
    ax.plot(x, mid, "o-", color="tab:blue", lw=2.2, ms=4,
            label="median of the trials at each epoch")
    by_id = {t.trial_id: t for t in trials}
    colours = plt.get_cmap("autumn")(np.linspace(0, 0.8, max(len(bands["best"]), 1)))
    for i, (top, colour) in enumerate(zip(bands["best"], colours, strict=False), 1):
        _curve(ax, by_id[top["trial_id"]], metric, color=colour, lw=1.3, alpha=0.95, zorder=3,
               label=f"#{i} {top['trial_id']} ({fmt.metric(metric, top['score'])})")
    st = bands["statuses"]
    failed = sum(n for k, n in st.items() if k not in STYLES)
    ax.plot([], [], " ", label=f"{st.get('completed', 0)} completed, "
            f"{st.get('stopped-early', 0)} stopped early, {failed} diverged or failed")
    ax.set_xlim(0.6, max_epochs + 0.4)
    ticks = [r["epoch"] for r in rows]
    ax.set_xticks(ticks, [f"{e}\nn={r['n']}" for e, r in zip(ticks, rows, strict=True)]
                  if len(ticks) <= 16 else ticks, fontsize=8)
    ax.set_xlabel("epoch")
    _metric_axis(ax, metric)
    ax.set_title(f"learning curves of {bands['trials']} trials: median and 10-90% band; "
                 f"the best {len(bands['best'])} drawn", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data
    ax.grid(alpha=0.3)
    return to_png(fig)


def knob_effects(effects: dict[str, dict[str, Any]], metric: str, epoch: int | None) -> bytes:
    """One panel per knob: mean metric at `epoch` with its 95% CI (from 3 trials on) per value
    (or per half of a range), over the individual trials as dots."""
    n = max(len(effects), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (knob, eff) in zip(axes[0], effects.items(), strict=False):
        rows = eff["rows"]
        xs = np.arange(len(rows))
        means = [r["mean"] if r["mean"] is not None else np.nan for r in rows]
        errs = [np.nan if r["ci95"] is None else r["ci95"] for r in rows]  # none below n = 3
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
        _metric_axis(ax, metric, 8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} at epoch {epoch} per value (mean, 95% CI when n ≥ 3; dots: "
                 "trials)", fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def _same(value: Any, label: str) -> bool:
    return fmt.setting(value) == label  # as data.value_label names a choice


def importance(evaluators: dict[str, dict[str, float]]) -> bytes:
    """Parameter importances as horizontal bars, one bar per evaluator for each knob (grouped;
    knobs in the first evaluator's order, largest at the top)."""
    names = list(next(iter(evaluators.values())))[::-1]
    fig, ax = plt.subplots(figsize=(5, 0.7 + 0.3 * len(names) * (len(evaluators) + 0.5)))
    height = 0.8 / len(evaluators)
    colors = ("tab:green", "tab:gray", "tab:blue")
    for i, (name, shares) in enumerate(evaluators.items()):
        pos = np.arange(len(names)) + (len(evaluators) - 1 - 2 * i) * height / 2
        ax.barh(pos, [shares.get(k, 0.0) for k in names], height, label=name,
                color=colors[i % len(colors)])
    ax.set_yticks(np.arange(len(names)), names)
    ax.set_xlabel("share of the knobs' importance (each evaluator sums to 100%)")
    ax.set_xlim(0, 1)
    fmt.percent_axis(ax, "x")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(evaluators),
              frameon=False)
    return to_png(fig)


def parallel_coordinates(trials: list[TrialRecord], knobs: list[str], metric: str,
                         values: list[float | None], highlight: list[str] | None = None) -> bytes:
    """One polyline per trial across the searched knobs and the metric, coloured by the
    metric; categorical values are spread evenly on their axis. With `highlight` (trial ids:
    a sweep of many trials) the lines are thin and faint, drawn in the metric's order, failed
    trials only counted, and the highlighted trials drawn bold on top."""
    cols = [*knobs, metric]
    table, ticks = [], []
    for k in knobs:
        raw = [t.config.get(k) for t in trials]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
            lo, hi = min(raw), max(raw)
            table.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in raw])
            ticks.append(([0, 1], [fmt.setting(lo), fmt.setting(hi)]))
        else:
            cats = sorted({str(v) for v in raw})
            pos = {c: i / max(len(cats) - 1, 1) for i, c in enumerate(cats)}
            table.append([pos[str(v)] for v in raw])
            ticks.append((list(pos.values()), cats))
    scored = [v for v in values if v is not None]
    lo, hi = (min(scored), max(scored)) if scored else (0.0, 1.0)
    table.append([((v - lo) / (hi - lo) if hi > lo else 0.5) if v is not None else 0.0
                  for v in values])
    ticks.append(([0, 1], [fmt.metric(metric, lo), fmt.metric(metric, hi)]))
    data = np.array(table).T  # (trials, columns)
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 4))
    cmap = plt.get_cmap("viridis")
    title = f"parallel coordinates (colour: {metric}; red dotted: failed)"
    if highlight is not None:
        title = _faint_lines(ax, data, trials, values, highlight, cmap, metric)
    else:
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
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def _faint_lines(ax, data: np.ndarray, trials: list[TrialRecord], values: list[float | None],
                 highlight: list[str], cmap, metric: str) -> str:
    """Many trials' polylines: one faint collection in the metric's order, the highlighted
    trials bold on top (their ids at the metric's axis); failed trials are counted, not drawn.
    Returns the figure's title."""
    from matplotlib.collections import LineCollection

    xs = np.arange(data.shape[1])
    ok = [i for i, (t, v) in enumerate(zip(trials, values, strict=True))
          if not t.failed and v is not None]
    ok.sort(key=lambda i: data[i, -1])
    ax.add_collection(LineCollection([np.column_stack([xs, data[i]]) for i in ok],
                                     colors=[cmap(data[i, -1]) for i in ok], linewidths=0.7,
                                     alpha=0.35))
    ids = [t.trial_id for t in trials]
    for i, tid in enumerate(highlight, 1):
        if tid in ids:
            row = data[ids.index(tid)]
            ax.plot(xs, row, color="black", lw=3.2, alpha=0.9, zorder=3 + 1 / i)
            ax.plot(xs, row, color=cmap(row[-1]), lw=1.8, zorder=3 + 1 / i, label=f"#{i} {tid}")
    if highlight:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_xlim(-0.1, xs[-1] + 0.3)
    ax.set_ylim(-0.05, 1.05)
    failed = len(trials) - len(ok)
    return (f"parallel coordinates of {len(trials)} trials (colour: {metric}; bold: the best "
            f"{len(highlight)}; {failed} failed, not drawn)")
