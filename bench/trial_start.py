"""Where a trial's start-up goes, on each engine: a sweep of one-epoch trials through the
service's own path (submit's `start_ray`, then `sweep.run_sweep`), and Ray's record of every
actor it created.

Each engine (`resources.engine`) is one sweep of the same space, run on the same Ray instance
one after the other (tune first, then train); each prints its own block.

- tune: Tune asks for its trial actor (the function trainable, holding the trial's CPU) -> that
  actor runs -> Tune's `on_trial_start` -> `run_trial` runs `fit` in that actor -> the first
  training step. Tune reuses a finished trial's actor for the next trial.
- train: Tune asks for its trial actor (a driver holding no CPU) -> that actor runs -> Tune's
  `on_trial_start` -> `run_trial` builds the Ray Train run -> Train's controller and its helper
  actors -> the Train worker actor -> the training function starts (`run_train_fn`) -> the
  first training step.

The first training step is the first epoch's result arriving at Tune, minus its own `epoch_s`.
Actor times come from Ray's State API (each actor creation task's PENDING_NODE_ASSIGNMENT,
RUNNING and FINISHED events: waiting for a worker process, then the actor's `__init__`); only
actors requested after the sweep's own `Tuner.fit` call count as its own. The rest come from
callbacks in this driver. Times are seconds from that sweep's `Tuner.fit` being called.

A trial got a new actor or ran on a reused one: told apart by the `pid` Tune adds to every
result (the trial actor's process, on both engines; the train engine's results come through
that actor too). A trial is on a new actor when it is the first trial of its pid. The split is
printed, and its p50s are in the final line, only where the number of pids equals the number
of trial actors (`ImplicitFunc`) Ray created in that sweep; otherwise the block says so.

    python bench/trial_start.py                          # one trial per engine: the profile
    python bench/trial_start.py --trials 4               # four, two at a time: p50/p95 too
    python bench/trial_start.py --trials 4 --engine tune # one engine only

It also counts the CPU each sweep costs (the machine's, all cores: Ray's own processes, the
driver, everything), split into the trials' epochs (their `epoch_s`, one thread each) and the
rest, and the CPU of each Ray worker process by actor class: on a machine whose cores are all
busy, start-up CPU is what a sweep's wall pays for.

The second sweep finds Ray already warm (its daemons up, idle worker processes, the file cache
holding torch): for each engine cold, run `--engine tune` and `--engine train` apart.

Each block ends with `engine=<tune|train> trial_start_s=<median: on_trial_start -> first step>
launch_s=<median: trial actor requested -> first step, trials that got a new actor>
ray_start_s=<ray.init, shared by both sweeps> overhead_cpu_s=<CPU s per trial outside its
epochs>`, and, where the split above holds and both kinds of trial ran,
`new_actor_start_s=<median> reused_actor_start_s=<median>` (on_trial_start -> first step).
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
ENGINES = ("tune", "train")
NAN = float("nan")


def space(trials: int, name: str = "trial_start", engine: str | None = None) -> dict:
    """LeNet-5 on digits at 32 px, one epoch per trial, no scheduler, random searcher (also
    bench/scale.py's space); with `engine`, the trials run on that engine."""
    out = {"name": name, "data": {"dataset": "digits", "image_size": 32},
           "model": {"family": "lenet5"}, "train": {"batch_size": 64},
           "search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
           "budget": {"max_epochs": 1, "num_samples": trials},
           "scheduler": {"type": "none"}, "searcher": {"type": "random", "seed": 0}}
    if engine is not None:
        out["resources"] = {"engine": engine}
    return out


def actor_rows(t0: float) -> list[tuple[float, str, dict[str, float]]]:
    """Every actor creation Ray recorded since `t0` (and each `run_train_fn`): (requested,
    name, {state: seconds from t0}). Rows requested before `t0` (an earlier sweep's) are left
    out."""
    from ray.util.state import list_tasks

    rows = []
    for task in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False):
        if task.type != "ACTOR_CREATION_TASK" and not task.name.endswith("run_train_fn"):
            continue
        events = {e["state"]: e["created_ms"] / 1000 - t0 for e in task.events or []}
        if events.get("PENDING_NODE_ASSIGNMENT", -1.0) >= 0:
            rows.append((events["PENDING_NODE_ASSIGNMENT"], task.name, events))
    return sorted(rows, key=lambda row: row[:2])


