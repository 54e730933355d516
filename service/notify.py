"""The `notify:` webhook: one Slack-compatible JSON message POSTed when a sweep, an ablation
study or a nightly run ends (docs/notifications.md).

Standard library only (urllib), a short timeout, and it never raises: a webhook that cannot be
reached, times out or answers an HTTP error is one line on stderr and the caller's exit code
stands. The webhook's path is its secret (Slack's hooks.slack.com/services/T…/B…/…): no log
line names more than its scheme and host.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.cli import Exit
from service.redact import redact_webhook

TIMEOUT_S = 5.0  # connect + answer; a slow webhook never holds the sweep's exit for long
USER_AGENT = "cnn-ablate-notify/1"

# What each exit code means, for the message's text (service.cli.Exit).
ENDINGS = {
    Exit.OK: "finished",
    1: "ended with an error",
    Exit.BAD_INPUT: "did not start (bad input)",
    Exit.TRIALS_FAILED: "finished, but some trials diverged or failed",
    Exit.WRITE_FAILED: "could not write summary.json (the trials' results are kept)",
    Exit.REGRESSION: "regressed",
    Exit.INTERRUPTED: "was interrupted",
}


def event_for(code: int) -> str:
    """finished for exit 0, failed for any other ending (regression is the nightly's own)."""
    return "finished" if code == Exit.OK else "failed"


@dataclass
class Message:
    """What the webhook is told; `payload()` is the JSON that is POSTed."""

    event: str  # finished | failed | regression
    sweep: str  # the spec's name
    exit_code: int
    kind: str = "sweep"  # sweep | ablation | nightly
    run_id: str | None = None
    metric: str | None = None
    best_trial: str | None = None
    best_value: float | None = None
    report: str | None = None  # report.html's path, when written
    summary: str | None = None  # summary.json's path, when written
    detail: str | None = None  # one line: the error, or the regression
    extra: dict[str, Any] = field(default_factory=dict)  # nightly: date, previous_*

    def text(self) -> str:
        """The Slack message: one line that says how it ended, then where to look."""
        ending = ENDINGS.get(self.exit_code, f"ended with exit code {self.exit_code}")
        label = {"ablation": "ablation study", "nightly": "nightly sweep"}.get(self.kind,
                                                                              self.kind)
        head = f"cnn-ablate {label} {self.sweep}"
        if self.extra.get("date"):
            head += f" ({self.extra['date']})"
        lines = [f"{head} {ending} (exit {self.exit_code})"]
        if self.run_id:
            lines[0] += f", run {self.run_id}"
        if self.best_trial:
            lines.append(f"best: trial {self.best_trial} {self.metric} {_fmt(self.best_value)}")
        if self.extra.get("previous_date"):
            lines.append(f"previous night {self.extra['previous_date']}: {self.metric} "
                         f"{_fmt(self.extra.get('previous_value'))}")
        if self.detail:
            lines.append(self.detail)
        if self.report:
            lines.append(f"report: {self.report}")
        if self.summary:
            lines.append(f"summary: {self.summary}")
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """`text` for Slack, and the same facts as plain fields for any other receiver."""
        return {"text": self.text(), "event": self.event, "kind": self.kind,
                "sweep": self.sweep, "run_id": self.run_id, "exit_code": int(self.exit_code),
                "metric": self.metric, "best_trial": self.best_trial,
                "best_value": _finite(self.best_value), "report": self.report,
                "summary": self.summary, "detail": self.detail,
                **{k: _finite(v) for k, v in self.extra.items()}}


def message(event: str, sweep: str, code: int, summary=None, summary_path: str | Path | None
            = None, **fields: Any) -> Message:
    """A Message whose best trial, its value and the metric come from `summary` (a
    service.results Summary, or None when none was written)."""
    best = summary.best if summary is not None else None
    return Message(event=event, sweep=sweep, exit_code=int(code),
                   metric=summary.metric if summary is not None else None,
                   best_trial=best.trial_id if best is not None else None,
                   best_value=summary.score(best) if best is not None else None,
                   summary=str(summary_path) if summary_path else None, **fields)


def run_and_tell(run: Callable[[], int], tell: Callable[[int, str | None], None],
                 codes: dict[type[Exception], int] | None = None) -> int:
    """`run()`'s exit code, with `tell(code, detail)` called however the run ends: Ctrl-C as
    130, an exception as its code in `codes` (else 1) with its message, both raised again."""
    try:
        code = run()
    except KeyboardInterrupt:
        tell(Exit.INTERRUPTED, None)
        raise
    except Exception as err:
        code = next((c for kind, c in (codes or {}).items() if isinstance(err, kind)), 1)
        tell(code, f"{type(err).__name__}: {err}")
        raise
    tell(code, None)
    return code


def send(notify, msg: Message, timeout: float = TIMEOUT_S) -> bool:
    """POST `msg` to `notify.webhook` if `notify.on` lists its event (a spec's Notify block,
    or None: nothing to do). True when the webhook answered 2xx; never raises."""
    if notify is None or msg.event not in notify.on:
        return False
    url = notify.webhook
    try:
        body = json.dumps(msg.payload(), allow_nan=False).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
        return True
    except urllib.error.HTTPError as err:  # before URLError: it is one
        reason = f"HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        reason = str(err.reason)
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except Exception as err:  # noqa: BLE001 - a notification never fails the sweep
        reason = f"{type(err).__name__}: {err}"
    if reason in ("timed out", "The read operation timed out"):
        reason = f"no answer within {timeout:g} s"
    print(f"notify: {redact_webhook(url)} unreachable: {_scrub(reason, url)}; the sweep's "
          f"results are kept", file=sys.stderr, flush=True)
    return False


def _scrub(reason: str, url: str) -> str:
    """`reason` on one line, without the webhook's URL or path in it."""
    reason = reason.replace(url, redact_webhook(url))
    path = urlsplit(url).path
    if len(path) > 1:
        reason = reason.replace(path, "/***")
    return " ".join(reason.split())[:300]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
