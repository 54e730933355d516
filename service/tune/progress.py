"""Console progress a person can follow: a line per trial event and a running count with ETA."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service.rundir import SEED_KEY, ledger_trials, read_ledger, write_ledger
from service.tune.summary import error_line


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt_config(config: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        if k in config:
            v = config[k]
            k = "seed" if k == SEED_KEY else k
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


class _TrialErrorLogs(logging.Filter):
    """Drops Tune's own log of each failed trial (its whole traceback, once per trial) and its
    list of the trials that did not complete: Progress prints each distinct error once, the
    table at the end names every failed trial, and Tune's error.txt keeps the traceback."""

    LOGGERS = {"ray.tune.execution.tune_controller": "Trial task failed",
               "ray.tune.tune": "Trials did not complete"}

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.prefix = self.LOGGERS[logger]

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_QUIET_TUNE = {name: _TrialErrorLogs(name) for name in _TrialErrorLogs.LOGGERS}


def trial_error(trial) -> str:
    """The trial's error in one line, from the error file Tune wrote for it (its last
    failure's traceback; summary.error_line)."""
    try:
        return error_line(Path(trial.error_file).read_text(errors="replace"))
    except (OSError, TypeError):  # no error file (TypeError: its path is None)
        return "an error (see the table at the end)"


class Progress(Callback):
    """Prints when a trial starts, stops early, completes, diverges or fails, and keeps a ledger
    of the trials that really finished.

    Tune marks the trials it cuts off on Ctrl-C as terminated, just like finished ones; the
    ledger (a JSON file beside the experiment directory, `paths.ledger_path`, so it survives
    --resume) tells them apart.
    """

    def __init__(self, total: int, max_epochs: int, searched: list[str], quiet: bool = False,
                 verbose: bool = False):
        self.total, self.max_epochs, self.searched = total, max_epochs, searched
        self.quiet, self.verbose = quiet, verbose
        self.start = time.time()
        self.done = 0
        self.running: set[str] = set()
        self.ledger: Path | None = None
        self.finished: set[str] = set()
        self.errored: set[str] = set()  # ended in error: --resume tries them again
        self.records: dict[str, dict] = {}  # finished trials' config and last metrics
        self.errors: dict[str, str] = {}  # each error line printed -> the first trial with it
        self._ledger_failed = False

    def use_ledger(self, path: Path) -> None:
        """Keep the finished-trial ledger at `path`, loading what an earlier session wrote."""
        self.ledger = path
        self.finished = read_ledger(path, errored=False)
        self.errored = read_ledger(path) - self.finished
        self.records = ledger_trials(path)
        self.done = len(self.finished)

    def setup(self, **info):
        # Tuner.restore brings back the callback pickled with the first session: start this
        # session's clock afresh and reload the ledger the earlier session left on disk.
        self.start = time.time()
        self.running = set()
        if self.ledger is not None:
            self.use_ledger(self.ledger)
        for name, logs in _QUIET_TUNE.items():
            if self.verbose:  # -v: Tune's own tracebacks too
                logging.getLogger(name).removeFilter(logs)
            else:
                logging.getLogger(name).addFilter(logs)

    def _record(self, trial, error: bool = False) -> None:
        trial_id = trial.trial_id
        if error:
            self.errored.add(trial_id)
        else:
            self.finished.add(trial_id)
            self.errored.discard(trial_id)
            # Its config and last metrics: a trial that finishes between two of Tune's saves
            # of its state is missing from it after a killed driver, and the summary takes it
            # from here (sweep.run_sweep).
            last = {k: v for k, v in (trial.last_result or {}).items()
                    if isinstance(v, (int, float, str, bool)) or v is None}
            self.records[trial_id] = {"config": dict(trial.config or {}), "metrics": last}
        if self.ledger is None:
            return
        try:
            write_ledger(self.ledger, self.finished, self.errored, self.records)
        except OSError as err:
            # A full disk must not stop the sweep: the ledger only spares a resumed sweep
            # from training again what a killed driver saw finish. Said once; retried at the
            # next trial's end.
            if not self._ledger_failed:
                print(f"warning: the finished-trial ledger {self.ledger} cannot be written "
                      f"({err.strerror or err}); the sweep goes on", file=sys.stderr,
                      flush=True)
            self._ledger_failed = True
        else:
            self._ledger_failed = False

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._say(f"trial {trial.trial_id} started   {_fmt_config(trial.config, self.searched)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.verbose:
            self._say(f"trial {trial.trial_id} epoch {result.get('epoch')} "
                      f"val_acc {result.get('val_acc', float('nan')):.4f} "
                      f"({result.get('epoch_s', 0):.1f}s)")

    def _finish(self, trial, what: str, error: bool = False) -> None:
        self.running.discard(trial.trial_id)
        if trial.trial_id not in self.finished:  # a resumed run replays trials it finished
            self.done += 1
        self._record(trial, error)
        elapsed = time.time() - self.start
        left = self.total - self.done
        eta = f" · ETA ~{_fmt_s(elapsed / self.done * left)}" if left and self.done else ""
        self._say(f"trial {trial.trial_id} {what}")
        self._say(f"  [{self.done}/{self.total} done · {len(self.running)} running · "
                  f"elapsed {_fmt_s(elapsed)}{eta}]")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        epoch, acc = r.get("epoch", 0), r.get("val_acc", float("nan"))
        if r.get("status") == "diverged":
            what = f"diverged at epoch {epoch} (non-finite loss)"
        elif epoch >= self.max_epochs:
            what = f"completed {epoch} epochs   val_acc {acc:.4f}"
        else:
            what = f"stopped early at epoch {epoch}   val_acc {acc:.4f}"
        self._finish(trial, what)

    def on_trial_error(self, iteration, trials, trial, **info):
        # Each distinct error is printed once: a broken data file fails every trial alike.
        line = trial_error(trial)
        first = self.errors.setdefault(line, trial.trial_id)
        what = f"failed: {line}" if first == trial.trial_id else (
            f"failed with the same error as trial {first}")
        self._finish(trial, what, error=True)
