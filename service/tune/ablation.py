"""An ablation study on Ray Tune: optional equal tuning of every cell, then every (cell, seed)
trained for the full budget, then ablation.json (service.results.ablation).

A cell is the baseline, an arm, or in a factorial design a combination of arms. With
`ablation.tune` each cell is first searched at seed 0 over `tune.space` with `tune.trials`
trials, in its own Tune experiment under RUN/tuning/<cell>/ (the spec's searcher and scheduler;
the scheduler may stop tuning trials). The compared runs are one Tune experiment in RUN itself:
a grid over cells x seeds, no scheduler, so every run trains budget.max_epochs epochs. Seed i
is the trial seed train.seed + i for every cell: the same split, data order, augmentation draws
and (where the architectures agree) initial weights.

Every phase resumes on its own: a finished one (summary.json written) is read back, an
interrupted one is restored by Tune, a missing one starts.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from service.results import ablation as stats
from service.results.records import Summary
from service.results.store import ResultsError, read_summary, write_json
from service.rundir import ABLATION, ARM_KEY, SEED_KEY, SUMMARY, TUNING_DIR
from service.tune.plan import SweepPlan, describe_scheduler, describe_searcher, join_storage
from service.tune.sweep import (
    Phase,
    ctrl_c_between_phases,
    ctrl_c_pressed,
    run_sweep,
    sweep_phase,
)


def tuning_spec(spec, cell: str):
    """The sweep that tunes one cell: `tune.space` searched with `tune.trials` trials, one seed."""
    abl = spec.ablation
    searcher = spec.searcher
    if searcher.storage:  # one Optuna study per cell, never one mixing the cells' trials
        searcher = searcher.model_copy(
            update={"study_name": f"{searcher.study_name or spec.name}-{cell}"})
    budget = spec.budget.model_copy(update={"num_samples": abl.tune.trials, "seeds": 1})
    return spec.model_copy(update={"search": dict(abl.tune.space), "ablation": None,
                                   "budget": budget, "searcher": searcher})


def tuning_plan(plan: SweepPlan, spec, cell: str) -> SweepPlan:
    """The plan of one cell's tuning sweep (`spec`: that sweep's spec, from `tuning_spec`)."""
    return dataclasses.replace(plan, name=f"{plan.name}/{TUNING_DIR}/{cell}",
                               experiment_dir=join_storage(plan.experiment_dir, TUNING_DIR, cell),
                               trials=spec.budget.num_samples, tuning_trials=0,
                               searcher=describe_searcher(spec),
                               scheduler=describe_scheduler(spec))


def compare_phase(spec, plan: SweepPlan, tuned: dict[str, dict[str, Any]],
                  cells: list[str] | None = None, seeds: range | None = None) -> Phase:
    """`cells` (default: every cell) with `seeds` (default: 0..seeds-1), the full budget each
    (a grid, no scheduler)."""
    abl = spec.ablation
    settings = abl.cells()
    cells = list(settings) if cells is None else cells
    seeds = range(abl.max_seeds) if seeds is None else seeds
    arms = {cell: {**settings[cell], **tuned.get(cell, {})} for cell in cells}
    # Seed by seed, every cell of a seed together: a seed's pair finishes together, and cells
    # of unequal cost (ZFNet's 7x7/2 conv1 against 11x11/4) share the CPUs instead of the
    # costly cell's runs queueing alone at the end.
    runs = [{ARM_KEY: cell, SEED_KEY: seed} for seed in seeds for cell in arms]
    return Phase(base=spec.base_config().model_dump(mode="json"),
                 param_space={ARM_KEY: tune.choice(list(arms)),
                              SEED_KEY: tune.choice(list(seeds))},
                 searcher=BasicVariantGenerator(points_to_evaluate=runs, random_state=0,
                                                max_concurrent=plan.max_concurrent_trials),
                 scheduler=FIFOScheduler(), num_samples=len(runs), searched=[ARM_KEY, SEED_KEY],
                 limit_concurrency=False, expected=len(runs), arms=arms)


def finished_phase(experiment_dir: str) -> Summary | None:
    if "://" in experiment_dir or not (Path(experiment_dir) / SUMMARY).exists():
        return None
    try:
        return read_summary(experiment_dir)
    except ResultsError:
        return None  # a summary cut short by a crash: the phase is run (restored) again


def restorable(experiment_dir: str, resume: bool) -> bool:
    """Whether a resumed study continues this phase's Tune experiment; a phase interrupted
    before Tune first saved its state (tuner.pkl but no experiment_state file) starts afresh."""
    if not resume or not tune.Tuner.can_restore(experiment_dir):
        return False
    return "://" in experiment_dir or any(Path(experiment_dir).glob("experiment_state-*.json"))


def best_settings(summary: Summary, keys: list[str]) -> dict[str, Any] | None:
    """The tuned values: the best trial's, among those that ran the full budget if any did;
    None when no tuning trial has a value (all failed or diverged)."""
    completed = [t for t in summary.trials if t.status == "completed"]
    pool = completed or [t for t in summary.trials if not t.failed]
    scored = [(summary.score(t), t) for t in pool]
    scored = [(s, t) for s, t in scored if s is not None]
    if not scored:
        return None
    sign = 1 if summary.mode == "max" else -1
    best = max(scored, key=lambda st: sign * st[0])[1]
    return {k: best.config[k] for k in keys if k in best.config}


def run_tuning(spec, plan: SweepPlan, progress_for, resume: bool
               ) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]] | None:
    """Tune every cell in turn; their tuned settings and tuning scores, or None if interrupted."""
    tuned, scores = {}, {}
    base = spec.base_config()
    for cell, settings in spec.ablation.cells().items():
        t_spec = tuning_spec(spec, cell)
        t_plan = tuning_plan(plan, t_spec, cell)
        summary = finished_phase(t_plan.experiment_dir)
        if summary is None:
            phase = sweep_phase(t_spec, t_plan)
            phase.base = base.with_overrides(settings).model_dump(mode="json")
            progress = progress_for(t_plan.trials, list(t_spec.search), f"tuning {cell}")
            if ctrl_c_pressed():  # its summary is written: the finished phase is kept
                return None
            summary = run_sweep(t_spec, t_plan, progress,
                                restorable(t_plan.experiment_dir, resume), phase)
            if summary is None:
                return None
        best = best_settings(summary, list(t_spec.search))
        if best is None:  # the cell then trains its fixed settings; the study says so
            print(f"tuning {cell}: no trial has a value of {summary.metric} (all failed or "
                  f"diverged); it is compared with its fixed settings", file=sys.stderr)
        tuned[cell] = best or {}
        scores[cell] = [s for t in summary.trials if (s := summary.score(t)) is not None]
    return tuned, scores


def per_seed_values(spec, summary: Summary) -> tuple[dict[str, dict[int, float | None]],
                                                      list[dict[str, Any]]]:
    """values[cell][seed]: the metric at the last epoch of the full budget; and the runs left
    out (failed, diverged, or short of the budget) with why."""
    metric, epochs = spec.budget.metric, spec.budget.max_epochs
    cells = list(spec.ablation.cells())
    values: dict[str, dict[int, float | None]] = {c: {} for c in cells}
    excluded = []
    for t in summary.trials:
        cell, seed = t.config.get(ARM_KEY), t.config.get(SEED_KEY)
        if cell not in values or seed is None:
            continue
        value = t.final.get(metric) if metric != "best_val_acc" else t.best_val_acc
        if t.status == "completed" and t.epochs >= epochs and value is not None:
            values[cell][int(seed)] = float(value)
        else:
            values[cell][int(seed)] = None
            why = t.error or (f"diverged at epoch {t.epochs}" if t.status == "diverged"
                              else f"reached epoch {t.epochs} of {epochs}")
            excluded.append({"arm": cell, "seed": int(seed), "status": t.status, "why": why})
    return values, excluded


def ablation_json(spec, plan: SweepPlan, summary: Summary, tuned: dict[str, dict[str, Any]],
                  scores: dict[str, list[float]] | None,
                  looks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """ablation.json's content; `looks`: with sequential seeds, every look's records."""
    abl = spec.ablation
    values, excluded = per_seed_values(spec, summary)
    cells = {c: {**s, **tuned.get(c, {})} for c, s in abl.cells().items()}
    study = stats.study(
        name=spec.name, run_id=plan.experiment_dir.rstrip("/").rsplit("/", 1)[-1],
        metric=spec.budget.metric, mode=spec.budget.mode, alpha=abl.alpha, design=abl.design,
        epochs=spec.budget.max_epochs, seeds=sorted(values[stats.BASELINE]), cells=cells,
        changes={name: dict(c) for name, c in abl.arms.items()}, values=values,
        tuned=tuned if abl.tune else None, tuning=scores,
        tuning_space=({k: v.model_dump(mode="json") for k, v in abl.tune.space.items()}
                      if abl.tune else None),
        tuning_trials=abl.tune.trials if abl.tune else None, excluded=excluded)
    if looks is not None:
        study = stats.with_looks(study, abl.seeds.model_dump(), abl.min_effect, looks)
    return study


def run_ablation(spec, plan: SweepPlan, progress_for, resume: bool = False
                 ) -> tuple[Summary, dict[str, Any]] | None:
    """Tune (if asked), compare, and write summary.json and ablation.json into the run
    directory; None when interrupted. `progress_for(total, searched, label)` makes each phase's
    progress callback."""
    with ctrl_c_between_phases():
        return _run_ablation(spec, plan, progress_for, resume)


def _run_ablation(spec, plan: SweepPlan, progress_for, resume: bool
                  ) -> tuple[Summary, dict[str, Any]] | None:
    tuned: dict[str, dict[str, Any]] = {}
    scores = None
    if spec.ablation.tune is not None:
        done = run_tuning(spec, plan, progress_for, resume)
        if done is None:
            return None
        tuned, scores = done
    if spec.ablation.sequential:
        from service.tune.looks import run_looks

        done = run_looks(spec, plan, progress_for, resume, tuned)
        if done is None:
            return None
        summary, looks = done
        write_json(f"{plan.experiment_dir}/{SUMMARY}", summary)
        study = ablation_json(spec, plan, summary, tuned, scores, looks)
        write_json(f"{plan.experiment_dir}/{ABLATION}", study)
        return summary, study
    summary = finished_phase(plan.experiment_dir)
    if summary is None:
        if ctrl_c_pressed():  # a Ctrl-C that a tuning phase's set-up swallowed
            return None
        phase = compare_phase(spec, plan, tuned)
        progress = progress_for(plan.trials, phase.searched, "compare")
        summary = run_sweep(spec, plan, progress, restorable(plan.experiment_dir, resume), phase)
        if summary is None:
            return None
    study = ablation_json(spec, plan, summary, tuned, scores)
    write_json(f"{plan.experiment_dir}/{ABLATION}", study)
    return summary, study


