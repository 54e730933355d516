"""`python -m service.submit [SPACE]`: validate a search space (a sweep, or an ablation study),
run it on Ray Tune, summarise.

Without --address and RAY_ADDRESS it starts Ray on this machine and stops it at the end; with
one it connects to that cluster. A bad search space exits with code 2 before Ray starts.
SPACE is a YAML file or the name of a shipped space (`lenet5`, `claims/04_lrn`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from service import cli, notify
from service.cli import Exit
from service.config.data import DataError, check_available
from service.config.schema import spec_schema
from service.config.spaces import DEFAULT_SPACE, resolve_space
from service.config.spec import SpecError, SweepSpec, load_spec, parse_spec
from service.rundir import SUMMARY
from service.training.images import check_images
from service.tune import runner
from service.tune.runtime import (
    check_writable,
    find_run,
    new_run_id,
    remote_address,
    stop_ray,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a bad flag exits 2 with one line."""
    p = cli.parser("submit", __doc__)
    p.add_argument("space", nargs="?", default=str(DEFAULT_SPACE),
                   help="search-space YAML or a shipped space's name (default: default.yaml)")
    p.add_argument("--address", help="Ray cluster to use: auto, HOST:PORT or ray://HOST:PORT "
                   "(default: RAY_ADDRESS, else start Ray on this machine)")
    p.add_argument("--results", help="results directory or URI (default: the space's storage)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan; do not start Ray")
    p.add_argument("--schema", action="store_true",
                   help="print the search space's JSON Schema (for editors) and exit")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                   help="continue an interrupted run (the latest unfinished one by default)")
    p.add_argument("--confirm", metavar="RUN_DIR",
                   help="confirm a finished sweep: an ablation study of its best configuration "
                        "against each searched knob's other values, on seeds the sweep did not "
                        "train (sequential seeds 4 to 16; results beside the sweep's, under "
                        "NAME-confirm/)")
    p.add_argument("--no-confirm", action="store_true",
                   help="run the sweep without the confirmation its confirm: block asks for "
                        "(--confirm RUN_DIR runs it later)")
    p.add_argument("--max-epochs", type=int, help="override budget.max_epochs")
    p.add_argument("--num-samples", type=int, help="override budget.num_samples")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html/report.md at the end (python -m service.report)")
    p.add_argument("--no-notify", action="store_true",
                   help="do not POST to the space's notify webhook (service.schedule's nights "
                        "notify once themselves)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every epoch and Ray's own logs")
    return p.parse_args(argv)


def with_overrides(spec: SweepSpec, args: argparse.Namespace, path: str) -> SweepSpec:
    """Apply --max-epochs/--num-samples through the same validation as the file, drop the
    `confirm:` block for --no-confirm, and make a relative data.root absolute: the workers run
    elsewhere (Ray Train moves them into the trial's directory), so a root relative to where
    submit runs would point nowhere."""
    budget = {k: v for k, v in (("max_epochs", args.max_epochs),
                                ("num_samples", args.num_samples)) if v is not None}
    if budget:
        dump = spec.model_dump(mode="json")
        dump["budget"].update(budget)
        spec = parse_spec(dump, source=path)
    if args.no_confirm and spec.confirm is not None:
        spec = spec.model_copy(update={"confirm": None})
    root = spec.data.root
    if root and "://" not in root and not os.path.isabs(os.path.expanduser(root)):
        data = spec.data.model_copy(update={"root": os.path.abspath(root)})
        spec = spec.model_copy(update={"data": data})
    return spec


def write_report(experiment_dir: str, quiet: bool) -> str | None:
    """The sweep's report (service.report); a report that fails never fails the sweep."""
    if "://" in experiment_dir:
        print(f"report: results are remote; run python -m service.report on a local copy "
              f"of {experiment_dir}", file=sys.stderr)
        return None
    # The report imports torch (the analyses): only after the sweep, never in its driver.
    from service.report.build import build_report

    try:
        path = build_report(experiment_dir)
    except Exception as err:  # noqa: BLE001 - the sweep's results stand without the report
        print(f"report: not written ({type(err).__name__}: {err}); retry with python -m "
              f"service.report {experiment_dir}", file=sys.stderr)
        return None
    if not quiet:
        print(f"report: {path}")
    return str(path)


