"""`python -m service.submit [SPACE]`: validate a search space, run it on Ray Tune, summarise.

Without --address and RAY_ADDRESS it starts Ray on this machine and stops it at the end; with
one it connects to that cluster. A bad search space exits with code 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .spec import SpecError, SweepSpec, load_spec

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "searchspaces" / "default.yaml"
EXIT_BAD_INPUT, EXIT_TRIALS_FAILED, EXIT_WRITE_FAILED = 2, 3, 4


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a bad flag exits 2 with one line."""
    p = _Parser(prog="python -m service.submit", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", nargs="?", default=str(DEFAULT_SPACE),
                   help="search-space YAML (default: searchspaces/default.yaml)")
    p.add_argument("--address", help="Ray cluster to use: auto, HOST:PORT or ray://HOST:PORT "
                   "(default: RAY_ADDRESS, else start Ray on this machine)")
    p.add_argument("--results", help="results directory or URI (default: the space's storage)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan; do not start Ray")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                   help="continue an interrupted run (the latest unfinished one by default)")
    p.add_argument("--max-epochs", type=int, help="override budget.max_epochs")
    p.add_argument("--num-samples", type=int, help="override budget.num_samples")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html/report.md at the end (python -m service.report)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every epoch and Ray's own logs")
    return p.parse_args(argv)


def with_overrides(spec: SweepSpec, args: argparse.Namespace, path: str) -> SweepSpec:
    """Apply --max-epochs/--num-samples through the same validation as the file."""
    budget = {k: v for k, v in (("max_epochs", args.max_epochs),
                                ("num_samples", args.num_samples)) if v is not None}
    if not budget:
        return spec
    dump = spec.model_dump(mode="json")
    dump["budget"].update(budget)
    from .spec import parse_spec

    return parse_spec(dump, source=path)


def find_run(root: str, name: str, wanted: str) -> str:
    """The run id to resume: `wanted`, or the newest run without a summary.json."""
    base = Path(root).expanduser().resolve() / name
    if wanted != "latest":
        if not (base / wanted).is_dir():
            raise FileNotFoundError(f"--resume {wanted}: no run directory {base / wanted}")
        return wanted
    runs = sorted(d.name for d in base.glob("*") if d.is_dir()
                  and not (d / "summary.json").exists())
    if not runs:
        raise FileNotFoundError(f"--resume: no unfinished run of {name!r} under {base}")
    return runs[-1]


def check_writable(results: str, name: str) -> None:
    """Refuse, before Ray starts, a local results directory this process cannot write to."""
    if "://" in results:
        return  # a bucket's permissions are checked by Tune when it first writes
    base = Path(results).expanduser().resolve() / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"results: cannot write to {base}: {err.strerror or err}") from None


