"""Nightly sweeps: timer units (crontab line or systemd units) and one night's run, compared
with the newest earlier night. The CLI is `python -m service.schedule`."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from service import notify
from service.cli import Exit
from service.config.spec import SpecError, SweepSpec, load_spec
from service.results.records import Summary
from service.results.store import ResultsError, read_summary
from service.rundir import SUMMARY

STUDY_DB = "optuna-study.db"  # the default persistent study, kept beside the nights' results
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MARK = "# cnn-ablate-nightly:"  # tags our crontab line so that install replaces, not duplicates


def check_space(path: str) -> SweepSpec:
    """The space, validated, and fit for nightly runs (an Optuna searcher); else SpecError."""
    spec = load_spec(path)
    if not spec.searcher.optuna:
        raise SpecError([f"{path}: searcher.type: nightly sweeps warm-start an Optuna study; "
                         f"use optuna-tpe or optuna-nsga2 (got {spec.searcher.type})"])
    return spec


def check_results(results: str) -> Path:
    """The results directory as an absolute local path; URIs are refused (ValueError)."""
    if "://" in results:
        raise ValueError(f"--results {results}: nightly results must be a local or mounted "
                         f"directory (the nights are compared from their summary.json files)")
    return Path(results).expanduser().resolve()


def run_command(args: argparse.Namespace) -> list[str]:
    """The `run` command line that a timer executes (absolute paths, this interpreter)."""
    cmd = [sys.executable, "-m", "service.schedule", "run",
           "--space", str(Path(args.space).expanduser().resolve()),
           "--results", str(check_results(args.results)), "--tolerance", f"{args.tolerance:g}"]
    if args.address:
        cmd += ["--address", args.address]
    if args.no_report:
        cmd.append("--no-report")
    return cmd


def crontab_line(args: argparse.Namespace, name: str) -> str:
    """One crontab line: cd to where it was made, token auth on, append to RESULTS/nightly.log."""
    hour, minute = args.at
    log = check_results(args.results) / "nightly.log"
    # No % anywhere: cron would turn it into a newline.
    return (f"{minute} {hour} * * * cd {shlex.quote(str(Path.cwd()))} && RAY_AUTH_MODE=token "
            f"{shlex.join(run_command(args))} >> {shlex.quote(str(log))} 2>&1 {MARK}{name}")


def systemd_units(args: argparse.Namespace, name: str) -> dict[str, str]:
    """{file name: text} of the .service and .timer that run the sweep every night."""
    hour, minute = args.at
    unit = f"cnn-ablate-nightly-{name}"
    service = (f"[Unit]\nDescription=cnn-ablate nightly sweep {name}\n\n[Service]\n"
               f"Type=oneshot\nWorkingDirectory={Path.cwd()}\nEnvironment=RAY_AUTH_MODE=token\n"
               f"ExecStart={shlex.join(run_command(args))}\n")
    timer = (f"[Unit]\nDescription=cnn-ablate nightly sweep {name} at {hour:02d}:{minute:02d}"
             f"\n\n[Timer]\nOnCalendar=*-*-* {hour:02d}:{minute:02d}:00\n"
             # Persistent: a night missed while the machine was off runs at the next boot.
             f"Persistent=true\nUnit={unit}.service\n\n[Install]\nWantedBy=timers.target\n")
    return {f"{unit}.service": service, f"{unit}.timer": timer}


def merge_crontab(existing: str, line: str, name: str) -> str:
    """`existing` with our line for `name` replaced (or appended); other lines untouched."""
    kept = [x for x in existing.splitlines() if not x.rstrip().endswith(f"{MARK}{name}")]
    return "\n".join([*kept, line]) + "\n"


def install(args: argparse.Namespace, name: str) -> int:
    """Write the systemd units, or add the crontab line through `crontab -` (only if asked)."""
    if args.crontab:
        try:  # no crontab -l output (exit 1) is an empty crontab
            old = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
            merged = merge_crontab(old.stdout if old.returncode == 0 else "",
                                   crontab_line(args, name), name)
            subprocess.run(["crontab", "-"], input=merged, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"error: crontab: {err}; use --systemd, or add the line from `print` by hand",
                  file=sys.stderr)
            return Exit.BAD_INPUT
        print(f"crontab: nightly sweep {name} at {args.at[0]:02d}:{args.at[1]:02d}")
        return Exit.OK
    unit_dir = Path(args.unit_dir).expanduser()
    unit_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in systemd_units(args, name).items():
        (unit_dir / fname).write_text(text)
        print(unit_dir / fname)
    print(f"enable with: systemctl --user daemon-reload && systemctl --user enable --now "
          f"cnn-ablate-nightly-{name}.timer")
    return Exit.OK


# ---- run: one night ----

@dataclass
class Night:
    """The best result of one night's sweep, as read from its summary.json."""

    date: str
    summary: Path
    value: float | None  # None: no trial finished
    metric: str
    mode: str
    best: str | None = None  # the best trial's id


def best_value(summary: Summary) -> float | None:
    """The best trial's score (the value the sweep ranked it by); None when no trial has one."""
    return summary.score(summary.best) if summary.best else None


def read_night(date: str, path: Path) -> Night:
    """A Night from a summary.json file; ResultsError if it is missing or not a summary."""
    summary = read_summary(path.parent)
    return Night(date, path, best_value(summary), summary.metric, summary.mode,
                 summary.best.trial_id if summary.best else None)