class CpuMeter:
    """CPU seconds while the sweep runs: the machine's (from /proc/stat, all cores, every
    process), and each Ray worker process's (`ray::<actor class>`, sampled from
    /proc/<pid>/stat every 0.2 s, so a process that ends between samples loses < 0.2 s; a
    process already there when the meter starts counts only what it spends after)."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.procs: dict[tuple[str, str], tuple[str, float]] = {}
        self.before: dict[tuple[str, str], float] = {}
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
        self._sample()
        self.before = {key: cpu for key, (_, cpu) in self.procs.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.total = self.machine() - self.start

    def by_class(self) -> collections.Counter:
        out: collections.Counter = collections.Counter()
        for key, (name, cpu) in self.procs.items():
            out[name] += cpu - self.before.get(key, 0.0)
        return out


def first_step_progress(progress: type, started: dict[str, float],
                        first_step: dict[str, float],
                        epoch_s: dict[str, float] | None = None,
                        pids: dict[str, int] | None = None) -> type:
    """A subclass of the service's Progress that records, per trial id, when Tune started the
    trial (`on_trial_start`) and when its first training step began (the epoch-1 result's
    arrival minus its own `epoch_s`); with `epoch_s`, also the sum of its epochs' `epoch_s`;
    with `pids`, the pid of the trial's actor (Tune adds it to every result).
    bench/scale.py uses it too."""

    class FirstStep(progress):
        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("epoch") == 1:
                first_step[trial.trial_id] = time.time() - result["epoch_s"]
            if epoch_s is not None:
                epoch_s[trial.trial_id] = epoch_s.get(trial.trial_id, 0.0) + result["epoch_s"]
            if pids is not None and "pid" in result:
                pids.setdefault(trial.trial_id, result["pid"])

    return FirstStep


def measure(spec, results: str, run: str) -> dict:
    """One sweep of `spec` on the running Ray: per trial, when Tune started it, its first step,
    its end, its epochs' seconds and its actor's pid; Ray's actor rows since the sweep began;
    the CPU it cost."""
    import ray

    from service.tune.plan import plan_sweep
    from service.tune.progress import Progress
    from service.tune.sweep import run_sweep

    plan = plan_sweep(spec, results, ray.cluster_resources(), run)
    out: dict = {"started": {}, "first_step": {}, "complete": {}, "epoch_s": {}, "pids": {}}
    complete = out["complete"]

    class Timed(first_step_progress(Progress, out["started"], out["first_step"],
                                    out["epoch_s"], out["pids"])):
        def on_trial_complete(self, iteration, trials, trial, **info):
            complete[trial.trial_id] = time.time()
            super().on_trial_complete(iteration, trials, trial, **info)

    t0 = time.time()
    with CpuMeter() as cpu:
        summary = run_sweep(spec, plan, Timed(plan.trials, 1, ["lr"], quiet=True))
    out.update(t0=t0, wall=time.time() - t0, rows=actor_rows(t0), cpu=cpu, summary=summary)
    return out


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else NAN


def new_actor_trials(pids: dict[str, int], started: dict[str, float]) -> set[str]:
    """The trials that were the first on their actor (its pid): those that got a new actor."""
    first: dict[int, str] = {}
    for trial in sorted(pids, key=lambda i: started.get(i, 0.0)):
        first.setdefault(pids[trial], trial)
    return set(first.values())


def print_trials(s: dict, actors: int) -> tuple[list[float], dict[str, float]]:
    """The per-trial lines and the split by actor; the trials' starts (on_trial_start -> first
    step) and the headline's launch and split keys."""
    t0, first_step, started, pids = s["t0"], s["first_step"], s["started"], s["pids"]
    ids = sorted(first_step, key=first_step.get)
    new = new_actor_trials(pids, started)
    for i in ids:
        actor = "new actor" if i in new else "reused actor" if i in pids else "actor ?"
        print(f"trial {i}: on_trial_start {started.get(i, t0) - t0:6.2f}  first step "
              f"{first_step[i] - t0:6.2f}  complete {s['complete'].get(i, t0) - t0:6.2f}  "
              f"pid {pids.get(i, '?')} ({actor})")
    starts = [first_step[i] - started[i] for i in ids if i in started]
    requested = sorted(asked for asked, name, _ in s["rows"] if name == "ImplicitFunc.__init__")
    # Trials that got a new actor, in the order of their first steps, against the order the
    # trial actors were asked for.
    launched = [i for i in ids if i in new] if new else ids
    keys = {"launch_s": statistics.median(
        [first_step[i] - t0 - r for i, r in zip(launched, requested, strict=False)] or [NAN])}
    fresh = [first_step[i] - started[i] for i in ids if i in new and i in started]
    reused = [first_step[i] - started[i] for i in ids if i in pids and i not in new
              and i in started]
    pid_count = len(set(pids.values()))
    if pid_count != actors or len(pids) != len(ids):
        print(f"trial start by actor: not told apart ({pid_count} pids in {len(pids)} of "
              f"{len(ids)} trials' results, {actors} trial actors created)")
        return starts, keys
    print(f"trial start by actor ({actors} trial actors): new actor p50 "
          f"{median_or_nan(fresh):.2f}s (n={len(fresh)}), reused actor p50 "
          f"{median_or_nan(reused):.2f}s (n={len(reused)})")
    if fresh and reused:
        keys.update(new_actor_start_s=statistics.median(fresh),
                    reused_actor_start_s=statistics.median(reused))
    return starts, keys