def local_resources(via_ray: bool = False) -> dict[str, float]:
    """This machine's CPUs and GPUs, before Ray starts. A dry run asks torch (it must not
    import Ray); a real run asks Ray's own GPU detection (pynvml, honouring
    CUDA_VISIBLE_DEVICES), so that the driver never holds torch (bench/default_sweep.py)."""
    gpus = None
    if via_ray:
        try:
            from ray._private.accelerators import get_accelerator_manager_for_resource

            manager = get_accelerator_manager_for_resource("GPU")
            gpus = manager.get_current_node_num_accelerators()
            visible = manager.get_current_process_visible_accelerator_ids()
            if visible is not None:
                gpus = min(gpus, len(visible))
        except (ImportError, AttributeError):  # a Ray without that private module
            gpus = None
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def start_ray(address: str | None, verbose: bool) -> bool:
    """Connect to `address` / RAY_ADDRESS, or start Ray here; True when we started it."""
    if not verbose:
        # Tune's boxed tables and Optuna's per-trial lines drown our own progress lines.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Pending trials cut off by Ctrl-C have no results yet; Tune warns about each.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    port = None
    if address is None and not os.environ.get("RAY_API_SERVER_ADDRESS"):
        # Train V2's placement-group cleaner finds the State API by looking for Ray on this
        # machine; with a second Ray running here it fails ("multiple active Ray instances")
        # and trials hang. Ray's processes inherit this variable and ask our dashboard.
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    if address is None:
        # Train's controller polls its workers every 2 s by default, so each epoch's result
        # reached Tune (and ASHA's decisions) ~2 s late (bench/overhead.py); 0.5 s: ~0.25 s.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        # One machine is not preempted: Train's preemption watcher (an actor per trial,
        # ~0.1 GiB each) only costs memory here (bench/default_sweep.py).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # The dashboard stays on: Train V2 frees finished trials' placement groups through its
    # State API (ray-notes #3). It binds to 127.0.0.1 unless a cluster says otherwise.
    ray.init(address=address, include_dashboard=address is None or None, dashboard_port=port,
             log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.WARNING)
    return address is None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def print_plan(plan, spec: SweepSpec, out=sys.stdout) -> None:
    """The plan in a few lines (also the header of a real run)."""
    res = ", ".join(f"{v:g} {k}" for k, v in plan.trial_resources.items())
    at_once = (f"{plan.max_concurrent_trials} at a time" if plan.max_concurrent_trials
               else "as many at a time as the cluster fits")
    cluster = (f"cluster: {plan.cluster['CPU']:g} CPU, {plan.cluster['GPU']:g} GPU"
               if plan.max_concurrent_trials else "the cluster is sized when the sweep starts")
    print(f"sweep {plan.name}: {plan.trials} trials of up to {plan.max_epochs} epochs, "
          f"{at_once}", file=out)
    print(f"  each trial: {plan.workers_per_trial} Ray Train worker(s) holding {res} "
          f"({cluster})", file=out)
    print(f"  searching {', '.join(spec.search) or 'nothing'}; searcher {plan.searcher}; "
          f"scheduler {plan.scheduler}; {plan.mode} {plan.metric}", file=out)
    print(f"  results: {plan.experiment_dir}", file=out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(summary: dict[str, Any]) -> None:
    """All trials sorted by the metric, then the best configuration."""
    keys = summary["searched"]
    head = ["trial", *keys, "status", "epochs", "best val_acc"]
    rows = [[t["trial_id"], *(_cell(t["config"].get(k, "")) for k in keys), t["status"],
             str(t["epochs"]), "-" if t["best_val_acc"] is None else f"{t['best_val_acc']:.4f}"]
            for t in summary["trials"]]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    failed = [t for t in summary["trials"] if t["error"]]
    for t in failed:
        print(f"{t['trial_id']}: {t['error']}")
    best = summary["best"]
    if best:
        knobs = " ".join(f"{k}={_cell(best['config'].get(k))}" for k in keys)
        print(f"best: {best['trial_id']}  val_acc {best['best_val_acc']:.4f}  {knobs}")
    print(f"wall time {summary['wall_s']:.0f}s")


def write_report(experiment_dir: str, quiet: bool) -> None:
    """The sweep's report (service.report); a report that fails never fails the sweep."""
    if "://" in experiment_dir:
        print(f"report: results are remote; run python -m service.report on a local copy "
              f"of {experiment_dir}", file=sys.stderr)
        return
    from .report import build_report

    try:
        path = build_report(experiment_dir)
    except Exception as err:  # noqa: BLE001 - the sweep's results stand without the report
        print(f"report: not written ({type(err).__name__}: {err}); retry with python -m "
              f"service.report {experiment_dir}", file=sys.stderr)
        return
    if not quiet:
        print(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    """Validate, plan, run; exit 0, 2 (bad input), 3 (the sweep ran but trials failed) or 4
    (results could not be written; finished trials are kept)."""
    args = parse_args(argv)
    try:
        spec = with_overrides(load_spec(args.space), args, args.space)
    except SpecError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    if spec.data.root and "://" not in spec.data.root and not os.path.isabs(
            os.path.expanduser(spec.data.root)):
        # Relative to where submit runs (as --results is): the workers run elsewhere (Ray
        # Train moves them into the trial's directory), so they get the absolute path.
        data = spec.data.model_copy(update={"root": os.path.abspath(spec.data.root)})
        spec = spec.model_copy(update={"data": data})
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # On this machine the data must be here; a cluster's workers have their own disks.
        from .dataconfig import DataError, check_available

        try:
            check_available(spec.data)
        except DataError as err:
            print(f"{args.space}: data: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    results = args.results or spec.storage
    try:
        run_id = (find_run(results, spec.name, args.resume) if args.resume
                  else time.strftime("%Y-%m-%d_%H-%M-%S"))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .sweep import plan_sweep

    if args.dry_run:
        remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
        try:
            plan = plan_sweep(spec, results, None if remote else local_resources(), run_id)
        except ValueError as err:
            print(f"{args.space}: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print_plan(plan, spec)
        print("dry run: Ray was not started")
        return 0
    try:
        check_writable(results, spec.name)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(spec, args, results, run_id)


def run(spec: SweepSpec, args: argparse.Namespace, results: str, run_id: str) -> int:
    """Start or join Ray, run the sweep, print the table; stop (or leave) Ray at the end."""
    import ray

    from .progress import Progress
    from .sweep import FAILED, plan_sweep, run_sweep

    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # Checked twice on purpose: here, before Ray starts, an impossible plan is bad input;
        # below it is sized against what Ray itself counts (cgroup limits included).
        try:  # the embedded cluster is this machine: refuse an impossible plan before Ray starts
            plan_sweep(spec, results, local_resources(via_ray=True), run_id)
        except ValueError as err:
            print(f"{args.space}: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    start_ray(args.address, args.verbose)
    try:
        try:
            plan = plan_sweep(spec, results, ray.cluster_resources(), run_id)
        except ValueError as err:
            print(f"{args.space}: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not args.quiet:
            print_plan(plan, spec)
        progress = Progress(plan.trials, plan.max_epochs, list(spec.search), quiet=args.quiet,
                            verbose=args.verbose)
        summary = run_sweep(spec, plan, progress, resume=bool(args.resume))
    except KeyboardInterrupt:
        summary = None
    except OSError as err:  # e.g. the disk filled up while the summary was written
        print(f"error: {err.filename or plan.experiment_dir}: {err.strerror or err}; the "
              f"trials' results are kept in {plan.experiment_dir}. Summarise them with: "
              f"python -m service.submit {args.space} --resume {run_id}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    finally:
        # Stops the Ray we started; on a cluster it only disconnects, so that no late log line
        # from the cluster lands after the summary path (which must stay the last line).
        ray.shutdown()
    if summary is None:
        print(f"interrupted; finished trials are kept. Continue with: python -m service.submit "
              f"{args.space} --resume {run_id}", file=sys.stderr)
        return 130
    print_table(summary)
    if not args.no_report:
        write_report(plan.experiment_dir, args.quiet)
    print(f"{plan.experiment_dir}/summary.json")
    failed = any(t["status"] in FAILED for t in summary["trials"])
    return EXIT_TRIALS_FAILED if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
