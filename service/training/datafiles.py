"""Reading datasets' files: IDX pairs (MNIST's format, plain or gzipped) and the official files
of torchvision's datasets, decoded once per process; every problem is one DataError line."""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.config.data import DATASETS, DataError, t10k_paths, torchvision_files


def load_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[torch.Tensor, ...]:
    """Read an IDX image file and its label file (plain or .gz), e.g. MNIST's t10k pair.

    Returns `(images uint8 (N, rows, cols), labels int64 (N,))`; raises DataError on a missing
    file, a wrong magic number (2051 images / 2049 labels), truncation or a count mismatch.
    """
    dims, payload = _read_idx(Path(images_path), 2051)
    images = torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(*dims)
    (n,), payload = _read_idx(Path(labels_path), 2049)
    labels = torch.frombuffer(bytearray(payload), dtype=torch.uint8).long()
    if n != dims[0]:
        raise DataError(f"{images_path} has {dims[0]} images but {labels_path} has {n} labels")
    return images, labels


def _read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise DataError(f"{path}: magic number {found}, expected {magic} (not an IDX file?)")
    ndim = magic & 0xFF  # low byte = number of dimensions; 0x08 above it = unsigned bytes
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = data[4 + 4 * ndim :]
    if len(payload) != math.prod(dims):
        raise DataError(f"{path}: {len(payload)} data bytes, header says {math.prod(dims)}")
    return dims, payload


@functools.lru_cache(maxsize=2)
def load_torchvision(name: str, root: str, download: bool) -> tuple[torch.Tensor, Any, int]:
    """Decode the official train + test splits once per process: (images uint8 (N, C, H, W),
    labels, number of train images); the test images come last and serve as validation."""
    import torchvision.datasets as tvd

    where, files = torchvision_files(name, Path(root))
    dataset = getattr(tvd, DATASETS[name].torchvision[0])
    try:
        splits = [dataset(root, train=t, download=download) for t in (True, False)]
    except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found ..."; network errors
        missing = [f for f in files if not (where / f).is_file()]
        if download:
            msg = (f"could not download {name} into {where} ({' '.join(str(e).split())}); "
                   f"without internet, copy the unpacked files {', '.join(files)} there")
        elif missing:
            msg = (f"{name} not found: no {where / missing[0]} (torchvision needs {len(files)}"
                   f" files in {where}). Set `data.download: true` to download it, or point "
                   f"`data.root` at the folder that contains {where.relative_to(root)}/")
        else:
            msg = (f"{name} files in {where} fail torchvision's integrity check (corrupted or not"
                   f" the official files): set `data.download: true` to download them again")
        raise DataError(msg) from e
    except (AssertionError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(f"{name} files in {where} are unreadable ({e!r})") from e
    x = torch.cat([torch.as_tensor(np.asarray(ds.data)) for ds in splits])
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # MNIST is NHW, CIFAR NHWC
    y = torch.cat([torch.as_tensor(ds.targets).long() for ds in splits])
    return x.contiguous(), y, len(splits[0])


@functools.lru_cache(maxsize=2)
def load_t10k(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's t10k pair in `root`, decoded once per process."""
    return load_idx_pair(*t10k_paths(Path(root)))
