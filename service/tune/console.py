"""What a sweep prints: its plan before it starts and its table of trials at the end."""

from __future__ import annotations

import sys
from typing import Any

from service.config.spec import SweepSpec
from service.results.records import Summary


def print_plan(plan, spec: SweepSpec, out=sys.stdout) -> None:
    """The plan in a few lines (also the header of a real run)."""
    res = ", ".join(f"{v:g} {k}" for k, v in plan.trial_resources.items())
    at_once = (f"{plan.max_concurrent_trials} at a time" if plan.max_concurrent_trials
               else "as many at a time as the cluster fits")
    cluster = (f"cluster: {plan.cluster['CPU']:g} CPU, {plan.cluster['GPU']:g} GPU"
               if plan.max_concurrent_trials else "the cluster is sized when the sweep starts")
    print(f"sweep {plan.name}: {plan.trials} trials of up to {plan.max_epochs} epochs, "
          f"{at_once}", file=out)
    print(f"  each trial: {plan.workers_per_trial} Ray Train worker(s) holding {res} "
          f"({cluster})", file=out)
    print(f"  searching {', '.join(spec.search) or 'nothing'}; searcher {plan.searcher}; "
          f"scheduler {plan.scheduler}; {plan.mode} {plan.metric}", file=out)
    print(f"  results: {plan.experiment_dir}", file=out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(summary: Summary) -> None:
    """All trials sorted by the sweep's metric, then the best configuration."""
    keys, metric = summary.searched, summary.metric
    head = ["trial", *keys, "status", "epochs", f"best {metric}"]
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
    best = summary.best
    if best:
        knobs = " ".join(f"{k}={_cell(best.config.get(k))}" for k in keys)
        print(f"best: {best.trial_id}  {metric} {_score(summary.score(best))}  {knobs}")
    print(f"wall time {summary.wall_s or 0:.0f}s")
