"""Every directory and file of Tune's and Train's that the project relies on, named once.

A run directory `RESULTS/<name>/<run-id>/` is Tune's experiment directory: a trial's Tune
directory `run_trial_<id>_<index>_<params>_<date>/` (its `result.json`, one line per epoch),
its Ray Train run `train_<id>/` (checkpoints and Train's snapshot of the registered ones) and
our `summary.json`; the ledger of finished trials lives beside it, in `.finished/`. Reading them
needs neither Ray nor torch, so the results and report layers use this module too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SEED_KEY = "__trial_index__"  # a seed offset: budget.seeds (seedgroups, grid) and ablations
ARM_KEY = "arm"  # an ablation's compared runs: which cell (baseline, arm, combination)
TUNING_DIR = "tuning"  # an ablation's tuning sweeps: RUN/tuning/<cell>/, one per cell
ABLATION = "ablation.json"  # an ablation's statistics (service.results.ablation)
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's registered checkpoints
SUMMARY = "summary.json"  # our record of a finished sweep (service.results)
JOURNAL = "optuna-journal.log"  # the sweep's Optuna study (Optuna's journal file storage)
TRIAL_PREFIX = "run_trial"  # Tune names a trial's directory after its trainable, run_trial


def train_run_name(trial_id: str) -> str:
    """The Ray Train run of a trial, a directory beside Tune's trial directories."""
    return f"train_{trial_id}"


def train_run_dir(experiment_dir: str | os.PathLike, trial_id: str) -> str:
    """Where a trial's Train run (its checkpoints and their snapshot) lives."""
    return os.path.join(experiment_dir, train_run_name(trial_id))


def trial_history(experiment_dir: str | os.PathLike, trial_id: str,
                  trial_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A trial's results, one per epoch, from the records that outlive its driver: Ray Train's
    checkpoint snapshot (written with each checkpoint, straight to storage) and Tune's
    result.json in `trial_dir` (copied to storage every few seconds, so it may lag behind)."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    if trial_dir is not None:
        for row in json_lines(Path(trial_dir) / "result.json"):
            by_epoch[row.get("epoch")] = row
    snapshot = Path(train_run_dir(experiment_dir, trial_id)) / TRAIN_SNAPSHOT
    try:
        for entry in json.loads(snapshot.read_text()).get("checkpoint_results", []):
            metrics = entry.get("metrics") or {}
            by_epoch.setdefault(metrics.get("epoch"), metrics)
    except (OSError, ValueError):
        pass
    by_epoch.pop(None, None)
    return [by_epoch[e] for e in sorted(by_epoch)]


def json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a killed driver
            continue
    return rows


def last_registered_metrics(filesystem, experiment_fs_path: str,
                            trial_id: str) -> dict[str, Any] | None:
    """The metrics of a trial's newest registered checkpoint, or None if it has none."""
    path = f"{train_run_dir(experiment_fs_path, trial_id)}/{TRAIN_SNAPSHOT}"
    try:
        with filesystem.open_input_stream(path) as f:
            latest = json.loads(f.readall()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):
        return None
    return latest.get("metrics")


def finished_before(ledger: str | None, trial_id: str) -> bool:
    """Whether an earlier driver of this sweep saw the trial finish without an error (the
    sweep's ledger); a trial that ended in error is tried again on --resume."""
    try:
        return bool(ledger) and trial_id in read_ledger(Path(ledger), errored=False)
    except (OSError, ValueError):
        return False


def ledger_path(experiment_dir: str) -> Path | None:
    """The finished-trial ledger of a run: beside its experiment directory (local runs only).

    Not inside it: Tune re-uploads its own staged copy of that directory over whatever else
    is written there during a restored run."""
    if "://" in experiment_dir:
        return None
    exp = Path(experiment_dir)
    return exp.parent / ".finished" / f"{exp.name}.json"


def trial_id_of(path: str) -> str:
    # Tune names trial directories <trainable>_<trial_id>_<index>_<params>_<date>.
    parts = Path(path).name.split("_")
    return parts[2] if len(parts) > 2 and parts[:2] == ["run", "trial"] else Path(path).name


def trial_dir(run_dir: Path, trial_id: str) -> Path | None:
    """Tune's directory of a trial (run_trial_<id>_<index>_<params>_<date>)."""
    found = sorted(run_dir.glob(f"run_trial_{trial_id}_*"))
    return found[0] if found else None


def read_ledger(path: Path, errored: bool = True) -> set[str]:
    """Trial ids recorded as finished (completed, stopped early, diverged), and, unless
    `errored` is False, those that ended in error. The file is {"finished": [...],
    "errored": [...]} (a plain list of finished ids before errors were kept apart)."""
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return set(data)
    return set(data.get("finished", [])) | (set(data.get("errored", [])) if errored else set())


def write_ledger(path: Path, finished: set[str], errored: set[str]) -> None:
    """Write the ledger atomically (a temporary file renamed over it)."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"finished": sorted(finished),
                                   "errored": sorted(errored - finished)}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def journal_path(experiment_dir: str) -> Path | None:
    """The journal file of a run directory's Optuna study, if it has one."""
    path = Path(experiment_dir) / JOURNAL
    return path if "://" not in experiment_dir and path.is_file() else None
