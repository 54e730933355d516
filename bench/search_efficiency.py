"""Search efficiency: epochs spent and best val_acc found by five strategies on one fixed space.

The space is a small grid over LeNet-5 on digits (lr x pool x activation x dropout). Every
configuration's full learning curve (val_acc per epoch, trained with `service.train.fit`, one
thread) is cached in `bench/data/`, so each strategy replays real curves: the comparison is
exact and costs seconds instead of hours. The curve is the per-epoch mean over 3 training seeds
(`search_table_seeds3.json`; `--train-seeds 1` replays the single-seed table
`search_table.json`): one seed's curves rank the configurations by luck (docs/performance.md).
Strategies:

  grid         exhaustive grid at the full budget (computed from the table)
  random       Tune's random search (BasicVariantGenerator), no early stopping
  tpe-asha     our PrunedAwareOptunaSearch (TPE) + RestorableASHA, as the default sweep
  tpe-pruner   TPE + our OptunaPrunerScheduler (Optuna's MedianPruner deciding in Tune)
  optuna       plain Optuna: TPESampler + MedianPruner, sequential, no Ray

The Ray strategies are real `tune.Tuner` runs whose searcher and scheduler come from
`service.tune.search.make_searcher/make_scheduler` applied to a SweepSpec, with a trainable that
reports the table's curve for its config epoch by epoch. Epochs spent = the epochs each trial
reported; best = the best val_acc any trial reached. The last line is the headline as key=value.

    python bench/search_efficiency.py              # 5 searcher seeds over the cached table
    python bench/search_efficiency.py --rebuild    # retrain the table (~5 min, one thread)
    python bench/search_efficiency.py --train-seeds 1   # the single-seed table
    python bench/search_efficiency.py --quick      # CI: 4 configs x 3 epochs trained now, 1 seed
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Tune's boxed tables per run would bury the rows this script prints.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

TABLE = Path(__file__).resolve().parent / "data" / "search_table.json"
# The fixed space: 24 configurations, each a full 15-epoch cosine run.
GRID = {"lr": [0.01, 0.03, 0.1], "pool": ["max", "avg"], "activation": ["relu", "tanh"],
        "dropout": [0.0, 0.5]}
EPOCHS = 15
QUICK_GRID = {"lr": [0.01, 0.1], "activation": ["relu", "tanh"]}
QUICK_EPOCHS = 3
BASE = {"model": "lenet5", "data": {"dataset": "digits", "image_size": 32}, "optimizer": "sgd",
        "momentum": 0.9, "batch_size": 64, "seed": 0, "num_threads": 1}
STRATEGIES = ("grid", "random", "tpe-asha", "tpe-pruner", "optuna")
CONCURRENCY = 2  # trials at a time, as the default sweep on 2 cores


def config_key(config: dict[str, Any], keys: list[str]) -> str:
    """The table's key for a configuration (only the searched keys, in a fixed order)."""
    return json.dumps({k: config[k] for k in sorted(keys)}, sort_keys=True)


def table_path(train_seeds: int) -> Path:
    """The cached table for curves averaged over `train_seeds` training seeds."""
    return TABLE if train_seeds == 1 else TABLE.with_name(f"search_table_seeds{train_seeds}.json")


