"""A trial's checkpoints in either engine's layout (service/rundir.py): Train's snapshot in
its run `train_<id>/`, or our list in its Tune directory; only whole, listed checkpoints count."""

from __future__ import annotations

import json
from pathlib import Path

from pyarrow.fs import LocalFileSystem

from service.rundir import (
    TRAIN_SNAPSHOT,
    TUNE_SNAPSHOT,
    checkpoint_list,
    last_registered_metrics,
    read_local_list,
    trial_history,
)

TRIAL = "5ab37dfc"


def _tune_trial(run: Path, sizes: dict[str, int], stored: dict[str, int]) -> Path:
    """A tune-engine trial: `stored` bytes of checkpoint.pt per checkpoint directory, listed
    with `sizes` bytes."""
    tdir = run / f"run_trial_{TRIAL}_4_lr=0.05_2026-12-06_18-22-19"
    entries = []
    for i, (name, n) in enumerate(sizes.items(), start=1):
        (tdir / name).mkdir(parents=True)
        (tdir / name / "checkpoint.pt").write_bytes(b"x" * stored[name])
        entries.append({"metrics": {"epoch": i, "val_acc": i / 10},
                        "checkpoint_dir_name": name, "files": {"checkpoint.pt": n}})
    (tdir / TUNE_SNAPSHOT).write_text(json.dumps(
        {"checkpoint_results": entries, "latest_checkpoint_result": entries[-1]}))
    return tdir


def test_a_tune_trial_lists_only_checkpoints_stored_whole(tmp_path):
    # epoch 3's copy was cut short (a kill while Tune stored it); epoch 2 is whole
    sizes = {"checkpoint_000000": 10, "checkpoint_000001": 10, "checkpoint_000002": 10}
    tdir = _tune_trial(tmp_path, sizes, {**sizes, "checkpoint_000002": 4})
    listed = checkpoint_list(tmp_path, TRIAL)
    assert listed == tdir / TUNE_SNAPSHOT
    assert [e["metrics"]["epoch"] for e in read_local_list(listed)] == [1, 2]
    assert [h["epoch"] for h in trial_history(tmp_path, TRIAL, tdir)] == [1, 2]
    last = last_registered_metrics(LocalFileSystem(), str(tmp_path), TRIAL, str(tdir))
    assert last == {"epoch": 2, "val_acc": 0.2}
    (tdir / "checkpoint_000002" / "checkpoint.pt").write_bytes(b"x" * 10)  # stored in full
    assert [e["metrics"]["epoch"] for e in read_local_list(listed)] == [1, 2, 3]


def test_a_train_run_is_read_from_trains_snapshot(tmp_path):
    run_dir = tmp_path / f"train_{TRIAL}"
    (run_dir / "checkpoint_2026-12-06_18-22-19.000000").mkdir(parents=True)
    entry = {"metrics": {"epoch": 1},
             "checkpoint_dir_name": "checkpoint_2026-12-06_18-22-19.000000"}
    (run_dir / TRAIN_SNAPSHOT).write_text(json.dumps(
        {"checkpoint_results": [entry], "latest_checkpoint_result": entry}))
    assert checkpoint_list(tmp_path, TRIAL) == run_dir / TRAIN_SNAPSHOT
    assert read_local_list(run_dir / TRAIN_SNAPSHOT) == [entry]  # Train lists only stored ones
    assert last_registered_metrics(LocalFileSystem(), str(tmp_path), TRIAL) == {"epoch": 1}


def test_no_list_no_checkpoints(tmp_path):
    assert read_local_list(checkpoint_list(tmp_path, TRIAL)) == []
    assert last_registered_metrics(LocalFileSystem(), str(tmp_path), TRIAL, None) is None


def test_a_finished_trial_that_tune_lost_is_recorded_from_the_ledger(tmp_path):
    """A trial that finished after Tune last saved its state (then the driver was killed) is
    summarised from the ledger's config and last metrics and its registered checkpoints."""
    from service.rundir import ledger_trials, write_ledger
    from service.tune.summary import ledger_record

    sizes = {"checkpoint_000000": 10, "checkpoint_000001": 10}
    _tune_trial(tmp_path, sizes, sizes)
    ledger = tmp_path / "ledger.json"
    last = {"epoch": 2, "val_acc": 0.2, "status": "running", "trial_id": TRIAL}
    write_ledger(ledger, {TRIAL}, set(), {TRIAL: {"config": {"lr": 0.05}, "metrics": last}})
    entry = ledger_trials(ledger)[TRIAL]
    record = ledger_record(tmp_path, TRIAL, entry, max_epochs=3)
    assert record.trial_id == TRIAL and record.config == {"lr": 0.05}
    assert record.status == "stopped-early" and record.epochs == 2
    assert record.best_val_acc == 0.2
    assert ledger_record(tmp_path, TRIAL, entry, max_epochs=2).status == "completed"
