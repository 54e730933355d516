"""summary.json from Tune's results: one `TrialRecord` per trial, ranked into a `Summary`."""

from __future__ import annotations

import re
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from service.redact import redact_url, redact_webhook
from service.results.pareto import pareto_of
from service.results.records import Summary, TrialRecord
from service.rundir import ARM_KEY, trial_dir, trial_history, trial_id_of
from service.tune.plan import SweepPlan


def trial_status(metrics: dict[str, Any], error: Exception | None, max_epochs: int) -> str:
    """completed | stopped-early | diverged | error, from a trial's last result."""
    if error is not None:
        return "error"
    if metrics.get("status") == "diverged":
        return "diverged"
    return "completed" if metrics.get("epoch", 0) >= max_epochs else "stopped-early"


def trial_record(result, max_epochs: int, arms: dict[str, dict] | None = None) -> TrialRecord:
    """A trial's record from its Tune Result: every epoch's row of its metrics_dataframe, then
    its last reported metrics. An ablation's run (config {arm, seed}) also records its arm's
    settings, so that readers see what it trained."""
    m = result.metrics or {}
    config = dict(result.config or {})
    if arms and config.get(ARM_KEY) in arms:
        config = {**arms[config[ARM_KEY]], **config}
    df = result.metrics_dataframe
    rows = df.to_dict("records") if df is not None else []
    trial_id = m.get("trial_id") or trial_id_of(result.path)
    # Epochs Tune's records miss (a trial Tune restarted after its actor died can lose the
    # result.json rows from before), from its registered checkpoints: extremes over them all.
    have = {r.get("epoch") for r in rows}
    rows = [*(h for h in trial_history(Path(result.path).parent, trial_id, result.path)
              if h.get("epoch") not in have), *rows]
    if m:  # also when Tune's dataframe lags behind its last result
        rows.append(m)
    return TrialRecord.from_history(
        trial_id, config,
        trial_status(m, result.error, max_epochs), rows,
        error_line(str(result.error), type(result.error).__name__) if result.error else None)


def ledger_record(run_dir: Path, trial_id: str, entry: dict[str, Any], max_epochs: int,
                  arms: dict[str, dict] | None = None) -> TrialRecord:
    """The record of a trial the ledger saw finish but Tune's restored state does not hold (it
    finished after Tune last saved its state, before the driver was killed): its config and
    last metrics from the ledger, its epochs from its registered checkpoints and result.json."""
    config = dict(entry.get("config") or {})
    if arms and config.get(ARM_KEY) in arms:
        config = {**arms[config[ARM_KEY]], **config}
    last = dict(entry.get("metrics") or {})
    rows = trial_history(run_dir, trial_id, trial_dir(run_dir, trial_id)) + [last]
    return TrialRecord.from_history(trial_id, config, trial_status(last, None, max_epochs), rows)


def summarize(spec, plan: SweepPlan, results, wall_s: float, searched: list[str],
              arms: dict[str, dict] | None = None,
              lost: dict[str, dict[str, Any]] | None = None) -> Summary:
    """summary.json's content from a Tune ResultGrid (`arms`: an ablation's cells) and, from
    the ledger, the finished trials Tune's restored state lost (`lost`: id -> entry)."""
    trials = [trial_record(r, spec.budget.max_epochs, arms) for r in results]
    run_dir = Path(plan.experiment_dir)
    trials += [ledger_record(run_dir, i, entry, spec.budget.max_epochs, arms)
               for i, entry in sorted((lost or {}).items())]
    pareto = pareto_of(trials, spec.budget.objectives) if spec.budget.multi_objective else None
    return Summary.ranked(
        trials, name=spec.name, spec=redacted_spec(spec), plan=asdict(plan), searched=searched,
        wall_s=round(wall_s, 2), pareto=pareto, ray_version=_version("ray"),
        torch_version=_version("torch"))  # the workers' torch; the driver never imports it


def redacted_spec(spec) -> dict:
    """The spec as recorded in summary.json: no RDB or tracking password and no webhook
    secret ever lands in a results file."""
    dump = spec.model_dump(mode="json")
    if dump.get("searcher", {}).get("storage"):
        dump["searcher"]["storage"] = redact_url(dump["searcher"]["storage"])
    if (dump.get("tracking") or {}).get("mlflow"):
        mlflow = dump["tracking"]["mlflow"]
        mlflow["tracking_uri"] = redact_url(mlflow["tracking_uri"])
    if dump.get("notify"):
        dump["notify"]["webhook"] = redact_webhook(dump["notify"]["webhook"])
    return dump


# A DataError's message is complete and meant to be printed as it is: its class name, however
# qualified (`service.config.data.DataError: `), is left out of the error line.
_DATA_ERROR = re.compile(r"^(?:[\w.]+\.)?DataError: ")


def error_line(text: str, fallback: str = "error") -> str:
    """A trial's error in one line, from its text (a Ray task error's traceback, or Tune's
    error file): the traceback's last line, `OSError: [Errno 28] No space left on device: …`
    or a DataError's own message; `fallback` when the text has none."""
    line = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), fallback)
    return _DATA_ERROR.sub("", line)[:500]


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
