"""How the service scales with the number of trials: sweeps of N one-epoch trials through the
service's own path (submit's `start_ray`, `plan_sweep`, `sweep.run_sweep`), each N in a fresh
subprocess (its own Ray, its own peak RSS), then the report of the largest one.

The space is bench/trial_start.py's: LeNet-5 on digits at 32 px, batch 64, random searcher on
lr, no scheduler, one epoch per trial, no report during the sweep. Per N:

  wall        `run_sweep` (summary.json included), Ray's start-up apart; and wall / N
  start       Tune's `on_trial_start` -> the first training step (the epoch-1 result arriving
              at Tune minus its own `epoch_s`, as bench/trial_start.py): p50 and p95
  driver RSS  peak (getrusage ru_maxrss) and growth per trial: the driver's resident set
              (/proc/self/statm) sampled at every trial's end, a least-squares slope over the
              second half of the trials (the first half holds imports and warm-up), MB per trial
  leaks       after `run_sweep` returns and before `ray.shutdown` (waiting up to --settle
              seconds for Ray's asynchronous clean-up): placement groups not REMOVED, actors
              still ALIVE other than Ray Train's cluster-wide state actor (listed, not
              hidden), and worker processes under this Ray instance's raylet that still run
              something and are no ALIVE actor's process (idle pooled workers, `ray::IDLE`,
              are Ray's worker pool: counted and printed, not leaks)

For the largest N, `python -m service.report RUN_DIR` (what a person runs; the best trial's
analyses included, as after a sweep) is timed.

    python bench/scale.py                    # N = 16 64 256 (256 one-epoch trials: ~20 min)
    python bench/scale.py --sizes 8 32
    python bench/scale.py --quick            # N = 2 4

Ends with `per_trial_ratio=<wall per trial at the largest N / at the smallest N>
rss_mb_per_trial=<the largest N's slope> report_s=<report of the largest N> leaks=<count at
the largest N>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES, QUICK_SIZES = [16, 64, 256], [2, 4]  # quick: the fewest trials that still give a slope
TAG = "SCALE_JSON "  # the child's result line
# Created once per cluster and kept on purpose (detached, named; `get_if_exists`): Ray
# Train's state actor, and Ray Data's autoscaling coordinator that Train V2's scaling policy
# asks for resources. (namespace, name).
SINGLETONS = {("_train_state_actor", "train_v2_state_actor"),
              ("AutoscalingCoordinator", "AutoscalingCoordinator")}
# Ray's per-node agents run under the raylet too, under these titles: not workers.
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
TARGETS = {"per_trial_ratio": 1.2, "rss_mb_per_trial": 1.0, "leaks": 0, "report_s": 60.0}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """This process's resident set now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of (trials finished, RSS MB) over the second half of the trials."""
    half = points[len(points) // 2:]
    if len(half) < 2 or len({x for x, _ in half}) < 2:
        return None
    return statistics.linear_regression([x for x, _ in half], [y for _, y in half]).slope


def ray_processes() -> tuple[list[dict], list[dict]]:
    """(workers, others) under the raylet this process started: pid and command line."""
    import psutil  # Ray ships it (ray/thirdparty_files), on the path once Ray is imported

    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    workers, others = [], []
    for raylet in raylets:
        for p in raylet.children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            row = {"pid": p.pid, "cmd": cmd[:80].strip()}
            worker = (cmd.startswith("ray::") and not cmd.startswith(AGENTS)
                      or "default_worker.py" in cmd)
            (workers if worker else others).append(row)
    return workers, others


def leak_check() -> dict:
    """What this Ray still holds: placement groups, actors, worker processes."""
    from ray.util.state import list_actors, list_placement_groups

    pgs = [{"id": g.placement_group_id, "name": g.name, "state": g.state}
           for g in list_placement_groups(limit=10_000, raise_on_missing_output=False)
           if g.state != "REMOVED"]
    alive = [{"class": a.class_name, "name": a.name, "namespace": a.ray_namespace,
              "pid": a.pid}
             for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000,
                                  detail=True, raise_on_missing_output=False)]
    singletons = [a for a in alive if (a["namespace"], a["name"]) in SINGLETONS]
    actors = [a for a in alive if a not in singletons]
    workers, _ = ray_processes()
    actor_pids = {a["pid"] for a in alive}
    idle = [w for w in workers if w["cmd"].startswith("ray::IDLE")]
    busy = [w for w in workers if w not in idle and w["pid"] not in actor_pids]
    return {"placement_groups": pgs, "actors": actors, "singletons": singletons,
            "workers": busy, "idle_workers": idle, "all_workers": len(workers),
            "count": len(pgs) + len(actors) + len(busy)}


