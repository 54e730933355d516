"""A sweep on Ray Tune: the spec's searcher and scheduler, one Ray Train run per trial.

`plan_sweep` sizes the sweep against the cluster (no Ray needed when the resources are given),
`run_sweep` runs or resumes it and `summarize` turns Tune's results into summary.json.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DRIVER_RESOURCES = {"CPU": 0, "memory": 50 * 2**20}  # the trial driver only waits on Train
FAILED = ("error", "diverged")


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
    searcher = spec.searcher.type + (f" (seed={spec.searcher.seed})" if
                                     getattr(spec.searcher, "seed", None) is not None else "")
    return SweepPlan(
        name=spec.name, experiment_dir=join_storage(results, spec.name, run_id),
        trials=expected_trials(spec),
        max_concurrent_trials=concurrency(spec, cluster) if cluster is not None else 0,
        trial_resources=trial_resources(spec), workers_per_trial=spec.resources.workers_per_trial,
        cluster={k: (cluster or {}).get(k, 0.0) for k in ("CPU", "GPU")}, searcher=searcher,
        scheduler=describe_scheduler(spec), metric=spec.budget.metric, mode=spec.budget.mode,
        max_epochs=spec.budget.max_epochs)


def expected_trials(spec) -> int:
    """How many trials the sweep makes: a grid enumerates its values (times any repeats)."""
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


def _searcher(spec, max_concurrent: int = 0):
    from ray.tune.search import BasicVariantGenerator, Repeater

    if spec.searcher.type == "optuna-tpe":
        import optuna

        from service.tune.schedulers import PrunedAwareOptunaSearch

        sampler = optuna.samplers.TPESampler(seed=spec.searcher.seed,
                                             n_startup_trials=spec.searcher.n_startup_trials)
        # Trials a scheduler stopped early are PRUNED in the study, not COMPLETE with a
        # truncated score that TPE would take for a final one (ray-notes #11).
        storage = (optuna.storages.RDBStorage(spec.searcher.storage)
                   if spec.searcher.storage else None)  # OptunaSearch takes an object, not a URL
        searcher = PrunedAwareOptunaSearch(
            sampler=sampler, max_epochs=spec.budget.max_epochs, storage=storage,
            study_name=(spec.searcher.study_name or spec.name) if storage else None)
        # Repeater hands the same config to `seeds` trials and gives the searcher their mean.
        return Repeater(searcher, repeat=spec.budget.seeds) if spec.budget.seeds > 1 else searcher
    # Tune ignores TuneConfig.max_concurrent_trials for a ready-made generator: give it here.
    return BasicVariantGenerator(random_state=spec.searcher.seed, max_concurrent=max_concurrent)


def _scheduler(spec):
    from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    from service.tune.schedulers import RestorableASHA

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
        from service.tune.schedulers import OptunaPrunerScheduler, make_pruner

        return OptunaPrunerScheduler(make_pruner(s, max_t), spec.budget.metric,
                                     spec.budget.mode, time_attr="epoch", max_t=max_t)
    return FIFOScheduler()


def param_space(spec) -> dict[str, Any]:
    """Tune's param space: the translated search block, plus seed repeats for non-Optuna."""
    from ray import tune

    from service.config.spec import tune_param_space
    from service.tune.trial import SEED_KEY

    space = tune_param_space(spec)
    if spec.searcher.type != "optuna-tpe" and spec.budget.seeds > 1:
        space[SEED_KEY] = tune.grid_search(list(range(spec.budget.seeds)))
    return space


def ledger_path(experiment_dir: str) -> Path | None:
    """The finished-trial ledger of a run: beside its experiment directory (local runs only).

    Not inside it: Tune re-uploads its own staged copy of that directory over whatever else
    is written there during a restored run."""
    if "://" in experiment_dir:
        return None
    exp = Path(experiment_dir)
    return exp.parent / ".finished" / f"{exp.name}.json"


def _trainable(spec, ledger: Path | None = None):
    from ray import tune

    from service.tune.trial import run_trial

    # Plain JSON, not the spec: the trial driver then never imports torch (service.trial).
    trainable = tune.with_parameters(run_trial, base=spec.base_config().model_dump(mode="json"),
                                     resources=spec.resources.model_dump(mode="json"),
                                     ledger=str(ledger) if ledger else None)
    return tune.with_resources(trainable, DRIVER_RESOURCES)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not imported in the sweep's driver")


def import_tensorboardx_without_torch() -> None:
    """Import tensorboardX before Tune's TensorBoard logger does, with torch out of reach.

    Its writer imports torch at module level only to recognise torch tensors; our results are
    plain numbers, and torch would add ~0.3 GiB to the driver (bench/default_sweep.py). The
    event files are the same. A no-op when torch or tensorboardX is already imported."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    blocker = _NoTorch()
    sys.meta_path.insert(0, blocker)
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        pass  # not installed: Tune then skips its TensorBoard logger
    finally:
        sys.meta_path.remove(blocker)


def build_tuner(spec, plan: SweepPlan, progress, resume: bool = False):
    """A fresh Tuner for `plan`, or the interrupted one restored from its directory."""
    from ray import tune

    import_tensorboardx_without_torch()

    if resume:
        return tune.Tuner.restore(plan.experiment_dir,
                                  trainable=_trainable(spec, ledger_path(plan.experiment_dir)),
                                  param_space=param_space(spec), resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    num_samples = spec.budget.num_samples
    if spec.searcher.type == "optuna-tpe":
        num_samples *= spec.budget.seeds
    elif spec.searcher.type == "grid":
        num_samples = 1  # the grid itself enumerates the trials
    tune_config = tune.TuneConfig(
        metric=spec.budget.metric, mode=spec.budget.mode,
        search_alg=_searcher(spec, plan.max_concurrent_trials),
        scheduler=_scheduler(spec), num_samples=num_samples,
        # A ready-made generator (grid/random) takes the limit itself; Tune would warn here.
        max_concurrent_trials=(plan.max_concurrent_trials
                               if spec.searcher.type == "optuna-tpe" else None),
        time_budget_s=spec.budget.time_budget_s)
    storage, name = plan.experiment_dir.rsplit("/", 1)
    run_config = tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[progress],
                                failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(_trainable(spec, ledger_path(plan.experiment_dir)),
                      param_space=param_space(spec), tune_config=tune_config,
                      run_config=run_config)


def trial_status(metrics: dict[str, Any], error: Exception | None, max_epochs: int) -> str:
    """completed | stopped-early | diverged | error, from a trial's last result."""
    if error is not None:
        return "error"
    if metrics.get("status") == "diverged":
        return "diverged"
    return "completed" if metrics.get("epoch", 0) >= max_epochs else "stopped-early"