def previous_night(results: Path, name: str, before: str) -> Night | None:
    """The newest night earlier than `before` that left a summary of sweep `name`."""
    for night in sorted((d for d in results.iterdir() if d.is_dir() and DATE_RE.match(d.name)
                         and d.name < before), reverse=True):
        summaries = sorted((night / name).glob(f"*/{SUMMARY}"))
        if summaries:
            return read_night(night.name, summaries[-1])
    return None


def regression(now: Night, before: Night, tolerance: float) -> str | None:
    """One line describing a regression beyond `tolerance`, or None."""
    if now.value is None or before.value is None:
        return None if before.value is None else (
            f"regression: no trial finished on {now.date}; {before.date} reached "
            f"{now.metric} {before.value:.4f}")
    drop = before.value - now.value if now.mode == "max" else now.value - before.value
    if drop <= tolerance:
        return None
    return (f"regression: best {now.metric} {now.value:.4f} on {now.date} vs {before.value:.4f} "
            f"on {before.date} ({'-' if now.mode == 'max' else '+'}{drop:.4f}, tolerance "
            f"{tolerance:g}); see {now.summary}")


def nightly_space(spec: SweepSpec, space: str, results: Path, night_dir: Path) -> str:
    """The space file to run: the user's own if it names a study storage, else a copy that
    keeps the study in SQLite under RESULTS (so every night continues the same study)."""
    if spec.searcher.storage:
        return space
    dump = yaml.safe_load(Path(space).read_text())
    dump.setdefault("searcher", {})["storage"] = f"sqlite:///{results / STUDY_DB}"
    out = night_dir / f"{spec.name}.nightly.yaml"
    out.write_text(yaml.safe_dump(dump, sort_keys=False))
    return str(out)


def summary_path(stdout: str) -> Path | None:
    """The summary.json that service.submit printed: its last line, unless Ray's own warnings
    (which reach a cluster driver's stdout even with -q) came after it."""
    lines = [x.strip() for x in stdout.splitlines() if x.strip().endswith(SUMMARY)]
    return Path(lines[-1]) if lines else None


@dataclass
class NightEnd:
    """What the notification tells of a night, filled in as the night gets there."""

    date: str
    now: Night | None = None
    before: Night | None = None
    detail: str | None = None  # one line: the regression, or why nothing was compared


def run_night(args: argparse.Namespace, spec: SweepSpec, results: Path) -> int:
    """Run tonight's sweep through service.submit, then compare with the previous night; a
    space with a `notify:` block is told how the night ended (finished, failed, regression)."""
    end = NightEnd(args.date or time.strftime("%Y-%m-%d"))
    return notify.run_and_tell(lambda: _night(args, spec, results, end),
                               lambda code, detail: tell_night(spec, end, code, detail),
                               {OSError: Exit.BAD_INPUT})  # service.schedule's main: bad input


def tell_night(spec: SweepSpec, end: NightEnd, code: int, detail: str | None = None) -> None:
    """POST the night's ending to the space's webhook, if it has one that listens for it."""
    if spec.notify is None:
        return
    now, before = end.now, end.before
    extra = {"date": end.date}
    if before is not None:
        extra.update(previous_date=before.date, previous_value=before.value)
    report = now.summary.parent / "report.html" if now is not None else None
    msg = notify.Message(
        event="regression" if code == Exit.REGRESSION else notify.event_for(code),
        sweep=spec.name, exit_code=code, kind="nightly",
        run_id=now.summary.parent.name if now else None, metric=now.metric if now else None,
        best_trial=now.best if now else None, best_value=now.value if now else None,
        report=str(report) if report is not None and report.is_file() else None,
        summary=str(now.summary) if now else None,
        detail=detail or end.detail or (notify.ENDINGS.get(code) if code else None),
        extra=extra)
    notify.send(spec.notify, msg)


def _night(args: argparse.Namespace, spec: SweepSpec, results: Path, end: NightEnd) -> int:
    """One night: the sweep (service.submit, which leaves the notification to us), then the
    comparison; `end` records what the notification needs."""
    date = end.date
    night_dir = results / date
    night_dir.mkdir(parents=True, exist_ok=True)
    try:
        before = end.before = previous_night(results, spec.name, date)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        end.detail = f"error: {err}"
        return Exit.BAD_INPUT
    space = nightly_space(spec, args.space, results, night_dir)
    # --no-notify: one message a night, sent from here once the nights are compared
    cmd = [sys.executable, "-m", "service.submit", space, "--results", str(night_dir), "-q",
           "--no-notify"]
    if args.address:
        cmd += ["--address", args.address]
    if args.no_report:
        cmd.append("--no-report")
    print(f"night {date}: {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    summary = summary_path(proc.stdout)
    if proc.returncode not in (0, 3) or summary is None:
        print(f"night {date}: service.submit exited {proc.returncode}; nothing to compare",
              file=sys.stderr)
        end.detail = f"service.submit exited {proc.returncode}; nothing to compare"
        return proc.returncode or 1
    try:
        now = end.now = read_night(date, summary)
    except ResultsError as err:
        print(f"night {date}: {err}", file=sys.stderr)
        end.detail = str(err)
        return Exit.WRITE_FAILED
    if before is None:
        print(f"night {date}: best {now.metric} {_fmt(now.value)}; first night, nothing to "
              f"compare")
        return proc.returncode
    problem = regression(now, before, args.tolerance)
    if problem:
        print(problem, file=sys.stderr)
        end.detail = problem
        return Exit.REGRESSION
    print(f"night {date}: best {now.metric} {_fmt(now.value)} (previous {before.date}: "
          f"{_fmt(before.value)}, tolerance {args.tolerance:g})")
    return proc.returncode


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
