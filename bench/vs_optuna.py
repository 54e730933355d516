"""The service against plain Optuna: one search space searched both ways on the same cores.

  (a) optuna  plain Optuna written here, in this one process: TPESampler with the space's
              searcher seed and n_startup_trials, `study.optimize(n_jobs=C)` (trials in C
              threads), each trial calling `service.training.loop.fit` with 1 torch thread
              (fit builds its datasets and model, and writes its checkpoint every epoch, as
              in a sweep); each epoch's metric goes to `trial.report` through fit's report
              callback. The sampler keeps its seed (Optuna reseeds it from the OS before every
              trial when n_jobs > 1) and each trial draws its values in one go (a lock), so
              that Optuna proposes what the sweep's OptunaSearch proposes: the configurations
              each side trained are printed, with how many they share
  (b) sweep   the service on embedded Ray, the path of `python -m service.submit`:
              `runtime.start_ray`, then `sweep.run_sweep` with `plan_sweep`'s concurrency C,
              once per engine (`resources.engine`), one after the other on the same Ray:
                tune   fit in Tune's own trial actor, which holds the trial's 1 CPU and runs
                       trial after trial (the default for one worker)
                train  each trial a Ray Train run: Tune trial -> Train controller -> Train
                       worker (1 CPU) -> fit
              Ray gives each 1-CPU actor OMP_NUM_THREADS=1. `--engine tune|train` runs one.

C is the sweeps' concurrency on this machine (`service.tune.plan.concurrency`: 2 on 2 cores),
so both sides train C trials at a time with one thread each. The space is the shipped default
(`service/searchspaces/default.yaml`: quarter-width AlexNet at 67 px on digits, conv1 11x11/4
vs 7x7/2, fc_width, dropout, lrn) with --trials/--epochs overriding its num_samples/max_epochs
as `python -m service.submit --num-samples/--max-epochs` would. Two modes:

  identical work (default)  no early stopping on either side: the sweep's scheduler is
                            replaced by `{type: none}` and Optuna has no pruner, so both train
                            exactly trials x epochs epochs; every trial is one of TPE's seeded
                            startup draws (n_startup_trials raised to the number of trials),
                            so both sides train the same configurations
  --early-stopping          each side stops trials its own way: the space's ASHA in the sweep;
                            in Optuna a SuccessiveHalvingPruner with ASHA's grace period as
                            min_resource and its reduction factor, raising TrialPruned when
                            `trial.should_prune()` says so after an epoch

Measured: wall time of each side; for (a) from creating the study to `optimize` returning (this
process had imported torch and the service before: a plain script pays that once, at start-up,
as the sweep pays Ray's), for (b) each engine's `run_sweep` including summary.json, with Ray's
start-up (`ray.init` as submit does it, once for both engines) timed apart. The second engine's
sweep finds Ray warm (idle worker processes, the file cache); `--engine` runs one engine on a
Ray of its own. Epochs trained are counted from the reports (fit's report calls in (a); Tune's
results, one per epoch, in (b)), and wall per epoch is wall / epochs; "fit epoch_s" is the
median of fit's own per-epoch time (train + validate of one trial while the others run
alongside). Trial start: (b) Tune's `on_trial_start` -> the first epoch's result minus its own
`epoch_s` (as bench/trial_start.py); (a) the objective being called -> the same moment (after
the first trial this process has the data cached, as `service.training.data` does per process,
and torch warm). Medians over trials.

    python bench/vs_optuna.py                      # identical work: 6 trials x 4 epochs
    python bench/vs_optuna.py --early-stopping     # ASHA vs SuccessiveHalvingPruner
    python bench/vs_optuna.py --engine tune        # the sweep on one engine only
    python bench/vs_optuna.py --quick              # CI: 2 trials x 1 epoch per side

Ends with one line per engine, `engine=<tune|train> sweep_over_optuna=<that sweep's wall
without Ray start-up / optuna wall> trial_start_s=<that sweep's median> ray_start_s=<ray.init>`
and that sweep's per-epoch numbers (sweep_*), then one line of Optuna's (optuna_*) and the
run's size (trials, epochs, concurrency).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Tune's boxed tables per run would bury the rows this script prints.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DEFAULT_SPACE = ROOT / "service" / "searchspaces" / "default.yaml"
TRIALS, EPOCHS = 6, 4  # the identical-work comparison of docs/performance.md
ENGINES = ("tune", "train")
QUICK_TRIALS, QUICK_EPOCHS = 2, 1


def load_space(trials: int, epochs: int, early_stopping: bool):
    """The default space with num_samples/max_epochs overridden (validated again, as submit
    does); without early stopping its scheduler is `{type: none}`."""
    from service.config.spec import load_spec, parse_spec

    dump = load_spec(DEFAULT_SPACE).model_dump(mode="json")
    dump["budget"].update(num_samples=trials, max_epochs=epochs)
    if not early_stopping:
        dump["scheduler"] = {"type": "none"}
        # Every configuration a seeded startup draw: TPE's later picks depend on which trials
        # had finished when they were asked, an order the two sides do not share (a 7x7/2
        # conv1 costs about three times a 7x7/4 one), so only startup draws make the work
        # identical.
        dump["searcher"]["n_startup_trials"] = max(trials, dump["searcher"]["n_startup_trials"])
    spec = parse_spec(dump, source=str(DEFAULT_SPACE))
    if spec.searcher.type != "optuna-tpe" or spec.budget.seeds != 1:
        raise SystemExit("vs_optuna: the space must use searcher optuna-tpe with one seed")
    if early_stopping and spec.scheduler.type != "asha":
        raise SystemExit("vs_optuna: --early-stopping compares ASHA with Optuna's "
                         f"SuccessiveHalvingPruner; the space's scheduler is "
                         f"{spec.scheduler.type}")
    if early_stopping and spec.scheduler.reduction_factor != int(spec.scheduler.reduction_factor):
        raise SystemExit("vs_optuna: SuccessiveHalvingPruner takes a whole reduction factor; "
                         f"the space's ASHA has {spec.scheduler.reduction_factor}")
    return spec


def suggest(trial, spec) -> dict[str, Any]:
    """One configuration from Optuna: the space's search block as Optuna distributions (the
    ones OptunaSearch builds from the sweep's Tune space)."""
    from service.config.blocks import FloatRange, Values

    sampled = {}
    for key, dist in spec.search.items():
        if isinstance(dist, Values):
            sampled[key] = trial.suggest_categorical(key, list(dist.values))
        elif isinstance(dist, FloatRange):
            sampled[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        else:
            sampled[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step,
                                             log=dist.log)
    return sampled


def run_optuna(spec, n_jobs: int, early_stopping: bool) -> dict[str, Any]:
    """(a): plain Optuna in this process, n_jobs trials at a time in threads."""
    import optuna

    from service.training.loop import fit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, lock, sampling = spec.budget.metric, threading.Lock(), threading.Lock()
    epochs: list[tuple[int, int]] = []  # (trial number, epoch) of every report
    starts: list[float] = []
    epoch_s: list[float] = []
    configs: list[dict[str, Any]] = []
    best = [0.0]

    def objective(trial: optuna.Trial) -> float:
        called = time.time()
        # One trial's values drawn together, as the sweep's OptunaSearch does in Tune's driver
        # (study.ask): otherwise the threads interleave the sampler's random draws, and the two
        # sides would train different configurations (a 7x7/2 conv1 costs more than 11x11/4).
        with sampling:
            sampled = suggest(trial, spec)
            configs.append(sampled)
        cfg = spec.train_config(sampled).model_copy(update={"num_threads": 1})

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            with lock:
                epochs.append((trial.number, metrics["epoch"]))
                epoch_s.append(metrics["epoch_s"])
                best[0] = max(best[0], metrics["val_acc"])
                if metrics["epoch"] == 1:
                    starts.append(time.time() - metrics["epoch_s"] - called)
            trial.report(metrics[metric], metrics["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        return fit(cfg, report)[metric]

    class SeededTPE(optuna.samplers.TPESampler):
        """TPE that keeps its seed: with n_jobs > 1 `optimize` reseeds the sampler's random
        state from the OS before every trial, so the seed would be lost and the two sides
        would train different configurations."""

        def reseed_rng(self) -> None:
            pass

    sampler = SeededTPE(seed=spec.searcher.seed, n_startup_trials=spec.searcher.n_startup_trials)
    pruner = (optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.scheduler.grace_period,
        reduction_factor=int(spec.scheduler.reduction_factor))  # Optuna indexes rungs by it
        if early_stopping else optuna.pruners.NopPruner())
    t0 = time.perf_counter()
    study = optuna.create_study(direction="maximize" if spec.budget.mode == "max" else
                                "minimize", sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=spec.budget.num_samples, n_jobs=n_jobs)
    wall = time.perf_counter() - t0
    states = [t.state.name.lower() for t in study.trials]
    return {"wall_s": wall, "epochs": len(set(epochs)), "trial_start_s": statistics.median(starts),
            "epoch_s": statistics.median(epoch_s), "best": best[0], "configs": configs,
            "states": {s: states.count(s) for s in sorted(set(states))}}


def with_engine(spec, engine: str):
    """`spec` with its trials on `engine` (`resources.engine`), validated again."""
    from service.config.spec import parse_spec

    dump = spec.model_dump(mode="json")
    dump["resources"]["engine"] = engine
    return parse_spec(dump, source=f"{DEFAULT_SPACE} (engine {engine})")


def run_service(spec, engines: tuple[str, ...]) -> dict[str, Any]:
    """(b): start Ray as submit does (timed apart), then one sweep per engine on it:
    {"ray_start_s": …, engine: that sweep's numbers, …}."""
    import ray

    from service.tune.runtime import start_ray

    t0 = time.perf_counter()
    start_ray(None, verbose=False)
    out: dict[str, Any] = {"ray_start_s": time.perf_counter() - t0}
    try:
        for engine in engines:
            out[engine] = run_sweep_on(with_engine(spec, engine))
            print(f"sweep on the {engine} engine done (load {os.getloadavg()[0]:.2f})",
                  flush=True)
    finally:
        ray.shutdown()
    return out


def run_sweep_on(spec) -> dict[str, Any]:
    """One sweep of `spec` through run_sweep on the running Ray."""
    import ray

    from service.tune.plan import plan_sweep
    from service.tune.progress import Progress
    from service.tune.sweep import run_sweep

    # Closed over, not attributes: Tune may copy its callbacks.
    started: dict[str, float] = {}
    first_step: dict[str, float] = {}
    epochs: set[tuple[str, int]] = set()
    epoch_s: list[float] = []
    best = [0.0]

    class Timed(Progress):
        def on_trial_start(self, iteration, trials, trial, **info):
            started.setdefault(trial.trial_id, time.time())
            return super().on_trial_start(iteration, trials, trial, **info)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "epoch" in result:
                epochs.add((trial.trial_id, result["epoch"]))
                epoch_s.append(result["epoch_s"])
                best[0] = max(best[0], result.get("val_acc", 0.0))
                if result["epoch"] == 1:
                    first_step[trial.trial_id] = time.time() - result["epoch_s"]
            return super().on_trial_result(iteration, trials, trial, result, **info)

    with tempfile.TemporaryDirectory(prefix="vs_optuna-") as tmp:
        plan = plan_sweep(spec, tmp, ray.cluster_resources(), "run")
        progress = Timed(plan.trials, plan.max_epochs, list(spec.search), quiet=True)
        t1 = time.perf_counter()
        summary = run_sweep(spec, plan, progress)
        wall = time.perf_counter() - t1
    if summary is None:
        raise RuntimeError("the sweep was interrupted")
    statuses = [t.status for t in summary.trials]
    starts = [first_step[i] - started[i] for i in first_step if i in started]
    return {"wall_s": wall, "epochs": len(epochs),
            "trial_start_s": statistics.median(starts), "epoch_s": statistics.median(epoch_s),
            "best": best[0], "configs": [t.config for t in summary.trials],
            "concurrency": plan.max_concurrent_trials,
            "states": {s: statuses.count(s) for s in sorted(set(statuses))}}


def describe(config: dict[str, Any]) -> str:
    """A default-space configuration in a few characters: 11/4,256,d0.25,lrn."""
    out = [f"{config.get('conv1_kernel')}/{config.get('conv1_stride')}",
           str(config.get("fc_width")), f"d{config.get('dropout', 0):.2f}"]
    return ",".join(out + (["lrn"] if config.get("lrn") else []))


def shared_configs(spec, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    """How many configurations the two sides have in common (as multisets; floats to 1e-9)."""
    def key(config: dict[str, Any]) -> tuple:
        return tuple(round(v, 9) if isinstance(v, float) else v
                     for v in (config.get(k) for k in spec.search))

    left = [key(c) for c in a]
    count = 0
    for k in (key(c) for c in b):
        if k in left:
            left.remove(k)
            count += 1
    return count


def print_sides(spec, a: dict[str, Any], service: dict[str, Any],
                engines: tuple[str, ...]) -> None:
    """The table of every side (Optuna, then the sweep on each engine) and their
    configurations."""
    sides = [("optuna", a)] + [(f"sweep {e}", service[e]) for e in engines]
    print(f"{'side':<12} {'wall s':>8} {'epochs':>7} {'s/epoch':>8} {'fit epoch_s':>12} "
          f"{'trial start s':>14} {'best val_acc':>13}  trials")
    for name, r in sides:
        states = ", ".join(f"{n} {s}" for s, n in r["states"].items())
        print(f"{name:<12} {r['wall_s']:>8.2f} {r['epochs']:>7d} "
              f"{r['wall_s'] / r['epochs']:>8.3f} {r['epoch_s']:>12.3f} "
              f"{r['trial_start_s']:>14.2f} {r['best']:>13.4f}  {states}")
    trials = spec.budget.num_samples
    for e in engines:
        print(f"configurations: {shared_configs(spec, a['configs'], service[e]['configs'])} "
              f"of {trials} trained by both Optuna and the sweep on the {e} engine")
    print("per side (conv1 kernel/stride, fc_width, dropout, lrn):")
    for name, r in sides:
        print(f"  {name:<11} "
              + "  ".join(describe(c) for c in sorted(r["configs"], key=describe)))
    walls = ", ".join(f"{e} {service[e]['wall_s'] + service['ray_start_s']:.2f}s"
                      for e in engines)
    print(f"sweep: Ray start-up {service['ray_start_s']:.2f}s apart (wall with it: {walls}); "
          f"load {os.getloadavg()[0]:.2f}")


def headlines(a: dict[str, Any], service: dict[str, Any], engines: tuple[str, ...],
              args) -> list[str]:
    """One key=value line per engine, then Optuna's and the run's."""
    lines = []
    for e in engines:
        b = service[e]
        lines.append(" ".join(f"{k}={v}" for k, v in {
            "engine": e, "sweep_over_optuna": f"{b['wall_s'] / a['wall_s']:.3f}",
            "trial_start_s": f"{b['trial_start_s']:.2f}",
            "ray_start_s": f"{service['ray_start_s']:.2f}",
            "sweep_s_per_epoch": f"{b['wall_s'] / b['epochs']:.3f}",
            "sweep_epochs": b["epochs"], "sweep_wall_s": f"{b['wall_s']:.2f}",
            "sweep_fit_epoch_s": f"{b['epoch_s']:.3f}"}.items()))
    lines.append(" ".join(f"{k}={v}" for k, v in {
        "optuna_s_per_epoch": f"{a['wall_s'] / a['epochs']:.3f}",
        "optuna_epochs": a["epochs"], "optuna_wall_s": f"{a['wall_s']:.2f}",
        "optuna_trial_start_s": f"{a['trial_start_s']:.2f}",
        "optuna_fit_epoch_s": f"{a['epoch_s']:.3f}",
        "trials": args.trials, "epochs": args.epochs, "concurrency": args.n_jobs}.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=TRIALS,
                   help=f"override budget.num_samples (default {TRIALS})")
    p.add_argument("--epochs", type=int, default=EPOCHS,
                   help=f"override budget.max_epochs (default {EPOCHS})")
    p.add_argument("--early-stopping", action="store_true",
                   help="each side's own early stopping: ASHA vs SuccessiveHalvingPruner")
    p.add_argument("--engine", choices=(*ENGINES, "both"), default="both",
                   help="the engine(s) the sweep runs on (default both: tune, then train)")
    p.add_argument("--quick", action="store_true",
                   help=f"CI: {QUICK_TRIALS} trials x {QUICK_EPOCHS} epoch per side")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = QUICK_TRIALS, QUICK_EPOCHS
    if args.trials < 1 or args.epochs < 1:
        p.exit(2, "error: --trials and --epochs must be at least 1\n")
    spec = load_space(args.trials, args.epochs, args.early_stopping)
    engines = ENGINES if args.engine == "both" else (args.engine,)

    import optuna
    import ray
    import torch

    from service.tune.plan import concurrency
    from service.tune.runtime import local_resources

    args.n_jobs = n_jobs = concurrency(spec, local_resources(via_ray=True))
    mode = (f"early stopping (ASHA grace {spec.scheduler.grace_period}, reduction factor "
            f"{spec.scheduler.reduction_factor} vs SuccessiveHalvingPruner)"
            if args.early_stopping else "identical work (no early stopping)")
    print(f"default space, {args.trials} trials x {args.epochs} epochs, {mode}; {n_jobs} at a "
          f"time, 1 thread each; sweep engines {', '.join(engines)}; cpus={os.cpu_count()} "
          f"python={sys.version.split()[0]} ray={ray.__version__} torch={torch.__version__} "
          f"optuna={optuna.__version__} load={os.getloadavg()[0]:.2f}", flush=True)
    a = run_optuna(spec, n_jobs, args.early_stopping)
    print(f"optuna done (load {os.getloadavg()[0]:.2f}); starting the sweeps", flush=True)
    service = run_service(spec, engines)
    for e in engines:
        if service[e]["concurrency"] != n_jobs:
            print(f"warning: the sweep on the {e} engine ran {service[e]['concurrency']} "
                  f"trials at a time, Optuna {n_jobs}")
    print_sides(spec, a, service, engines)
    print("\n".join(headlines(a, service, engines, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
