"""Sequential seeds (`ablation.seeds: {start, max, step}`): an ablation's compared runs, look by
look.

Look k trains, for the baseline and every arm not yet decided, the seeds added since the last
look (seeds 0..start-1 first, then `step` more each time, up to `max`) as one Tune experiment in
RUN/looks/<k>/: a grid over those cells x seeds, no scheduler, each run the full budget. Then
service.results.sequential tests every undecided arm's paired differences against its
group-sequential boundary (Holm across the arms); an arm decided `helps`/`hurts`, or `futile`
with `ablation.min_effect`, trains no more seeds; the baseline trains while any arm does. An arm
one of whose seeds has no value (a failed or diverged run, its own or the baseline's) stops
`not resolved` at that look. The study's summary.json in RUN lists every look's trials.

A finished look (its summary.json) is read back and an interrupted one restored by Tune, so a
study resumed with --resume continues at the look it stopped in and trains no seed twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

from service.results import sequential
from service.results.ablation import BASELINE
from service.results.records import Summary
from service.rundir import LOOKS_DIR
from service.tune.plan import SweepPlan, join_storage
from service.tune.sweep import ctrl_c_pressed, run_sweep

Values = dict[str, dict[int, float | None]]


def look_plan(plan: SweepPlan, k: int, trials: int) -> SweepPlan:
    """The plan of look k's runs: a Tune experiment of its own in RUN/looks/<k>/."""
    return dataclasses.replace(plan, name=f"{plan.name}/{LOOKS_DIR}/{k}",
                               experiment_dir=join_storage(plan.experiment_dir, LOOKS_DIR,
                                                           str(k)),
                               trials=trials, tuning_trials=0)


def unvalued(arm: str, k: int, n: int, gaps: list[int]) -> dict[str, Any]:
    """The record of an arm that cannot be tested at look k: seeds `gaps` have no value."""
    reason = (f"not resolved: seed(s) {gaps} have no value for the arm or the baseline (see "
              f"excluded); the arm stops at look {k}, n = {n}")
    return {"arm": arm, "look": k, "n": n, "decision": "not resolved",
            "verdict": "not resolved", "reason": reason,
            **dict.fromkeys(("effect", "sd", "statistic", "boundary", "level", "rci_low",
                             "rci_high", "rci_level", "t_low", "t_high", "t_level",
                             "conditional_power"))}


def look_records(abl, mode: str, values: Values, running: list[str], looks: tuple[int, ...],
                 decided: dict[str, str]) -> list[dict[str, Any]]:
    """One record per arm tested at the look that has seen `looks` (this one last)."""
    n, k = looks[-1], len(looks)
    base = values[BASELINE]
    diffs: dict[str, list[float]] = {}
    out = []
    for arm in running:
        gaps = [s for s in range(n) if base.get(s) is None or values[arm].get(s) is None]
        if gaps:
            out.append(unvalued(arm, k, n, gaps))
        else:
            diffs[arm] = [values[arm][s] - base[s] for s in range(n)]
    stopped = {**decided, **{r["arm"]: r["decision"] for r in out}}
    if diffs:
        out += sequential.look(diffs, looks, abl.seeds.max, abl.alpha,
                               min_effect=abl.min_effect, decided=stopped, mode=mode)
    return sorted(out, key=lambda r: running.index(r["arm"]))


def print_look(records: list[dict[str, Any]], scale: float, unit: str) -> None:
    """The look's line per arm and which arms still train."""
    for r in records:
        effect = "" if r["effect"] is None else f"effect {r['effect'] * scale:+.2f}{unit}; "
        print(f"look {r['look']} (n = {r['n']}): {r['arm']}: {effect}{r['reason']}", flush=True)
    still = sequential.running(records)
    print(f"  still running: {', '.join(still) if still else 'none'}", flush=True)


def merged(spec, plan: SweepPlan, summaries: list[Summary]) -> Summary:
    """The study's summary.json: every look's trials, ranked as one sweep."""
    last = summaries[-1]
    return Summary.ranked([t for s in summaries for t in s.trials], name=spec.name,
                          spec=last.spec, plan=asdict(plan), searched=last.searched,
                          wall_s=round(sum(s.wall_s or 0.0 for s in summaries), 2),
                          ray_version=last.ray_version, torch_version=last.torch_version)


def run_looks(spec, plan: SweepPlan, progress_for, resume: bool,
              tuned: dict[str, dict[str, Any]]) -> tuple[Summary, list[dict[str, Any]]] | None:
    """Every look until no arm runs or the last; the merged summary and every look's records,
    or None when interrupted."""
    from service.results.ablation import display
    from service.tune.ablation import compare_phase, finished_phase, per_seed_values, restorable

    abl = spec.ablation
    looks = abl.seeds.looks()
    values: Values = {c: {} for c in abl.cells()}
    decided: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    summaries: list[Summary] = []
    scale, unit = display(spec.budget.metric)
    done = 0
    for k, n in enumerate(looks, 1):
        running = [c for c in values if c != BASELINE and c not in decided]
        cells = [BASELINE, *running]
        seeds = range(done, n)
        l_plan = look_plan(plan, k, len(cells) * len(seeds))
        summary = finished_phase(l_plan.experiment_dir)
        if summary is None:
            if ctrl_c_pressed():
                return None
            phase = compare_phase(spec, l_plan, tuned, cells, seeds)
            progress = progress_for(l_plan.trials, phase.searched, f"look {k}")
            summary = run_sweep(spec, l_plan, progress,
                                restorable(l_plan.experiment_dir, resume), phase)
            if summary is None:
                return None
        summaries.append(summary)
        for cell, by_seed in per_seed_values(spec, summary)[0].items():
            values[cell].update(by_seed)
        now = look_records(abl, spec.budget.mode, values, running, looks[:k], decided)
        records += now
        decided.update({r["arm"]: r["decision"] for r in now if r["decision"] != "continue"})
        print_look(now, scale, unit)
        done = n
        if not sequential.running(now):
            break
    return merged(spec, plan, summaries), records
