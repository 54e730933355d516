"""`python -m service.schedule`: nightly sweeps of one search space against a Ray cluster.

  print    the crontab line (default) or the systemd .service + .timer units for a nightly run
  install  write the systemd units into --unit-dir, or (--crontab) add the line to your crontab
  run      what the timer executes: one night's sweep into RESULTS/<YYYY-MM-DD>, warm-started
           from the persistent Optuna study, then compared with the newest earlier night

Exit codes of `run`: those of service.submit (0, 2 bad input, 3 trials failed, 4 results not
written, 130 interrupted), and 5 when the best metric regressed beyond --tolerance.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from service import cli
from service.cli import Exit
from service.config.spaces import resolve_space
from service.config.spec import SpecError
from service.nightly.schedule import (
    check_results,
    check_space,
    crontab_line,
    install,
    run_night,
    systemd_units,
)


def _at(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise argparse.ArgumentTypeError(f"--at {value!r}: expected HH:MM, 00:00 to 23:59")
    return int(m[1]), int(m[2])


def _tolerance(value: str) -> float:
    try:
        tol = float(value)
    except ValueError:
        tol = -1.0
    if not tol >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"--tolerance {value!r}: expected a number >= 0")
    return tol


def _date(value: str) -> str:
    try:
        time.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--date {value!r}: expected YYYY-MM-DD") from None
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a bad flag or value exits 2 with one line."""
    p = cli.parser("schedule", __doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    helps = {"print": "print the crontab line or systemd units", "install": "install them",
             "run": "run one night's sweep and compare it with the previous night"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text)
        s.add_argument("--space", required=True, help="search-space YAML (searcher optuna-tpe)")
        s.add_argument("--address", required=name != "run",
                       help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (run: default "
                            "RAY_ADDRESS, else Ray on this machine)")
        s.add_argument("--results", required=name == "run", default="results/nightly",
                       help="a local (or mounted) directory; each night writes RESULTS/DATE")
        s.add_argument("--tolerance", type=_tolerance, default=0.01,
                       help="allowed drop of the best metric from the previous night "
                            "(absolute, in the metric's units; default 0.01)")
        s.add_argument("--no-report", action="store_true", help="passed on to service.submit")
        if name == "run":
            s.add_argument("--date", type=_date, default=None,
                           help="the night's directory name (default: today, YYYY-MM-DD)")
        else:
            s.add_argument("--at", type=_at, default=(2, 0), help="time of day, HH:MM (02:00)")
            s.add_argument("--systemd", action="store_true",
                           help="systemd .service + .timer instead of a crontab line")
        if name == "install":
            s.add_argument("--unit-dir", default="~/.config/systemd/user",
                           help="where the systemd units go (default ~/.config/systemd/user)")
            s.add_argument("--crontab", action="store_true",
                           help="add the line to your crontab (crontab -l | … | crontab -)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Dispatch print / install / run; bad input exits 2 with one line per problem."""
    args = parse_args(argv)
    args.space = resolve_space(args.space)
    try:
        spec = check_space(args.space)
        results = check_results(args.results)
    except SpecError as err:
        return cli.say_problems(err.problems)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return Exit.BAD_INPUT
    if args.command == "print":
        if args.systemd:
            for fname, text in systemd_units(args, spec.name).items():
                print(f"# {fname}\n{text}")
        else:
            print(crontab_line(args, spec.name))
        return Exit.OK
    if args.command == "install":
        return install(args, spec.name)
    try:
        return run_night(args, spec, results)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return Exit.BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
