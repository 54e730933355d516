"""One sweep, from a validated spec to summary.json: size it against the cluster, start or
join Ray, run the Tuner, write the summary, print the table. `service.submit` is its CLI."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from service.cli import Exit
from service.config.spec import SweepSpec
from service.results.records import FAILED, Summary
from service.tune.console import (
    print_ablation,
    print_dashboard_commands,
    print_plan,
    print_table,
)
from service.tune.plan import SweepPlan, plan_sweep
from service.tune.runtime import local_resources, start_ray


@dataclass(frozen=True)
class Request:
    """What the command line asked for, once validated."""

    spec: SweepSpec
    space: str  # the file it came from, for messages and the --resume hint
    results: str  # a directory or URI
    run_id: str
    address: str | None = None  # None: Ray starts on this machine
    resume: bool = False
    quiet: bool = False
    verbose: bool = False
    keep_ray: bool = False  # True: Ray stays up for a study that follows (the caller stops it)
    command: str = ""  # what reruns it (for --resume hints); default python -m service.submit SPACE

    def resume_hint(self) -> str:
        """The command that continues this run."""
        return f"{self.command or f'python -m service.submit {self.space}'} --resume {self.run_id}"


@dataclass(frozen=True)
class Outcome:
    """How the sweep ended: the exit code and, when it finished, where its summary is."""

    code: int
    experiment_dir: str | None = None
    summary: Summary | None = None
    ablation: dict | None = None  # ablation.json's content, for an ablation study


def dry_run(req: Request) -> int:
    """Validate the plan against this machine (or leave sizing to the cluster) and print it;
    Ray is not imported."""
    try:
        plan = plan_sweep(req.spec, req.results,
                          None if req.address else local_resources(), req.run_id)
    except ValueError as err:
        print(f"{req.space}: {err}", file=sys.stderr)
        return Exit.BAD_INPUT
    print_plan(plan, req.spec)
    print("dry run: Ray was not started")
    return Exit.OK


def run(req: Request) -> Outcome:
    """Start or join Ray, run the sweep, print the table; stop (or leave) Ray at the end."""
    # Ray is imported only here: the dry run and the checks before it stay without it.
    import ray

    from service.tune.tracking import TrackingError

    spec = req.spec
    if req.address is None:
        # Checked twice on purpose: here, before Ray starts, an impossible plan is bad input;
        # below it is sized against what Ray itself counts (cgroup limits included).
        try:
            plan_sweep(spec, req.results, local_resources(via_ray=True), req.run_id)
        except ValueError as err:
            print(f"{req.space}: {err}", file=sys.stderr)
            return Outcome(Exit.BAD_INPUT)
    start_ray(req.address, req.verbose, announce=not req.quiet)
    plan = None
    try:
        try:
            plan = plan_sweep(spec, req.results, ray.cluster_resources(), req.run_id)
        except ValueError as err:
            print(f"{req.space}: {err}", file=sys.stderr)
            return Outcome(Exit.BAD_INPUT)
        if not req.quiet:
            print_plan(plan, spec)
        summary, study = _run_planned(req, plan)
    except KeyboardInterrupt:
        summary = study = None
    except TrackingError as err:  # a tracker that cannot be used: before any trial ran
        print(f"{req.space}: {err}", file=sys.stderr)
        return Outcome(Exit.BAD_INPUT)
    except OSError as err:  # e.g. the disk filled up while the summary was written
        where = plan.experiment_dir if plan else req.results
        print(f"error: {err.filename or where}: {err.strerror or err}; the trials' results "
              f"are kept in {where}. Summarise them with: {req.resume_hint()}", file=sys.stderr)
        return Outcome(Exit.WRITE_FAILED, where)
    finally:
        # Stops the Ray we started; on a cluster it only disconnects, so that no late log line
        # from the cluster lands after the summary path (which must stay the last line).
        if not req.keep_ray:
            ray.shutdown()
    return _ending(req, plan, summary, study)


def _run_planned(req: Request, plan: SweepPlan) -> tuple[Summary | None, dict | None]:
    """Run the planned sweep or ablation study: (its Summary, the study's numbers or None);
    (None, None) when it was interrupted."""
    from service.tune.progress import Progress
    from service.tune.sweep import run_sweep

    spec = req.spec
    if spec.ablation is None:
        progress = Progress(plan.trials, plan.max_epochs, list(spec.search), quiet=req.quiet,
                            verbose=req.verbose)
        return run_sweep(spec, plan, progress, resume=req.resume), None
    from service.tune.ablation import run_ablation

    def progress_for(total: int, searched: list[str], label: str) -> Progress:
        if not req.quiet:
            print(f"{label}: {total} trials", flush=True)
        return Progress(total, plan.max_epochs, searched, quiet=req.quiet, verbose=req.verbose)

    done = run_ablation(spec, plan, progress_for, resume=req.resume)
    return done if done is not None else (None, None)


def _ending(req: Request, plan: SweepPlan, summary: Summary | None,
            study: dict | None) -> Outcome:
    """Print how the run ended (its table, or how to resume it) and its exit code."""
    if summary is None:
        print(f"interrupted; finished trials are kept. Continue with: {req.resume_hint()}",
              file=sys.stderr)
        return Outcome(Exit.INTERRUPTED, plan.experiment_dir)
    print_table(summary, best=study is None)  # an ablation compares; it does not pick
    if study is not None:
        print_ablation(study)
    if not req.quiet:  # -q: only the final table (README), then the summary's path
        print_dashboard_commands(req.spec, plan.experiment_dir)
    failed = any(t.status in FAILED for t in summary.trials)
    return Outcome(Exit.TRIALS_FAILED if failed else Exit.OK, plan.experiment_dir, summary,
                   study)