def build_table(grid: dict[str, list], epochs: int, train_seeds: int = 1) -> dict[str, Any]:
    """Train every grid configuration to the end and record val_acc per epoch; with several
    training seeds (same data split, different initialisation and batch order) the table's
    curve is their per-epoch mean, so that training noise does not pick the grid's best."""
    import torch

    from service.config.train import TrainConfig
    from service.training.loop import fit, prepare

    torch.set_num_threads(1)  # one thread: the machine is shared, and runs stay comparable
    base = TrainConfig.model_validate({**BASE, "epochs": epochs})
    _, datasets = prepare(base)  # the same in-memory digits for every configuration
    curves = []
    for values in itertools.product(*grid.values()):
        config = dict(zip(grid, values, strict=True))
        runs: list[list[float]] = []
        for seed in range(base.seed, base.seed + train_seeds):
            accs: list[float] = []
            fit(base.with_overrides({**config, "seed": seed}),
                lambda m, _c, accs=accs: accs.append(round(m["val_acc"], 6)), datasets=datasets)
            runs.append(accs)
        mean = [round(statistics.fmean(epoch), 6) for epoch in zip(*runs, strict=True)]
        row = {"config": config, "val_acc": mean}
        if train_seeds > 1:
            row["val_acc_per_seed"] = runs
        curves.append(row)
        print(f"  {config_key(config, list(grid))}: final {mean[-1]:.4f} best {max(mean):.4f}",
              flush=True)
    return {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} CPU, {platform.python_version()}, torch "
                       f"{torch.__version__}", "seed": base.seed, "train_seeds": train_seeds,
            "epochs": epochs, "base": base.model_dump(mode="json"), "grid": grid,
            "curves": curves}


def make_spec(table: dict[str, Any], searcher: dict, scheduler: dict, num_samples: int,
              metric: str = "val_acc"):
    """The SweepSpec a user would write for this space; validated like any other."""
    from service.config.spec import parse_spec

    base = table["base"]
    return parse_spec({
        "name": "search-efficiency",
        "data": {"dataset": "digits", "image_size": base["data"]["image_size"]},
        "model": {"family": base["model"]},
        "train": {"optimizer": "sgd", "momentum": base["momentum"],
                  "batch_size": base["batch_size"]},
        "search": {k: {"type": "choice", "values": v} for k, v in table["grid"].items()},
        "budget": {"max_epochs": table["epochs"], "num_samples": num_samples,
                   "metric": metric},
        "searcher": searcher, "scheduler": scheduler,
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1,
                      "max_concurrent_trials": CONCURRENCY},
    })


def replay(config: dict[str, Any], curves: dict[str, list[float]] | None = None) -> None:
    """Tune function trainable: report the cached curve of `config`, one result per epoch."""
    from ray import tune

    curve = curves[config_key(config, list(config))]
    best = 0.0
    for epoch, acc in enumerate(curve, 1):
        best = max(best, acc)
        tune.report({"epoch": epoch, "val_acc": acc, "best_val_acc": best,
                     "status": "completed" if epoch == len(curve) else "running"})


def run_tune(spec, curves: dict[str, list[float]], tmp: str) -> list[tuple[str, int]]:
    """One real Tune run of `spec` over the table: (config key, epochs reported) per trial."""
    from ray import tune

    from service.tune.search import make_scheduler, make_searcher, param_space

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(replay, curves=curves), {"CPU": 1}),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.budget.metric, mode="max", search_alg=make_searcher(spec, CONCURRENCY),
            scheduler=make_scheduler(spec), num_samples=spec.budget.num_samples,
            max_concurrent_trials=CONCURRENCY),
        run_config=tune.RunConfig(storage_path=tmp, verbose=0))
    out = []
    for r in tuner.fit():
        if r.error is not None:
            raise RuntimeError(f"trial failed: {r.error}")
        df = r.metrics_dataframe
        out.append((config_key(r.config, list(spec.search)), int(df["epoch"].max())))
    return out


def run_optuna(table: dict[str, Any], curves: dict[str, list[float]], seed: int,
               num_samples: int, startup: int, warmup: int) -> list[tuple[str, int]]:
    """Plain Optuna over the table: TPE + MedianPruner, one trial at a time, no Ray."""
    import optuna

    grid = table["grid"]
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup))
    spent: list[tuple[str, int]] = []

    def objective(trial: optuna.Trial) -> float:
        key = config_key({k: trial.suggest_categorical(k, v) for k, v in grid.items()}, list(grid))
        for epoch, acc in enumerate(curves[key], 1):
            trial.report(acc, epoch)
            if trial.should_prune():
                spent.append((key, epoch))
                raise optuna.TrialPruned()
        spent.append((key, len(curves[key])))
        return curves[key][-1]

    study.optimize(objective, n_trials=num_samples)
    return spent


