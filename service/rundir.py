"""Every file, directory and key of a run directory, ours and Tune's and Train's, named once.

A run directory `RESULTS/<name>/<run-id>/` is Tune's experiment directory: a trial's Tune
directory `run_trial_<id>_<index>_<params>_<date>/` (its `result.json`, one line per epoch)
and our `summary.json`; the ledger of finished trials lives beside it, in `.finished/`.
A trial's checkpoints lie where its engine put them (`resources.engine`):
- tune (one worker, in Tune's trial actor): in its Tune directory, `checkpoint_000000/`…, with
  our list of the registered ones, `registered_checkpoints.json`;
- train (a Ray Train run): in the run `train_<id>/` beside it, with Train's list,
  `checkpoint_manager_snapshot.json`.
Both lists have Train's shape (`checkpoint_results[*].{metrics, checkpoint_dir_name}`,
`latest_checkpoint_result`), names relative to the list's directory; `checkpoint_list` finds a
trial's. Train lists a checkpoint once it is stored. Ours lists one just before Tune stores it
(a trial a scheduler stops never returns from that report), with each file's size (`files`):
it is whole once every file has that size (`whole_entries`). Nothing else is read as a
checkpoint: a process killed mid-copy can leave a partial `checkpoint_*` directory behind.
The standard library only: every layer (tune, results, report, analysis, claims, nightly)
imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.atomic import write_bytes_atomic

SEED_KEY = "__trial_index__"  # a seed offset: budget.seeds (seedgroups, grid) and ablations
ARM_KEY = "arm"  # an ablation's compared runs: which cell (baseline, arm, combination)
TUNING_DIR = "tuning"  # an ablation's tuning sweeps: RUN/tuning/<cell>/, one per cell
LOOKS_DIR = "looks"  # sequential seeds: each look's runs, RUN/looks/<k>/ (k = 1, 2, ...)
ABLATION = "ablation.json"  # an ablation's statistics (service.results.ablation)
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's registered checkpoints
TUNE_SNAPSHOT = "registered_checkpoints.json"  # ours, in a tune-engine trial's Tune directory
SUMMARY = "summary.json"  # our record of a finished sweep (service.results)
JOURNAL = "optuna-journal.log"  # the sweep's Optuna study (Optuna's journal file storage)
TRIAL_PREFIX = "run_trial"  # Tune names a trial's directory after its trainable, run_trial


def train_run_name(trial_id: str) -> str:
    """The Ray Train run of a trial, a directory beside Tune's trial directories."""
    return f"train_{trial_id}"


def train_run_dir(experiment_dir: str | os.PathLike, trial_id: str) -> str:
    """Where a trial's Train run (its checkpoints and their snapshot) lives."""
    return os.path.join(experiment_dir, train_run_name(trial_id))


def checkpoint_list(run_dir: str | os.PathLike, trial_id: str) -> Path:
    """The file listing a trial's registered checkpoints: Train's snapshot when the trial is a
    Train run, else ours in its Tune directory (either may not exist yet)."""
    train = Path(train_run_dir(run_dir, trial_id)) / TRAIN_SNAPSHOT
    if train.exists():
        return train
    tune_dir = trial_dir(Path(run_dir), trial_id)
    if tune_dir is None:
        return train
    beside = Path(train_run_dir(tune_dir.parent, trial_id)) / TRAIN_SNAPSHOT  # in a look's dir
    return beside if beside.exists() else tune_dir / TUNE_SNAPSHOT


def whole_entries(data: dict[str, Any], size_of: Callable[[str], int | None]
                  ) -> list[dict[str, Any]]:
    """The entries of a checkpoint list (`data`) whose checkpoints are whole, oldest first;
    `size_of(relative path)` is a stored file's size (None if absent)."""
    entries = data.get("checkpoint_results") if isinstance(data, dict) else None
    out = []
    for entry in entries if isinstance(entries, list) else []:
        files = entry.get("files")
        name = entry.get("checkpoint_dir_name")
        if files is None or all(size_of(f"{name}/{f}") == n for f, n in files.items()):
            out.append(entry)
    return out


