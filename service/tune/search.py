"""The spec's searcher, scheduler and parameter space as Ray Tune objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler, MedianStoppingRule
from ray.tune.search import BasicVariantGenerator

from service.config.blocks import FloatRange, Values
from service.config.schedulers import make_pruner
from service.config.spec import SweepSpec
from service.rundir import JOURNAL, SEED_KEY
from service.tune.schedulers import (
    OptunaPrunerScheduler,
    PrunedAwareOptunaSearch,
    RestorableASHA,
)
from service.tune.seedgroups import SeedGroups


def make_sampler(spec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the spec names; both take one metric or several objectives."""
    if spec.searcher.type == "optuna-nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.searcher.seed,
                                             population_size=spec.searcher.population_size)
    return optuna.samplers.TPESampler(seed=spec.searcher.seed,
                                      n_startup_trials=spec.searcher.n_startup_trials)


def study_storage(spec, study_dir: str | None):
    """Where the Optuna study lives: the spec's RDB, else Optuna's journal file in the run
    directory (so that `optuna-dashboard` opens any running or finished sweep), else memory
    (results on remote storage: a journal needs a local file and its lock)."""
    if spec.searcher.storage:
        return optuna.storages.RDBStorage(spec.searcher.storage)  # OptunaSearch takes objects
    if study_dir is None or "://" in study_dir:
        return None
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(study_dir) / JOURNAL)))


def make_searcher(spec, max_concurrent: int = 0, study_dir: str | None = None):
    """Tune's searcher; an Optuna study is kept in `study_dir` (a run directory) when the spec
    names no storage of its own."""
    if spec.searcher.optuna:
        storage = study_storage(spec, study_dir)
        metrics = [m for m, _ in spec.budget.objectives]
        modes = [mode for _, mode in spec.budget.objectives]
        # Trials a scheduler stopped early are PRUNED in the study, not COMPLETE with a
        # truncated score that the sampler would take for a final one.
        searcher = PrunedAwareOptunaSearch(
            sampler=make_sampler(spec), max_epochs=spec.budget.max_epochs, storage=storage,
            study_name=(spec.searcher.study_name or spec.name) if storage else None,
            # Several objectives are given to the searcher itself; Tune's own metric stays
            # unset (schedulers are refused, and Tune ranks by one metric only).
            **({"metric": metrics, "mode": modes} if spec.budget.multi_objective else {}))
        if spec.budget.seeds == 1:
            return searcher
        # Each config goes to `seeds` trials; the study gets one trial per config, PRUNED
        # unless every seed ran the full budget (then COMPLETE with the seeds' mean).
        return SeedGroups(searcher, seeds=spec.budget.seeds, max_epochs=spec.budget.max_epochs)
    # Tune ignores TuneConfig.max_concurrent_trials for a ready-made generator: give it here.
    return BasicVariantGenerator(random_state=spec.searcher.seed, max_concurrent=max_concurrent)


def make_scheduler(spec):
    s, max_t = spec.scheduler, spec.budget.max_epochs
    # time_attr="epoch": our own counter survives worker restarts (Tune's iteration count
    # does not), so rungs stay aligned with real epochs.
    if s.type == "asha":
        return RestorableASHA(time_attr="epoch", max_t=max_t, grace_period=s.grace_period,
                              reduction_factor=s.reduction_factor, brackets=s.brackets,
                              seed=getattr(spec.searcher, "seed", None))
    if s.type == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=max_t,
                                  reduction_factor=s.reduction_factor)
    if s.type == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=s.grace_period,
                                  min_samples_required=s.min_samples_required)
    if s.type == "optuna":
        return OptunaPrunerScheduler(make_pruner(s, max_t), spec.budget.metric,
                                     spec.budget.mode, time_attr="epoch", max_t=max_t)
    return FIFOScheduler()


def param_space(spec) -> dict[str, Any]:
    """Tune's param space: the translated search block, plus seed repeats for non-Optuna."""

    space = tune_param_space(spec)
    if not spec.searcher.optuna and spec.budget.seeds > 1:
        space[SEED_KEY] = tune.grid_search(list(range(spec.budget.seeds)))
    return space


def tune_param_space(spec: SweepSpec) -> dict[str, Any]:
    """`search` as Ray Tune sampling objects; the one place that knows Tune's conventions."""
    space: dict[str, Any] = {}
    for key, dist in spec.search.items():
        if isinstance(dist, Values):  # searcher grid enumerates choices too
            grid = dist.type == "grid" or spec.searcher.type == "grid"
            space[key] = (tune.grid_search if grid else tune.choice)(list(dist.values))
        elif isinstance(dist, FloatRange):
            space[key] = (tune.loguniform if dist.log else tune.uniform)(dist.low, dist.high)
        elif dist.step > 1:  # qrandint includes its upper bound (for q > 1)
            space[key] = tune.qrandint(dist.low, dist.high, dist.step)
        else:  # randint and lograndint exclude theirs: ours is inclusive
            space[key] = (tune.lograndint if dist.log else tune.randint)(dist.low, dist.high + 1)
    return space
