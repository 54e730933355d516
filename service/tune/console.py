"""What a sweep prints: its plan before it starts and its table of trials at the end."""

from __future__ import annotations

import sys
from typing import Any

from service.config.spec import SweepSpec
from service.results.ablation import sentences
from service.results.records import Summary
from service.tune.paths import SEED_KEY
from service.tune.plan import describe_scheduler, describe_searcher


def print_plan(plan, spec: SweepSpec, out=sys.stdout) -> None:
    """The plan in a few lines (also the header of a real run)."""
    res = ", ".join(f"{v:g} {k}" for k, v in plan.trial_resources.items())
    at_once = (f"{plan.max_concurrent_trials} at a time" if plan.max_concurrent_trials
               else "as many at a time as the cluster fits")
    cluster = (f"cluster: {plan.cluster['CPU']:g} CPU, {plan.cluster['GPU']:g} GPU"
               if plan.max_concurrent_trials else "the cluster is sized when the sweep starts")
    abl = spec.ablation
    if abl is None:
        print(f"sweep {plan.name}: {plan.trials} trials of up to {plan.max_epochs} epochs, "
              f"{at_once}", file=out)
    else:
        cells = abl.cells()
        print(f"ablation {plan.name}: {len(cells)} configurations x {abl.seeds} seeds = "
              f"{plan.trials} runs of {plan.max_epochs} epochs each, {at_once}", file=out)
    print(f"  each trial: {plan.workers_per_trial} Ray Train worker(s) holding {res} "
          f"({cluster})", file=out)
    if abl is None:
        print(f"  searching {', '.join(spec.search) or 'nothing'}; searcher {plan.searcher}; "
              f"scheduler {plan.scheduler}; {' and '.join(plan.objectives)}"
              + (" (a Pareto front)" if len(plan.objectives) > 1 else ""), file=out)
    else:
        print(f"  {abl.design}: {', '.join(cells)}; paired by seed; {plan.mode} {plan.metric} "
              f"at epoch {plan.max_epochs}; Holm at alpha {abl.alpha:g}", file=out)
        if abl.tune is not None:
            print(f"  tuning first: {len(cells)} x {abl.tune.trials} = {plan.tuning_trials} "
                  f"trials over {', '.join(abl.tune.space)} at seed 0; searcher "
                  f"{describe_searcher(spec)}; scheduler {describe_scheduler(spec)}", file=out)
    print(f"  results: {plan.experiment_dir}", file=out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(summary: Summary, best: bool = True) -> None:
    """All trials sorted by the sweep's metric, then (if `best`) the best configuration."""
    keys, metric = summary.searched, summary.metric
    head = ["trial", *("seed" if k == SEED_KEY else k for k in keys), "status", "epochs",
            f"best {metric}"]
    rows = []
    for t in summary.trials:
        rows.append([t.trial_id, *(_cell(t.config.get(k, "")) for k in keys), t.status,
                     str(t.epochs), _score(summary.score(t))])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for t in summary.trials:
        if t.error:
            print(f"{t.trial_id}: {t.error}")
    best = summary.best if best else None
    if best:
        knobs = " ".join(f"{k}={_cell(best.config.get(k))}" for k in keys)
        print(f"best: {best.trial_id}  {metric} {_score(summary.score(best))}  {knobs}")
    print(f"wall time {summary.wall_s or 0:.0f}s")


def print_ablation(study: dict[str, Any]) -> None:
    """The arms against the baseline: effect with its interval, p after Holm, verdict."""
    scale, unit = study["scale"], study["unit"].strip()
    head = ["arm", "n", f"effect {unit}".strip(), "95% CI", "p (Holm)", "MDE", "verdict"]

    def num(x: float | None, sign: str = "+") -> str:
        return "-" if x is None else f"{x * scale:{sign}.2f}"

    rows = []
    for r in study["arms"]:
        ci = "-" if r["ci_low"] is None else f"[{num(r['ci_low'])}, {num(r['ci_high'])}]"
        p = "-" if r["p_adjusted"] is None else f"{r['p_adjusted']:.3g}"
        rows.append([r["name"], str(r["n"]), num(r["effect"]), ci, p, num(r["mde"], ""),
                     r["verdict"]])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(f"ablation: {study['metric']} at epoch {study['epochs']}, arm - baseline, "
          f"paired by seed")
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for line in sentences(study):
        print(line)
