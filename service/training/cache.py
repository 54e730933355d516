"""A node-local disk cache of small prepared arrays: the embedded digits and seeded splits.

Every new trial process (a Tune trial actor, a Ray Train worker) would otherwise import
scikit-learn (~0.9 s of a 2-core machine's CPU, docs/performance.md) to load the digits and
split them; with the cache, the first process on a node writes the arrays once and every later
one reads a few hundred kB with numpy. Files are written whole and renamed into place, so processes
starting together never read half a file; a file that cannot be read is rebuilt, and where
nothing can be written (a read-only home) the arrays are simply computed each time.

The folder: `$CNN_ABLATE_CACHE`, else `$XDG_CACHE_HOME/cnn-ablate`, else `~/.cache/cnn-ablate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.atomic import write_atomic

CACHE_ENV = "CNN_ABLATE_CACHE"
_VERSION = 1  # bump when what a cached name means changes


def cache_dir() -> Path:
    """Where this node keeps the cache (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cnn-ablate"


def key(*parts: object) -> str:
    """A short, stable file-name-safe digest of `parts` (arrays by their bytes and shape)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def cached_arrays(name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under `name`, or `build()`'s, stored for the next process."""
    path = cache_dir() / f"{name}.v{_VERSION}.npz"
    with contextlib.suppress(OSError, ValueError, EOFError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    arrays = build()
    with contextlib.suppress(OSError):  # nothing writable here: the next process builds them
        write_atomic(path, lambda f: np.savez(f, **arrays))
    return arrays


def sklearn_version() -> str:
    """scikit-learn's version, read without importing it (its import is the cost saved)."""
    try:
        return importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return "none"
