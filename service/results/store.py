"""A run's results on disk: atomic JSON writes (local paths and URIs), summary.json read back as
a `Summary`, and each trial's per-epoch history beside it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from service.atomic import write_bytes_atomic
from service.results.records import Summary
from service.rundir import SUMMARY, trial_dir, trial_history


class ResultsError(Exception):
    """A run directory or summary.json that cannot be read; the message is one printable line."""


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a local path (temp file, fsync, rename) or a URI, so that a reader never
    sees half a file; on failure the old file is left whole and the OSError names `path`."""
    path = os.fspath(path)
    if "://" in path:
        import pyarrow.fs  # only for URIs: a local write needs none of its ~50 MiB

        # Object stores publish an object only when its upload completes: atomic as it is.
        fs, rel = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(rel) as f:
            f.write(data)
        return
    write_bytes_atomic(path, data)


def write_json(path: str | os.PathLike, payload: BaseModel | Mapping[str, Any]) -> None:
    """Write a record (non-finite numbers as null) or a NaN-free mapping as indented JSON,
    atomically; a mapping holding NaN or infinity raises ValueError."""
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json(indent=2)
    else:
        text = json.dumps(payload, indent=2, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def read_summary(run_dir: str | os.PathLike) -> Summary:
    """summary.json of a local run directory; ResultsError naming the path if the directory or
    the file is missing, unreadable or not a summary."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: no such run directory")
    path = run_dir / SUMMARY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(
            f"{path}: no summary.json (not a finished sweep's run directory?)") from None
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: unreadable summary ({err})") from None
    try:
        return Summary.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "<top level>"
        raise ResultsError(f"{path}: not a sweep summary ({where}: {first['msg']}; "
                           f"{err.error_count()} problem(s))") from None


def load_run(run_dir: str | os.PathLike) -> Summary:
    """summary.json with each trial's per-epoch history attached (`TrialRecord.history`, from
    Train's checkpoint snapshot and Tune's result.json)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    for t in summary.trials:
        t.history = trial_history(run_dir, t.trial_id, trial_dir(run_dir, t.trial_id))
    return summary