def summarize(spec, plan: SweepPlan, results, wall_s: float, searched: list[str]) -> dict:
    """summary.json's content from a Tune ResultGrid."""
    import ray

    trials = []
    for r in results:
        m = r.metrics or {}
        df = r.metrics_dataframe
        accs = df["val_acc"].dropna().tolist() if df is not None and "val_acc" in df else []
        trials.append({
            "trial_id": m.get("trial_id") or _trial_id(r.path),
            "config": {k: v for k, v in (r.config or {}).items()},
            "status": trial_status(m, r.error, spec.budget.max_epochs),
            "epochs": int(m.get("epoch", 0)),
            "best_val_acc": max(accs) if accs else None,
            "final": {k: m[k] for k in ("val_acc", "val_loss", "train_loss") if k in m},
            "error": _first_line(r.error) if r.error else None,
        })
        if trials[-1]["status"] == "stopped-early":
            trials[-1]["stopped_at"] = trials[-1]["epochs"]  # the epoch a scheduler stopped it
    trials.sort(key=lambda t: _sort_key(t, spec.budget.metric, spec.budget.mode))
    ok = [t for t in trials if t["status"] not in FAILED and t["best_val_acc"] is not None]
    return {
        "name": spec.name, "spec": redacted_spec(spec), "plan": asdict(plan),
        "searched": searched, "trials": trials, "best": ok[0] if ok else None,
        "wall_s": round(wall_s, 2), "ray_version": ray.__version__,
        "torch_version": _version("torch"),  # the workers' torch; the driver never imports it
    }


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, e.g. postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def redacted_spec(spec) -> dict:
    """The spec as recorded in summary.json: an RDB password never lands in a results file."""
    dump = spec.model_dump(mode="json")
    if dump.get("searcher", {}).get("storage"):
        dump["searcher"]["storage"] = redact_url(dump["searcher"]["storage"])
    return dump


def _trial_id(path: str) -> str:
    # Tune names trial directories <trainable>_<trial_id>_<index>_<params>_<date>.
    parts = Path(path).name.split("_")
    return parts[2] if len(parts) > 2 and parts[:2] == ["run", "trial"] else Path(path).name


def _sort_key(trial: dict, metric: str, mode: str):
    if trial["status"] in FAILED or trial["best_val_acc"] is None:
        return (1, 0.0)
    value = trial["best_val_acc"] if metric == "val_acc" else trial["final"].get(metric, math.inf)
    return (0, -value if mode == "max" else value)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(err).__name__)[:500]


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (temp file + rename) to a local path or a URI."""
    data = json.dumps(payload, indent=2, default=str).encode()
    if "://" in path:
        import pyarrow.fs

        fs, rel = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(rel) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        # A full disk or a read-only directory: leave no half-written file behind.
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if err.filename is None:
            err.filename = path
        raise


def interrupted(spec, plan: SweepPlan, results, progress) -> bool:
    """True when Tune returned early (Ctrl-C): trials left unfinished or never made.

    Tune marks trials it stops on Ctrl-C as terminated, like finished ones, so the progress
    callback's ledger of trials that completed, stopped early or failed tells them apart.
    """
    from service.tune.progress import read_ledger

    # The callback Tune runs after a restore is the one pickled with the first session, not
    # `progress`; the ledger on disk is what both share.
    finished = read_ledger(progress.ledger) if progress.ledger else progress.finished
    ids = {(r.metrics or {}).get("trial_id") or _trial_id(r.path) for r in results}
    if ids - finished:
        return True
    # Optuna and random searchers make exactly `trials`; a grid may be smaller, a time budget
    # may legitimately end the sweep early.
    expected = plan.trials if spec.searcher.type != "grid" else 0
    return len(results) < expected and spec.budget.time_budget_s is None


def run_sweep(spec, plan: SweepPlan, progress, resume: bool = False) -> dict | None:
    """Run (or resume) the sweep and write summary.json; returns the summary, or None when
    the run was interrupted (Tune saved its state; nothing is summarised until it finishes)."""
    start = time.perf_counter()
    ledger = ledger_path(plan.experiment_dir)
    if ledger is not None:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        progress.use_ledger(ledger)
    tuner = build_tuner(spec, plan, progress, resume=resume)
    results = tuner.fit()
    if interrupted(spec, plan, results, progress):
        return None
    summary = summarize(spec, plan, results, time.perf_counter() - start, list(spec.search))
    write_json(f"{plan.experiment_dir}/summary.json", summary)
    return summary