def child(trials: int, results: str, settle: float) -> int:
    """One sweep of `trials` trials in this (fresh) process; prints one TAG line of JSON."""
    import ray

    sys.path.insert(0, str(ROOT))
    from trial_start import first_step_progress, space  # bench/ is first on sys.path

    from service.config.spec import parse_spec
    from service.tune.plan import plan_sweep
    from service.tune.progress import Progress
    from service.tune.runtime import start_ray
    from service.tune.sweep import run_sweep

    spec = parse_spec(space(trials, "scale"))
    t_init = time.time()
    start_ray(None, False)
    ray_start = time.time() - t_init
    plan = plan_sweep(spec, results, ray.cluster_resources(), f"n{trials}")
    started: dict[str, float] = {}
    first_step: dict[str, float] = {}
    rss: list[tuple[int, float]] = []

    class Measured(first_step_progress(Progress, started, first_step)):
        def _finish(self, trial, what, error=False):
            super()._finish(trial, what, error)
            rss.append((self.done, rss_mb()))

    t0 = time.time()
    summary = run_sweep(spec, plan, Measured(plan.trials, 1, ["lr"], quiet=True))
    wall = time.time() - t0
    t_settle = time.time()
    leaks = leak_check()
    while leaks["count"] and time.time() - t_settle < settle:
        time.sleep(1)
        leaks = leak_check()
    settled = time.time() - t_settle
    ray.shutdown()
    starts = [first_step[i] - started[i] for i in first_step if i in started]
    statuses: dict[str, int] = {}
    for t in summary.trials if summary else []:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    out = {"trials": trials, "concurrency": plan.max_concurrent_trials, "wall_s": wall,
           "per_trial_s": wall / trials, "ray_start_s": ray_start,
           "start_p50_s": statistics.median(starts) if starts else None,
           "start_p95_s": statistics.quantiles(starts, n=20)[18] if len(starts) > 1 else None,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_mb_per_trial": slope(rss), "rss_samples": rss, "leaks": leaks,
           "settle_s": settled, "statuses": statuses or {"interrupted": trials},
           "run_dir": plan.experiment_dir}
    print(TAG + json.dumps(out), flush=True)
    return 0


