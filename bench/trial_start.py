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

It also counts the CPU the sweep costs (the machine's, all cores: Ray's own processes, the
driver, everything), split into the trials' epochs (their `epoch_s`, one thread each) and the
rest, and the CPU of each Ray worker process by actor class: on a machine whose cores are all
busy, start-up CPU is what a sweep's wall pays for.

Ends with `trial_start_s=<median: on_trial_start -> first step> launch_s=<median: trial
actor requested -> first step, trials that got a new actor> ray_start_s=<ray.init>
overhead_cpu_s=<CPU s per trial outside its epochs>`.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def space(trials: int, name: str = "trial_start") -> dict:
    """LeNet-5 on digits at 32 px, one epoch per trial, no scheduler, random searcher (also
    bench/scale.py's space)."""
    return {"name": name, "data": {"dataset": "digits", "image_size": 32},
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


class CpuMeter:
    """CPU seconds while the sweep runs: the machine's (from /proc/stat, all cores, every
    process), and each Ray worker process's (`ray::<actor class>`, sampled from
    /proc/<pid>/stat every 0.2 s, so a process that ends between samples loses < 0.2 s)."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.procs: dict[tuple[str, str], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def machine(self) -> float:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        return (sum(cpu) - cpu[3] - cpu[4]) / self.hz  # all but idle and iowait

    def _sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")[0].decode(errors="replace")
                if not cmd.startswith("ray::"):
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = cmd[5:].split(".")[0].split(":")[0]
            if name == "IDLE" and (pid, fields[19]) in self.procs:
                continue  # an actor's process keeps its first name
            self.procs[(pid, fields[19])] = (
                name, (int(fields[11]) + int(fields[12])) / self.hz)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self.start = self.machine()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.total = self.machine() - self.start

    def by_class(self) -> collections.Counter:
        out: collections.Counter = collections.Counter()
        for name, cpu in self.procs.values():
            out[name] += cpu
        return out


def first_step_progress(progress: type, started: dict[str, float],
                        first_step: dict[str, float],
                        epoch_s: dict[str, float] | None = None) -> type:
    """A subclass of the service's Progress that records, per trial id, when Tune started the
    trial (`on_trial_start`) and when its first training step began (the epoch-1 result's
    arrival minus its own `epoch_s`); with `epoch_s`, also the sum of its epochs' `epoch_s`.
    bench/scale.py uses it too."""

    class FirstStep(progress):
        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("epoch") == 1:
                first_step[trial.trial_id] = time.time() - result["epoch_s"]
            if epoch_s is not None:
                epoch_s[trial.trial_id] = epoch_s.get(trial.trial_id, 0.0) + result["epoch_s"]

    return FirstStep


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
    epoch_s: dict[str, float] = {}

    class Timed(first_step_progress(Progress, started, first_step, epoch_s)):
        def on_trial_complete(self, iteration, trials, trial, **info):
            complete[trial.trial_id] = time.time()
            super().on_trial_complete(iteration, trials, trial, **info)

    t0 = time.time()
    with CpuMeter() as cpu:
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
    n = max(len(ids), 1)
    training = sum(epoch_s.values())
    print(f"CPU s per trial (2-core machine, all processes): {cpu.total / n:.1f} in all, "
          f"{training / n:.1f} of it in the trials' epochs, {(cpu.total - training) / n:.1f} "
          "outside them; by Ray process:")
    print("  " + ", ".join(f"{name} {c / n:.2f}" for name, c in cpu.by_class().most_common()))
    statuses = sorted({t.status for t in summary.trials}) if summary else ["interrupted"]
    print(f"trials {len(ids)} ({', '.join(statuses)}), sweep wall {wall:.1f}s")
    if len(starts) > 1:
        q = statistics.quantiles(starts, n=20)
        print(f"trial start p50 {statistics.median(starts):.2f}s p95 {q[18]:.2f}s")
    print(f"trial_start_s={statistics.median(starts):.2f} "
          f"launch_s={statistics.median(launches):.2f} ray_start_s={ray_start:.2f} "
          f"overhead_cpu_s={(cpu.total - training) / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
