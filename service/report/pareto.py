"""The report's Pareto section, for a sweep with several objectives (summary.json's `pareto`,
service.results.pareto): every compared trial in the plane of the first two objectives with
the front joined as a step line, the front's table and its hypervolume."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from service.report import fmt
from service.report.plots import plt, to_png
from service.results.pareto import NADIR_MARGIN, non_dominated
from service.results.records import Summary
from service.rundir import SEED_KEY

if TYPE_CHECKING:  # build imports this module; the Doc is only passed in
    from service.report.doc import Doc


def numbers(summary: Summary) -> dict[str, Any] | None:
    """The front as the report shows it (None for a single-metric sweep): summary.json's
    `pareto` plus, per objective, the best value among the compared trials (`ideal`) and the
    hypervolume as a share of the box between the reference point and that ideal point."""
    p = summary.pareto
    if p is None:
        return None
    objectives = [{"metric": o.metric, "mode": o.mode} for o in p.objectives]
    ideal = [(max if o["mode"] == "max" else min)(v[i] for v in p.values.values())
             for i, o in enumerate(objectives)] if p.values else None
    share = None
    if p.hypervolume is not None and p.reference is not None and ideal is not None:
        box = math.prod(abs(b - r) for b, r in zip(ideal, p.reference, strict=True))
        share = p.hypervolume / box if box > 0 else None
    compared = set(p.values)
    return {"objectives": objectives, "trials": list(p.trials), "values": p.values,
            "hypervolume": p.hypervolume, "reference": p.reference, "ideal": ideal,
            "hypervolume_share": share, "compared": len(compared),
            "left_out": [t.trial_id for t in summary.trials if t.trial_id not in compared],
            "plotted": [o["metric"] for o in objectives[:2]]}


def objective_values(front: dict[str, Any], trial_id: str) -> list[str]:
    """A trial's objective values, each written for its metric."""
    return [fmt.metric(o["metric"], v)
            for o, v in zip(front["objectives"], front["values"][trial_id], strict=True)]