def local_whole_entries(path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole entries of `data`, the checkpoint list read from `path` on a local disk."""
    def size_of(rel: str) -> int | None:
        try:
            return (path.parent / rel).stat().st_size
        except OSError:
            return None

    return whole_entries(data, size_of)


def read_local_list(path: Path) -> list[dict[str, Any]]:
    """The whole entries of a checkpoint list on a local disk ([] if there is none)."""
    try:
        return local_whole_entries(path, json.loads(path.read_text()))
    except (OSError, ValueError):
        return []


def trial_history(experiment_dir: str | os.PathLike, trial_id: str,
                  trial_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A trial's results, one per epoch, from the records that outlive its driver: the list of
    its registered checkpoints (written with each checkpoint, straight to storage) and Tune's
    result.json in `trial_dir` (copied to storage every few seconds, so it may lag behind)."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    lists = [Path(train_run_dir(experiment_dir, trial_id)) / TRAIN_SNAPSHOT]
    if trial_dir is not None and Path(trial_dir).parent != Path(experiment_dir):  # a look's
        lists.append(Path(train_run_dir(Path(trial_dir).parent, trial_id)) / TRAIN_SNAPSHOT)
    if trial_dir is not None:
        for row in json_lines(Path(trial_dir) / "result.json"):
            by_epoch[row.get("epoch")] = row
        lists.append(Path(trial_dir) / TUNE_SNAPSHOT)
    for path in lists:
        for entry in read_local_list(path):
            metrics = entry.get("metrics") or {}
            by_epoch.setdefault(metrics.get("epoch"), metrics)
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


def last_registered_metrics(filesystem, experiment_fs_path: str, trial_id: str,
                            trial_fs_path: str | None = None) -> dict[str, Any] | None:
    """The metrics of a trial's newest whole registered checkpoint, or None if it has none:
    from its Train run's list, or from ours in its Tune directory `trial_fs_path`."""
    lists = [f"{train_run_dir(experiment_fs_path, trial_id)}/{TRAIN_SNAPSHOT}"]
    if trial_fs_path is not None:
        lists.append(f"{trial_fs_path}/{TUNE_SNAPSHOT}")
    for path in lists:
        entries = read_checkpoint_list(filesystem, path)
        if entries:
            return entries[-1].get("metrics")
    return None


def read_checkpoint_list(filesystem, path: str) -> list[dict[str, Any]]:
    """The whole entries of a checkpoint list on a pyarrow filesystem ([] if there is none)."""
    try:
        with filesystem.open_input_stream(path) as f:
            data = json.loads(f.readall())
    except (OSError, ValueError):
        return []
    base = path.rsplit("/", 1)[0]

    def size_of(rel: str) -> int | None:
        try:
            info = filesystem.get_file_info(f"{base}/{rel}")
        except OSError:
            return None
        return info.size if info.is_file else None

    return whole_entries(data, size_of)


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
    """Tune's directory of a trial (run_trial_<id>_<index>_<params>_<date>), in the run
    directory or, with sequential seeds, in one of its looks' directories."""
    found = (sorted(run_dir.glob(f"run_trial_{trial_id}_*"))
             or sorted(run_dir.glob(f"{LOOKS_DIR}/*/run_trial_{trial_id}_*")))
    return found[0] if found else None


def read_ledger(path: Path, errored: bool = True) -> set[str]:
    """Trial ids recorded as finished (completed, stopped early, diverged), and, unless
    `errored` is False, those that ended in error. The file is {"finished": [...],
    "errored": [...], "trials": {id: {"config": ..., "metrics": ...}}} (a plain list of
    finished ids before errors were kept apart)."""
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return set(data)
    return set(data.get("finished", [])) | (set(data.get("errored", [])) if errored else set())


def ledger_trials(path: Path | None) -> dict[str, dict[str, Any]]:
    """Each finished trial's config and last metrics as the ledger recorded them ({} if none):
    what a summary needs of a trial that finished after Tune last saved its state."""
    try:
        data = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    trials = data.get("trials") if isinstance(data, dict) else None
    return trials if isinstance(trials, dict) else {}


def write_ledger(path: Path, finished: set[str], errored: set[str],
                 trials: dict[str, dict[str, Any]] | None = None) -> None:
    """Write the ledger atomically (`service.atomic`)."""
    write_bytes_atomic(path, json.dumps({"finished": sorted(finished),
                                         "errored": sorted(errored - finished),
                                         "trials": trials or {}}, default=str).encode())


def journal_path(experiment_dir: str) -> Path | None:
    """The journal file of a run directory's Optuna study, if it has one."""
    path = Path(experiment_dir) / JOURNAL
    return path if "://" not in experiment_dir and path.is_file() else None
