"""The digits path without torchvision or scikit-learn in a trial's new process:
the node-local array cache, and the torch-only standardising that must give exactly the
items torchvision's pipeline gives."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from service.config.data import DataConfig
from service.training import cache
from service.training.data import (
    _digits_resized,
    _digits_split,
    build_datasets,
    split_indices,
    tensor_datasets,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (32, 1), (32, 3), (67, 3)])
def test_plain_digits_items_equal_the_torchvision_pipeline(size: int, channels: int) -> None:
    d = build_datasets(DataConfig(), image_size=size, in_channels=channels, seed=3)
    images, labels, _, _ = _digits_resized(size)
    tr, va, mean, std = _digits_split(size, 3, 0.2)
    ref = tensor_datasets(images, labels, tr, va, image_size=size, in_channels=channels,
                          num_classes=10, mean=(mean,), std=(std,), seed=3)
    assert (d.mean, d.std) == (ref.mean, ref.std) and len(d.mean) == channels
    assert torch.equal(d.train.indices, ref.train.indices)
    assert torch.equal(d.val.indices, ref.val.indices)
    for split, other in ((d.train, ref.train), (d.val, ref.val)):
        for i in (0, 17, len(split) - 1):
            (x, y), (rx, ry) = split[i], other[i]
            assert x.shape == (channels, size, size) and y == ry
            assert torch.equal(x, rx)


def test_digits_resize_is_torchvisions() -> None:
    raw = _digits_resized(8)[0]
    for size in (32, 67, 227):
        ref = v2.functional.resize(raw, [size, size], antialias=True).clamp_(0.0, 1.0)
        assert torch.equal(_digits_resized(size)[0], ref)


@pytest.mark.slow
def test_a_fresh_process_builds_plain_digits_without_torchvision_or_sklearn(tmp_path) -> None:
    probe = ("import sys\n"
             "from service.config.data import DataConfig\n"
             "from service.training.data import build_datasets\n"
             "d = build_datasets(DataConfig(), image_size=32, in_channels=3, seed=4)\n"
             "x, y = d.train[5]\n"
             "print(tuple(x.shape), y, d.val.indices[:3].tolist(),\n"
             "      'torchvision' in sys.modules, 'sklearn' in sys.modules)\n")
    env = {**os.environ, cache.CACHE_ENV: str(tmp_path / "cache")}

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, text=True,
                             capture_output=True, timeout=120, check=True).stdout
        return out.split()

    first, second = run(), run()
    assert first[-1] == "True"  # the first process on the node loads and splits with sklearn
    assert second[-2:] == ["False", "False"]  # every later one reads the cache
    assert first[:-2] == second[:-2]  # and gets the same images, labels and split
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == [
        "digits", "split"]


def test_cache_rebuilds_a_damaged_file_and_works_unwritable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(5)}

    assert cache.cached_arrays("thing", build)["a"].tolist() == [0, 1, 2, 3, 4]
    assert cache.cached_arrays("thing", build)["a"].tolist() == [0, 1, 2, 3, 4]
    assert len(calls) == 1
    (stored,) = tmp_path.glob("thing*.npz")
    stored.write_bytes(b"half a file")
    assert cache.cached_arrays("thing", build)["a"].tolist() == [0, 1, 2, 3, 4]
    assert len(calls) == 2 and not list(tmp_path.glob(".thing*"))  # no temporary left behind
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocked))
    assert cache.cached_arrays("other", build)["a"].tolist() == [0, 1, 2, 3, 4]


def test_cached_split_is_the_sklearn_split(tmp_path, monkeypatch) -> None:
    from sklearn.model_selection import train_test_split

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    labels = np.repeat(np.arange(4), 10)
    for _ in range(2):  # computed, then read back
        tr, va = split_indices(labels, 0.25, seed=9)
        ref_tr, ref_va = train_test_split(np.arange(40), test_size=0.25, random_state=9,
                                          stratify=labels)
        assert tr.tolist() == sorted(ref_tr) and va.tolist() == sorted(ref_va)
    assert len(list(tmp_path.glob("split-*.npz"))) == 1
    split_indices(labels, 0.25, seed=10)  # another seed is another file
    assert len(list(tmp_path.glob("split-*.npz"))) == 2


def test_a_planted_pickle_in_the_cache_is_never_unpickled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    (tmp_path / "thing.v1.npz").parent.mkdir(exist_ok=True)
    np.savez(tmp_path / "thing.v1.npz", a=np.array([Boom()], dtype=object))
    got = cache.cached_arrays("thing", lambda: {"a": np.arange(3)})
    assert got["a"].tolist() == [0, 1, 2]  # refused (allow_pickle=False) and rebuilt
    with np.load(tmp_path / "thing.v1.npz", allow_pickle=False) as f:
        assert f["a"].dtype != object  # the planted file was replaced
