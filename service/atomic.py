"""Atomic writes to a local disk, for every layer (the standard library only): a reader sees the
old file or the new one, never half of one, and a failed write leaves no temporary file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a temporary file beside `path`, flush it to disk (fsync), make it
    readable by others (0644) and rename it over `path`, creating the parent folder if needed.
    On failure the temporary file is removed, the old file is left whole and the error is
    raised again (an OSError without a file name is given `path`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other readers
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = os.fspath(path)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """`write_atomic` of `data`."""
    write_atomic(path, lambda f: f.write(data))