def print_block(engine: str, s: dict, ray_start: float) -> None:
    """One engine's block: its first trial's actors, its trials, the actors it created, its
    CPU per trial, and its key=value line."""
    print(f"== engine {engine}: {len(s['first_step'])} trials ==")
    print(f"{'actor (first trial)':58s} {'asked':>6s} {'runs':>6s} {'ready':>6s}")
    seen = 0
    for asked, name, ev in s["rows"]:
        seen += name == "ImplicitFunc.__init__"
        if seen <= 1:  # the first trial's chain; later ones repeat it
            print(f"{name:58s} {asked:6.2f} {ev.get('RUNNING', NAN):6.2f} "
                  f"{ev.get('FINISHED', NAN):6.2f}")
    made = collections.Counter(name.split(".")[0] for _, name, _ in s["rows"]
                               if name.endswith("__init__"))
    starts, keys = print_trials(s, made["ImplicitFunc"])
    print("actors created:", ", ".join(f"{n} x{c}" for n, c in sorted(made.items())))
    cpu = s["cpu"]
    n = max(len(s["first_step"]), 1)
    training = sum(s["epoch_s"].values())
    print(f"CPU s per trial ({os.cpu_count()}-core machine, all processes): "
          f"{cpu.total / n:.1f} in all, {training / n:.1f} of it in the trials' epochs, "
          f"{(cpu.total - training) / n:.1f} outside them; by Ray process:")
    print("  " + ", ".join(f"{name} {c / n:.2f}" for name, c in cpu.by_class().most_common()))
    summary = s["summary"]
    statuses = sorted({t.status for t in summary.trials}) if summary else ["interrupted"]
    print(f"trials {len(s['first_step'])} ({', '.join(statuses)}), sweep wall {s['wall']:.1f}s")
    if len(starts) > 1:
        q = statistics.quantiles(starts, n=20)
        print(f"trial start p50 {statistics.median(starts):.2f}s p95 {q[18]:.2f}s")
    line = {"trial_start_s": median_or_nan(starts), "launch_s": keys.pop("launch_s"),
            "ray_start_s": ray_start, "overhead_cpu_s": (cpu.total - training) / n, **keys}
    print(f"engine={engine} " + " ".join(f"{k}={v:.2f}" for k, v in line.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--engine", choices=(*ENGINES, "both"), default="both",
                   help="the engine whose trials to measure (default both, tune first)")
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("trial_start: Ray is not installed here; this benchmark measures Ray's trial "
              "start-up", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from service.config.spec import parse_spec
    from service.tune.runtime import start_ray

    engines = ENGINES if args.engine == "both" else (args.engine,)
    t_init = time.time()
    start_ray(None, False)
    ray_start = time.time() - t_init
    results = tempfile.mkdtemp(prefix="trial_start-")
    try:
        for engine in engines:
            sweep = measure(parse_spec(space(args.trials, engine=engine)), results, engine)
            print_block(engine, sweep, ray_start)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