def score(trials: list[tuple[str, int]], curves: dict[str, list[float]]) -> tuple[float, int]:
    """(best val_acc reached by any trial within its epochs, epochs spent in all)."""
    best = max(max(curves[key][:epochs]) for key, epochs in trials)
    return best, sum(epochs for _, epochs in trials)


def run_strategies(table: dict[str, Any], seeds: list[int], num_samples: int, startup: int,
                   grace: int, rf: int = 2, only: tuple[str, ...] = STRATEGIES,
                   metric: str = "val_acc",
                   brackets: int = 1) -> dict[str, list[tuple[float, int]]]:
    """(best, epochs) per seed for every strategy."""
    import tempfile

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune warns that the random searcher ignores max_concurrent_trials: service.sweep gives
    # that limit to the BasicVariantGenerator itself.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    curves = {config_key(c["config"], list(table["grid"])): c["val_acc"]
              for c in table["curves"]}
    n, epochs = len(curves), table["epochs"]
    out = {"grid": [(max(max(c) for c in curves.values()), n * epochs)] * len(seeds)}
    asha = {"type": "asha", "grace_period": grace, "reduction_factor": rf, "brackets": brackets}
    pruner = {"type": "optuna", "pruner": "median", "n_startup_trials": startup,
              "n_warmup_steps": grace}
    tpe = {"type": "optuna-tpe", "n_startup_trials": startup}
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # no Ray Train here, so no dashboard is needed
    try:
        with tempfile.TemporaryDirectory(prefix="search-eff-") as tmp:
            for seed in seeds:
                specs = {
                    "random": make_spec(table, {"type": "random", "seed": seed},
                                        {"type": "none"}, num_samples),
                    "tpe-asha": make_spec(table, {**tpe, "seed": seed}, asha, num_samples,
                                          metric),
                    "tpe-pruner": make_spec(table, {**tpe, "seed": seed}, pruner, num_samples,
                                            metric)}
                for name, spec in specs.items():
                    if name in only:
                        out.setdefault(name, []).append(score(run_tune(spec, curves, tmp),
                                                              curves))
                if "optuna" in only:
                    out.setdefault("optuna", []).append(score(
                        run_optuna(table, curves, seed, num_samples, startup, grace), curves))
                print(f"  seed {seed}: " + "  ".join(
                    f"{k} {v[-1][0]:.4f}/{v[-1][1]}ep" for k, v in out.items() if k != "grid"),
                    flush=True)
    finally:
        ray.shutdown()
    return out


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(results: dict[str, list[tuple[float, int]]]) -> dict[str, float]:
    """Print mean +- std per strategy and return the headline (gaps in points, epoch ratios)."""
    grid_best, grid_epochs = results["grid"][0]
    print(f"{'strategy':<11} {'best val_acc':>17} {'gap (pts)':>10} {'epochs':>15} "
          f"{'vs grid':>8}")
    headline: dict[str, float] = {}
    for name in (n for n in STRATEGIES if n in results):
        bests, spent = zip(*results[name], strict=True)
        (bm, bs), (em, es) = _mean_std(list(bests)), _mean_std([float(e) for e in spent])
        gap = 100 * (grid_best - bm)
        print(f"{name:<11} {bm:>9.4f} +- {bs:.4f} {gap:>10.2f} {em:>7.1f} +- {es:>5.1f} "
              f"{em / grid_epochs:>8.1%}")
        if name != "grid":
            tag = name.replace("-", "_")
            headline[f"{tag}_gap_pts"] = round(gap, 2)
            headline[f"{tag}_epochs_ratio"] = round(em / grid_epochs, 3)
    return headline