def _direction(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def figure(front: dict[str, Any]) -> bytes:
    """The second objective across, the first up: every compared trial a grey dot, the front's
    trials marked and named, joined as the step line that bounds what they dominate."""
    (m_y, mode_y), (m_x, mode_x) = ((o["metric"], o["mode"]) for o in front["objectives"][:2])
    sy, label_y = fmt.axis(m_y)
    sx, label_x = fmt.axis(m_x)
    values = front["values"]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    others = [v for t, v in values.items() if t not in front["trials"]]
    if others:
        ax.scatter([v[1] * sx for v in others], [v[0] * sy for v in others], s=28,
                   color="#9aa3b2", label="compared trial, not on the front", zorder=2)
    on = {t: values[t] for t in front["trials"]}
    # With 3+ objectives a front trial can look dominated in this plane: the line joins the
    # ones that are not, the others stay marked.
    outline = non_dominated({t: v[:2] for t, v in on.items()}, [mode_y, mode_x])
    steps = sorted(outline, key=lambda t: on[t][1])
    ax.plot([on[t][1] * sx for t in steps], [on[t][0] * sy for t in steps],
            drawstyle="steps-post" if mode_x == "min" else "steps-pre", color="tab:orange",
            lw=1.8, zorder=3)
    ax.scatter([v[1] * sx for v in on.values()], [v[0] * sy for v in on.values()], s=60,
               color="tab:orange", edgecolor="black", lw=0.7, zorder=4,
               label=f"Pareto front ({len(on)} trials)")
    for t, v in on.items():
        ax.annotate(t, (v[1] * sx, v[0] * sy), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    if front["reference"] is not None and len(front["objectives"]) == 2 and steps:
        _shade(ax, [on[t][1] * sx for t in steps], [on[t][0] * sy for t in steps],
               front["reference"][1] * sx, front["reference"][0] * sy, mode_x)
    if front["reference"] is not None:
        ref = front["reference"]
        ax.scatter([ref[1] * sx], [ref[0] * sy], marker="x", s=50, color="black", zorder=4,
                   label="reference point (hypervolume)")
    ax.set_xlabel(f"{label_x} — {_direction(mode_x)}")
    ax.set_ylabel(f"{label_y} — {_direction(mode_y)}")
    n = len(front["objectives"])
    ax.set_title("Pareto front" + (f": the first two of {n} objectives" if n > 2 else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return to_png(fig)


def _shade(ax, xs: list[float], ys: list[float], ref_x: float, ref_y: float,
           mode_x: str) -> None:
    """The area the front dominates up to the reference point: the hypervolume, drawn."""
    if mode_x == "min":  # worse is to the right: each trial's step runs on to the reference
        x, y, step = [*xs, ref_x], [*ys, ys[-1]], "post"
    else:
        x, y, step = [ref_x, *xs], [ys[0], *ys], "pre"
    ax.fill_between(x, y, ref_y, step=step, color="tab:orange", alpha=0.12, lw=0, zorder=1,
                    label="hypervolume: the area the front dominates")


def alt_text(front: dict[str, Any]) -> str:
    """The figure's alt text and caption."""
    (m_y, _), (m_x, _) = ((o["metric"], o["mode"]) for o in front["objectives"][:2])
    n = len(front["objectives"])
    text = (f"{m_y} against {m_x} for each of the {front['compared']} compared trials; the "
            f"{len(front['trials'])} trials of the Pareto front are highlighted, named and "
            "joined by a step line")
    if n == 2 and front["reference"] is not None:
        text += ", the area they dominate up to the reference point (x) shaded"
    if n > 2:
        text += (f"; only the first two of the {n} objectives are plotted, so a front trial "
                 "may look dominated here and the line joins only those that are not")
    return text + "."


def hypervolume_sentence(front: dict[str, Any]) -> str:
    """The hypervolume and what its reference point is (results.pareto.nadir), in one
    sentence."""
    objs = front["objectives"]
    if front["hypervolume"] is None:
        return ("No hypervolume: it needs at least 2 compared trials "
                f"(there {'is' if front['compared'] == 1 else 'are'} {front['compared']}).")
    ref = ", ".join(f"{o['metric']} {fmt.metric(o['metric'], r)}"
                    for o, r in zip(objs, front["reference"], strict=True))
    kind = "area" if len(objs) == 2 else "volume"
    share = front["hypervolume_share"]
    return (f"Hypervolume {fmt.si(front['hypervolume'])} (in "
            f"{' × '.join(o['metric'] for o in objs)} units): the {kind} of objective space "
            f"that the front dominates up to the reference point ({ref}), which lies "
            f"{fmt.percent(NADIR_MARGIN, 0)} of each objective's range past its worst value "
            "among the compared trials"
            + (f"; {fmt.percent(share)} of the box between that point and the best value of "
               "each objective." if share is not None else "."))


def section(doc: Doc, summary: Summary, front: dict[str, Any]) -> None:
    """The Pareto section: what the front is, its figure, its table and its hypervolume."""
    objs = front["objectives"]
    doc.heading("Pareto front")
    names = fmt.join([f"{o['metric']} ({_direction(o['mode'])})" for o in objs])
    left = len(front["left_out"])
    doc.para(f"The sweep optimised {len(objs)} objectives: {names}, each at the last epoch. A "
             "trial is on the front when no other compared trial is at least as good in every "
             "objective and better in one; "
             f"{fmt.plural(len(front['trials']), 'trial')} of the {front['compared']} compared "
             f"are. Only trials that completed every epoch are compared ({left} left out: "
             "stopped early, diverged or failed). The table lists the front best first on "
             f"{objs[0]['metric']}.")
    if front["values"]:
        doc.image("pareto.png", figure(front), alt_text(front))
    keys = summary.searched
    by_id = {t.trial_id: t for t in summary.trials}
    doc.table(["trial", *(o["metric"] for o in objs),
               *("seed" if k == SEED_KEY else k for k in keys)],
              [[t, *objective_values(front, t),
                *(fmt.setting(by_id[t].config.get(k)) if t in by_id else fmt.DASH
                  for k in keys)] for t in front["trials"]])
    doc.para(hypervolume_sentence(front))
