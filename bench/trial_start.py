"""Where a trial's start-up goes: a sweep of one-epoch trials through the service's own path
(submit's `start_ray`, then `sweep.run_sweep`), and Ray's record of every actor it created.

For each trial: Tune asks for its trial actor (the function trainable) -> that actor runs ->
Tune's `on_trial_start` -> `run_trial` builds the Ray Train run -> Train's controller and its
helper actors -> the Train worker actor -> the training function starts (`run_train_fn`) ->
the first training step (the first epoch's result arriving at Tune, minus its own `epoch_s`).
Actor times come from Ray's State API (each actor creation task's PENDING_NODE_ASSIGNMENT,
RUNNING and FINISHED events: waiting for a worker process, then the actor's `__init__`); the
rest from callbacks in this driver. Times are seconds from `Tuner.fit` being called.

    python bench/trial_start.py              # one trial, the profile table
    python bench/trial_start.py --trials 4   # four, two at a time: start p50/p95 as well

Ends with `trial_start_s=<median: on_trial_start -> first step> launch_s=<median: trial
actor requested -> first step> ray_start_s=<ray.init>`.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def space(trials: int) -> dict:
    """LeNet-5 on digits at 32 px, one epoch per trial, no scheduler, random searcher."""
    return {"name": "trial_start", "data": {"dataset": "digits", "image_size": 32},
            "model": {"family": "lenet5"}, "train": {"batch_size": 64},
            "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
            "budget": {"max_epochs": 1, "num_samples": trials},
            "scheduler": {"type": "none"}, "searcher": {"type": "random", "seed": 0}}


def actor_rows(t0: float) -> list[tuple[float, str, dict[str, float]]]:
    """Every actor creation Ray recorded: (requested, name, {state: seconds from t0})."""
    from ray.util.state import list_tasks

    rows = []
    for task in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False):
        if task.type != "ACTOR_CREATION_TASK" and not task.name.endswith("run_train_fn"):
            continue
        events = {e["state"]: e["created_ms"] / 1000 - t0 for e in task.events or []}
        if "PENDING_NODE_ASSIGNMENT" in events:
            rows.append((events["PENDING_NODE_ASSIGNMENT"], task.name, events))
    return sorted(rows, key=lambda row: row[:2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1)
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("trial_start: Ray is not installed here; this benchmark measures Ray's trial "
              "start-up", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from service.config.spec import parse_spec
    from service.tune.plan import plan_sweep
    from service.tune.progress import Progress
    from service.tune.runtime import start_ray
    from service.tune.sweep import run_sweep

    spec = parse_spec(space(args.trials))
    t_init = time.time()
    start_ray(None, False)
    ray_start = time.time() - t_init
    results = tempfile.mkdtemp(prefix="trial_start-")
    plan = plan_sweep(spec, results, ray.cluster_resources(), "run")
    started: dict[str, float] = {}
    first_step: dict[str, float] = {}
    complete: dict[str, float] = {}

    class Timed(Progress):
        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("epoch") == 1:
                first_step[trial.trial_id] = time.time() - result["epoch_s"]

        def on_trial_complete(self, iteration, trials, trial, **info):
            complete[trial.trial_id] = time.time()
            super().on_trial_complete(iteration, trials, trial, **info)

    t0 = time.time()
    summary = run_sweep(spec, plan, Timed(plan.trials, 1, ["lr"], quiet=True))
    wall = time.time() - t0
    rows = actor_rows(t0)
    ray.shutdown()

    print(f"{'actor (first trial)':58s} {'asked':>6s} {'runs':>6s} {'ready':>6s}")
    requested = []
    for asked, name, ev in rows:
        if name == "ImplicitFunc.__init__":
            requested.append(asked)
        if len(requested) <= 1:  # the first trial's chain; later ones repeat it
            print(f"{name:58s} {asked:6.2f} {ev.get('RUNNING', float('nan')):6.2f} "
                  f"{ev.get('FINISHED', float('nan')):6.2f}")
    ids = sorted(first_step, key=first_step.get)
    starts = [first_step[i] - started[i] for i in ids if i in started]
    launches = [first_step[i] - t0 - r for i, r in zip(ids, sorted(requested), strict=False)]
    for i in ids:
        print(f"trial {i}: on_trial_start {started.get(i, t0) - t0:6.2f}  first step "
              f"{first_step[i] - t0:6.2f}  complete {complete.get(i, t0) - t0:6.2f}")
    made = collections.Counter(name.split(".")[0] for _, name, _ in rows
                               if name.endswith("__init__"))
    print("actors created:", ", ".join(f"{n} x{c}" for n, c in sorted(made.items())))
    statuses = sorted({t.status for t in summary.trials}) if summary else ["interrupted"]
    print(f"trials {len(ids)} ({', '.join(statuses)}), sweep wall {wall:.1f}s")
    if len(starts) > 1:
        q = statistics.quantiles(starts, n=20)
        print(f"trial start p50 {statistics.median(starts):.2f}s p95 {q[18]:.2f}s")
    print(f"trial_start_s={statistics.median(starts):.2f} "
          f"launch_s={statistics.median(launches):.2f} ray_start_s={ray_start:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