@dataclass
class Ending:
    """What the notification tells of a run that ended (filled in as the run gets there)."""

    run_id: str | None = None
    summary: object = None  # service.results Summary, once written
    summary_path: str | None = None
    report: str | None = None
    notify: bool = True  # False: a dry run, or --no-notify
    # Reports written when this run ends, before its own: (run dir, whose Ending gets the path).
    # A sweep's report waits for its confirmation's runs, so that the driver does not hold the
    # report's torch and figures in memory while they train.
    due: list[tuple[str, Ending]] = field(default_factory=list)


def tell(spec: SweepSpec, end: Ending, code: int, detail: str | None = None) -> None:
    """POST the run's ending to the space's webhook, if it has one that listens for it."""
    if not end.notify or spec.notify is None:
        return
    if detail is None and code != Exit.OK:
        detail = notify.ENDINGS.get(code)
    msg = notify.message(notify.event_for(code), spec.name, code, end.summary,
                         _absolute(end.summary_path), run_id=end.run_id,
                         report=_absolute(end.report), detail=detail,
                         kind="ablation" if spec.ablation else "sweep")
    notify.send(spec.notify, msg)


def _absolute(path: str | None) -> str | None:
    """A local path made absolute (the receiver is not in our directory); a URI as it is."""
    return path if path is None or "://" in path else os.path.abspath(path)


def main(argv: list[str] | None = None) -> int:
    """Validate, plan, run; exit codes as in service.cli.Exit (0, 2, 3, 4, 130). A space with
    a `notify:` block is told how the run ended, after the summary and report are written."""
    args = parse_args(argv)
    if args.schema:
        print(json.dumps(spec_schema(), indent=2))
        return Exit.OK
    space = resolve_space(args.space)
    try:
        if args.confirm:
            spec, space, results = confirm_spec(args.confirm)
            args.results = args.results or results
        else:
            spec = load_spec(space)
        spec = with_overrides(spec, args, space)
    except SpecError as err:
        return cli.say_problems(err.problems)
    end = Ending(notify=not (args.dry_run or args.no_notify))
    return notify.run_and_tell(lambda: run(args, spec, space, end),
                               lambda code, detail: tell(spec, end, code, detail))


def confirm_spec(run_dir: str) -> tuple[SweepSpec, str, str]:
    """The confirmation study of the finished sweep in `run_dir` (service.config.confirm), the
    name its problems are reported under, and the results root it goes to (the sweep's); a
    SpecError naming `run_dir` when it holds no finished sweep with a best trial."""
    from service.config.base import problem
    from service.config.confirm import confirmation
    from service.results.store import ResultsError, read_summary

    try:
        summary = read_summary(run_dir)
    except ResultsError as err:
        raise SpecError([problem("--confirm", run_dir, f"no finished sweep here ({err})")]
                        ) from None
    why = None
    if summary.spec.get("ablation"):
        why = "an ablation study's run; --confirm takes a finished sweep's run directory"
    elif summary.best is None:
        why = "no trial of this sweep has a score: there is no best configuration to confirm"
    elif not set(summary.searched) & set(summary.spec.get("search") or {}):
        why = "this sweep searched no knob: there is nothing to confirm"
    if why:
        raise SpecError([problem("--confirm", run_dir, why)])
    knobs = [k for k in summary.searched if k in (summary.spec.get("search") or {})]
    doc = confirmation(summary.spec, summary.best.config, knobs)
    source = f"{run_dir}/{SUMMARY} (--confirm)"
    return parse_spec(doc, source=source), source, str(Path(run_dir).resolve().parents[1])


def check_data(spec: SweepSpec, space: str, quiet: bool) -> int | None:
    """Before Ray starts: the files `spec.data` names are here, and every image of an
    imagefolder tree within the pre-flight limits (service.training.images) decodes. Returns
    the bad-input exit code after one line per problem (at most SHOWN_PROBLEMS broken files
    named, then how many more), or None; a tree above the limits gets one line saying so."""
    try:
        check_available(spec.data)
    except DataError as err:
        return cli.say_problems([f"{space}: data: {err}"])
    if spec.data.dataset != "imagefolder" or spec.data.root is None:
        return None
    found = check_images(spec.data.root)
    if found.skipped and not quiet:
        print(found.skipped, flush=True)
    if found.problems:
        return cli.say_problems([f"{space}: data: {line}" for line in found.lines()])
    return None


