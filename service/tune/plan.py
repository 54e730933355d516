"""A sweep's shape before anything runs: how many trials, how many at once on this cluster,
what each holds, where results go. Needs neither Ray nor torch (`--dry-run` uses it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SweepPlan:
    """What a sweep will do, printed by --dry-run and recorded in summary.json."""

    name: str
    experiment_dir: str  # RESULTS/<name>/<run-id>: Tune's experiment directory
    trials: int  # num_samples x seeds
    max_concurrent_trials: int
    trial_resources: dict[str, float]  # all workers of one trial together
    workers_per_trial: int
    cluster: dict[str, float]  # the CPUs and GPUs the plan was sized against
    searcher: str
    scheduler: str
    metric: str
    mode: str
    max_epochs: int
    tuning_trials: int = 0  # an ablation's tuning trials before its compared runs (all cells)
    objectives: list[str] = field(default_factory=list)  # "max val_acc", "min flops"


def trial_resources(spec) -> dict[str, float]:
    """CPUs and GPUs held by one trial's worker group (its driver holds none)."""
    res = spec.resources
    out = {"CPU": res.workers_per_trial * res.cpus_per_worker}
    if res.gpus_per_worker:
        out["GPU"] = res.workers_per_trial * res.gpus_per_worker
    return out


def concurrency(spec, cluster: dict[str, float]) -> int:
    """How many trials fit at once: drivers plus worker groups must all fit, or Train's worker
    groups wait for resources that never come (WorkerGroupStartupTimeoutError)."""
    need = trial_resources(spec)
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    n = min(fits) if fits else 1
    if n < 1:
        have = ", ".join(f"{cluster.get(k, 0):g} {k}" for k in need)
        want = ", ".join(f"{v:g} {k}" for k, v in need.items())
        raise ValueError(f"resources: one trial needs {want} but the cluster has {have}; "
                         "lower resources.workers_per_trial/cpus_per_worker/gpus_per_worker")
    if spec.resources.max_concurrent_trials:
        n = min(n, spec.resources.max_concurrent_trials)
    return n


def describe_searcher(spec) -> str:
    """The searcher's type and seed."""
    seed = getattr(spec.searcher, "seed", None)
    return spec.searcher.type + (f" (seed={seed})" if seed is not None else "")


def describe_scheduler(spec) -> str:
    """One line naming the scheduler and its settings."""
    sched = spec.scheduler.model_dump()
    kind = sched.pop("type")
    if sched.get("brackets") == 1:  # plain ASHA: one bracket goes without saying
        del sched["brackets"]
    return kind + (f" ({', '.join(f'{k}={v}' for k, v in sched.items())})" if sched else "")


def plan_sweep(spec, results: str, cluster: dict[str, float] | None, run_id: str) -> SweepPlan:
    """The sweep's shape against `cluster` ({'CPU': n, 'GPU': m}); with None (a cluster not
    yet reached) concurrency is left at 0, to be sized when the sweep starts."""
    searcher = describe_searcher(spec)
    abl = spec.ablation
    tuning = len(abl.cells()) * abl.tune.trials if abl and abl.tune else 0
    scheduler = describe_scheduler(spec)
    if abl is not None:  # the compared runs: every configuration x seed, none stopped
        searcher = f"grid ({len(abl.cells())} configurations x {seeds_text(abl.seeds)} seeds)"
        scheduler = "none"
    return SweepPlan(
        name=spec.name, experiment_dir=join_storage(results, spec.name, run_id),
        trials=expected_trials(spec),
        max_concurrent_trials=concurrency(spec, cluster) if cluster is not None else 0,
        trial_resources=trial_resources(spec), workers_per_trial=spec.resources.workers_per_trial,
        cluster={k: (cluster or {}).get(k, 0.0) for k in ("CPU", "GPU")}, searcher=searcher,
        scheduler=scheduler, metric=spec.budget.primary[0], mode=spec.budget.primary[1],
        objectives=[f"{mode} {metric}" for metric, mode in spec.budget.objectives],
        max_epochs=spec.budget.max_epochs, tuning_trials=tuning)


def seeds_text(seeds) -> str:
    """Seeds (ablation.seeds, confirm.seeds) in words: '4', or a schedule '4 to 16 (looks at
    4, 8, 12, 16)'."""
    if isinstance(seeds, int):
        return str(seeds)
    return f"{seeds.start} to {seeds.max} (looks at {', '.join(map(str, seeds.looks()))})"


def expected_trials(spec) -> int:
    """How many trials the sweep makes: a grid enumerates its values (times any repeats); an
    ablation trains every cell with every seed, sequential seeds at most (its tuning trials come
    on top)."""
    if spec.ablation is not None:
        return len(spec.ablation.cells()) * spec.ablation.max_seeds
    grid = 1
    for dist in spec.search.values():
        values = getattr(dist, "values", None)
        if values is not None and (dist.type == "grid" or spec.searcher.type == "grid"):
            grid *= len(values)
    if spec.searcher.type == "grid":
        return grid * spec.budget.seeds
    if spec.searcher.type == "random":
        return spec.budget.num_samples * grid * spec.budget.seeds
    return spec.budget.num_samples * spec.budget.seeds


def join_storage(root: str, *parts: str) -> str:
    """Join a local directory (made absolute: Tune refuses relative paths) or a URI."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root).expanduser().resolve().joinpath(*parts))