def run_child(trials: int, results: str, settle: float) -> dict | None:
    """`trials` trials in a fresh interpreter; its result, or None (its stderr is shown)."""
    cmd = [sys.executable, __file__, "--child", str(trials), "--results", results,
           "--settle", str(settle)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    print(f"scale: N={trials} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
          file=sys.stderr)
    return None


def time_report(run_dir: str) -> tuple[float, int, str]:
    """`python -m service.report RUN_DIR`: (wall seconds, exit status, last output line)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "service.report", run_dir], cwd=ROOT,
                          capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return time.time() - t0, proc.returncode, lines[-1] if lines else ""


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_leaks(r: dict) -> None:
    leaks = r["leaks"]
    print(f"N={r['trials']}: after the sweep (last checked {r['settle_s']:.0f} s after it): "
          f"{len(leaks['placement_groups'])} placement group(s) not removed, "
          f"{len(leaks['actors'])} actor(s) alive, {len(leaks['workers'])} busy worker "
          f"process(es) without an actor; {len(leaks['idle_workers'])} idle pooled worker(s); "
          f"Ray's own singletons alive: "
          + (", ".join(f"{a['class']} ({a['namespace']}/{a['name']})"
                       for a in leaks["singletons"]) or "none"))
    for g in leaks["placement_groups"]:
        print(f"  placement group {g['id']} {g['name'] or ''} {g['state']}")
    for a in leaks["actors"]:
        print(f"  actor {a['class']} name={a['name'] or '-'} pid={a['pid']}")
    for w in leaks["workers"]:
        print(f"  worker pid={w['pid']} {w['cmd']}")


def verdict(name: str, value: float | None, fmt: str) -> str:
    target = TARGETS[name]
    met = value is not None and value <= target
    shown = "–" if value is None else format(value, fmt)
    return (f"  {name:18s} {shown:>8s}  target <= {target:g}  "
            f"{'met' if met else 'not met'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="trials per sweep")
    p.add_argument("--quick", action="store_true", help=f"N = {QUICK_SIZES}")
    p.add_argument("--settle", type=float, default=15.0,
                   help="seconds to wait for Ray's clean-up before counting leaks")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("scale: Ray is not installed here; this benchmark measures sweeps on Ray",
              file=sys.stderr)
        return 2
    if args.child:
        return child(args.child, args.results, args.settle)
    sizes = sorted(set(QUICK_SIZES if args.quick else args.sizes))
    if sizes[0] < 1:
        print(f"scale: --sizes {sizes[0]}: must be positive", file=sys.stderr)
        return 2
    results = tempfile.mkdtemp(prefix="scale-")
    rows = []
    try:
        for n in sizes:
            print(f"N={n}: running ...", file=sys.stderr, flush=True)
            r = run_child(n, results, args.settle)
            if r is None:
                return 1
            rows.append(r)
        report_s, rc, last = time_report(rows[-1]["run_dir"])
    finally:
        if args.keep:
            print(f"run directories kept under {results}", file=sys.stderr)
        else:
            shutil.rmtree(results, ignore_errors=True)
    print(f"{'N':>5s} {'conc':>4s} {'wall s':>8s} {'s/trial':>8s} {'start p50':>9s} "
          f"{'p95':>6s} {'peak RSS MB':>11s} {'MB/trial':>8s} {'leaks':>5s} {'idle wk':>7s} "
          f"{'ray start':>9s}  statuses")
    for r in rows:
        print(f"{r['trials']:5d} {r['concurrency']:4d} {r['wall_s']:8.1f} "
              f"{r['per_trial_s']:8.2f} {_f(r['start_p50_s']):>9s} {_f(r['start_p95_s']):>6s} "
              f"{r['peak_rss_mb']:11.0f} {_f(r['rss_mb_per_trial'], 3):>8s} "
              f"{r['leaks']['count']:5d} {len(r['leaks']['idle_workers']):7d} "
              f"{r['ray_start_s']:9.1f}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())))
    for r in rows:
        print_leaks(r)
    print(f"report of N={rows[-1]['trials']}: {report_s:.1f} s (python -m service.report, "
          f"exit {rc}): {last}")
    big, small = rows[-1], rows[0]
    ratio = big["per_trial_s"] / small["per_trial_s"]
    headline = {"per_trial_ratio": ratio, "rss_mb_per_trial": big["rss_mb_per_trial"],
                "report_s": report_s if rc == 0 else None, "leaks": big["leaks"]["count"]}
    print(f"targets (largest N = {big['trials']}, smallest N = {small['trials']}):")
    for name, fmt in (("per_trial_ratio", ".2f"), ("rss_mb_per_trial", ".3f"),
                      ("leaks", "d"), ("report_s", ".1f")):
        print(verdict(name, headline[name], fmt))
    print(f"per_trial_ratio={ratio:.2f} rss_mb_per_trial={_f(big['rss_mb_per_trial'], 3)} "
          f"report_s={_f(headline['report_s'], 1)} leaks={headline['leaks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