def main(argv: list[str] | None = None) -> int:
    """Load (or build) the table, run every strategy over the seeds, print the headline."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny grid trained now, 1 searcher seed")
    p.add_argument("--rebuild", action="store_true", help=f"retrain {TABLE.name} first")
    p.add_argument("--seeds", type=int, default=5, help="searcher seeds (default 5)")
    p.add_argument("--num-samples", type=int, default=12, help="trials per search (default 12)")
    p.add_argument("--startup", type=int, default=4,
                   help="TPE random startup trials, also the pruner's n_startup_trials")
    p.add_argument("--grace", type=int, default=2,
                   help="ASHA grace period, also the pruner's n_warmup_steps (epochs)")
    p.add_argument("--reduction-factor", type=int, default=2,
                   help="ASHA's reduction factor (default 2)")
    p.add_argument("--brackets", type=int, default=1,
                   help="ASHA brackets (default 1; bracket k's first rung is grace x rf^k)")
    p.add_argument("--train-seeds", type=int, default=3,
                   help="average each configuration's curve over this many training seeds "
                        "(default 3: bench/data/search_table_seeds3.json; 1 is the single-seed "
                        "table bench/data/search_table.json)")
    p.add_argument("--metric", choices=("val_acc", "best_val_acc"), default="val_acc",
                   help="what TPE and the schedulers compare: this epoch's val_acc or the "
                        "running best (default val_acc)")
    p.add_argument("--only", default=",".join(STRATEGIES),
                   help="comma-separated strategies to run (default: all)")
    args = p.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    if not only or set(only) - set(STRATEGIES):
        p.exit(2, f"error: --only takes strategies from {', '.join(STRATEGIES)}\n")
    if args.reduction_factor < 2:
        p.exit(2, "error: --reduction-factor must be at least 2\n")
    for flag in ("seeds", "num_samples", "startup", "grace", "brackets", "train_seeds"):
        if getattr(args, flag) < 1:
            p.exit(2, f"error: --{flag.replace('_', '-')} must be at least 1\n")
    if args.quick and args.rebuild:
        p.exit(2, "error: --quick builds its own tiny table; it does not take --rebuild\n")
    if args.quick:
        args.seeds, args.num_samples, args.startup, args.grace = 1, 4, 2, 1
        args.train_seeds = 1
        print(f"building the quick table: {QUICK_GRID}, {QUICK_EPOCHS} epochs", flush=True)
        table = build_table(QUICK_GRID, QUICK_EPOCHS, args.train_seeds)
    elif args.rebuild or not table_path(args.train_seeds).exists():
        path = table_path(args.train_seeds)
        print(f"building {path}: {GRID}, {EPOCHS} epochs, {args.train_seeds} training seed(s)",
              flush=True)
        table = build_table(GRID, EPOCHS, args.train_seeds)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=1) + "\n")
    else:
        table = json.loads(table_path(args.train_seeds).read_text())
    if args.grace >= table["epochs"]:
        p.exit(2, f"error: --grace must be below the table's {table['epochs']} epochs\n")
    print(f"table: {len(table['curves'])} configs x {table['epochs']} epochs, mean of "
          f"{table.get('train_seeds', 1)} training seed(s) "
          f"({table['date']}); {args.num_samples} trials per search, seeds 0..{args.seeds - 1}, "
          f"TPE startup {args.startup}, grace {args.grace}, ASHA reduction factor "
          f"{args.reduction_factor}, brackets {args.brackets}", flush=True)
    results = run_strategies(table, list(range(args.seeds)), args.num_samples, args.startup,
                             args.grace, args.reduction_factor, only, args.metric,
                             args.brackets)
    headline = report(results)
    headline["grid_best"] = round(results["grid"][0][0], 4)
    headline["seeds"] = args.seeds
    print(" ".join(f"{k}={v}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