def run(args: argparse.Namespace, spec: SweepSpec, space: str, end: Ending) -> int:
    """Check the data and results directory, then run (or dry-run) the validated spec; what
    the notification needs is recorded in `end` as it becomes known."""
    address = remote_address(args.address)
    # On this machine the data must be here; a cluster's workers have their own disks.
    if address is None and (code := check_data(spec, space, args.quiet)) is not None:
        return code
    results = args.results or spec.storage
    try:
        run_id = find_run(results, spec.name, args.resume) if args.resume else new_run_id()
    except FileNotFoundError as err:
        return cli.say_problems([f"error: {err}"])
    end.run_id = run_id
    confirm = spec.confirm is not None and "://" not in results
    request = runner.Request(spec=spec, space=space, results=results, run_id=run_id,
                             address=address, resume=bool(args.resume), quiet=args.quiet,
                             verbose=args.verbose, keep_ray=confirm,
                             command=(f"python -m service.submit --confirm {args.confirm}"
                                      if args.confirm else ""))
    if args.dry_run:
        return runner.dry_run(request)
    try:
        check_writable(results, spec.name)
    except OSError as err:
        return cli.say_problems([f"error: {err}"])
    try:
        return finish(args, spec, end, runner.run(request))
    finally:
        if confirm:  # the confirmation ran on the sweep's Ray: one start and one stop for both
            stop_ray()


def finish(args: argparse.Namespace, spec: SweepSpec, end: Ending,
           outcome: runner.Outcome) -> int:
    """After the run: the reports due, its summary's path and, for a sweep with `confirm:` that
    finished, its confirmation study (the sweep's report then waits for the study's runs)."""
    if outcome.summary is None:
        return outcome.code
    end.summary, end.summary_path = outcome.summary, f"{outcome.experiment_dir}/{SUMMARY}"
    end.due.append((outcome.experiment_dir, end))
    confirm = confirms(spec, outcome)
    if not confirm:
        write_reports(end.due, args)
    print(end.summary_path)
    if not confirm:
        return outcome.code
    code = confirm_after(args, outcome.experiment_dir, end.due)
    return outcome.code if code == Exit.OK else code  # the sweep's failed trials still count


def confirms(spec: SweepSpec, outcome: runner.Outcome) -> bool:
    """Whether a finished sweep runs its `confirm:` study: it needs a best trial (failed or
    diverged trials beside it do not stop it; their exit code is kept)."""
    if spec.confirm is None or outcome.code not in (Exit.OK, Exit.TRIALS_FAILED):
        return False
    if outcome.summary.best is None:
        print("confirm: not run: no trial of the sweep has a score, so there is no best "
              "configuration to confirm", file=sys.stderr)
        return False
    return True


def write_reports(due: list[tuple[str, Ending]], args: argparse.Namespace) -> None:
    """Write (and empty) the reports `due`, unless --no-report."""
    while due:
        run_dir, owner = due.pop(0)
        if not args.no_report:
            owner.report = write_report(run_dir, args.quiet)


def confirm_after(args: argparse.Namespace, run_dir: str,
                  due: list[tuple[str, Ending]]) -> int:
    """The sweep's `confirm:` study, straight after it (as `--confirm RUN_DIR` would run it);
    the reports `due` are written when it ends, however it ends."""
    end = Ending(notify=False, due=due)
    try:
        if "://" in run_dir:
            print(f"confirm: results are remote; run python -m service.submit --confirm on a "
                  f"local copy of {run_dir}", file=sys.stderr)
            return Exit.OK
        if not args.quiet:
            print(f"confirming the best configuration of {run_dir}", flush=True)
        try:
            spec, space, results = confirm_spec(run_dir)
            spec = with_overrides(spec, args, space)
        except SpecError as err:
            return cli.say_problems(err.problems)
        again = argparse.Namespace(**{**vars(args), "results": results, "resume": None,
                                      "confirm": run_dir})
        return run(again, spec, space, end)
    finally:
        write_reports(end.due, args)


if __name__ == "__main__":
    raise SystemExit(main())
