"""`data.train_subset: N` (the overfitting regime of claims 2 and 3): N images of the training
split, stratified by class and fixed by the train seed, on every dataset path (the embedded
digits, a torchvision dataset read from its real files, mnist_test, an image folder), with the
validation set unchanged; a bad or too large N is refused in one line. All on the real digits."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pydantic import ValidationError
from sklearn.datasets import load_digits

from service.config.data import AugmentConfig, DataConfig, DataError, train_split_size
from service.config.spec import SpecError, load_spec
from service.training.data import build_datasets
from service.training.subset import subset_positions

DIGITS = load_digits()


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test computes its subsets (and splits) instead of reading an earlier run's files."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNN_ABLATE_CACHE", str(folder))
    return folder


def _assert_stratified(subset_labels: np.ndarray, pool_labels: np.ndarray, n: int) -> None:
    """Each class's count in the subset is within one of its share of `pool_labels` times n."""
    classes = int(pool_labels.max()) + 1
    got = np.bincount(subset_labels, minlength=classes)
    expected = np.bincount(pool_labels, minlength=classes) / len(pool_labels) * n
    assert np.abs(got - expected).max() <= 1, (got, expected)


# ---------------------------------------------------------------- digits


def test_digits_subset_has_n_stratified_training_images_and_the_same_validation() -> None:
    full = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=0)
    small = build_datasets(DataConfig(train_subset=50), image_size=8, in_channels=1, seed=0)
    assert len(small.train) == 50 and len(full.train) == 1437
    assert set(small.train.indices.tolist()) < set(full.train.indices.tolist())
    assert torch.equal(small.val.indices, full.val.indices)  # validation untouched
    assert len(small.val) == 360
    # 50 of 1,437 near-balanced digits: 5 of each class give or take one (a plain random draw
    # of 50 puts 1 to 10 in some class)
    _assert_stratified(small.train.targets.numpy(), full.train.targets.numpy(), 50)
    # the items are the real digits at those indices, normalised as the whole split is
    assert small.mean == full.mean and small.std == full.std
    x, y = small.train[7]
    i = int(small.train.indices[7])
    assert y == DIGITS.target[i]
    assert torch.allclose(x * small.std[0] + small.mean[0],
                          torch.from_numpy(DIGITS.images[i] / 16.0).float()[None], atol=1e-5)


def test_same_seed_same_subset_another_seed_another() -> None:
    a = build_datasets(DataConfig(train_subset=200), image_size=8, in_channels=1, seed=3)
    b = build_datasets(DataConfig(train_subset=200), image_size=8, in_channels=1, seed=3)
    assert torch.equal(a.train.indices, b.train.indices)
    # an ablation's arms share the seed and differ elsewhere (here augmentation, which takes
    # another code path): they train on the same images
    aug = DataConfig(train_subset=200, augmentation=AugmentConfig(hflip=True))
    c = build_datasets(aug, image_size=8, in_channels=1, seed=3)
    assert torch.equal(a.train.indices, c.train.indices)
    # another seed: other images, even out of the same training split
    labels = a.train.targets.numpy()
    assert not np.array_equal(subset_positions(labels, 100, seed=0),
                              subset_positions(labels, 100, seed=1))
    assert np.array_equal(subset_positions(labels, 100, seed=0),
                          subset_positions(labels, 100, seed=0))
    d = build_datasets(DataConfig(train_subset=200), image_size=8, in_channels=1, seed=4)
    assert not torch.equal(a.train.indices, d.train.indices)


def test_subset_positions_keep_uneven_class_proportions_and_read_back_from_the_cache(
        fresh_cache: Path) -> None:
    labels = np.repeat([0, 1, 2], [70, 20, 10])  # 70 % / 20 % / 10 %
    picked = subset_positions(labels, 20, seed=0)
    assert np.bincount(labels[picked]).tolist() == [14, 4, 2]
    assert len(set(picked.tolist())) == 20 and np.all(np.diff(picked) > 0)
    # fewer images than classes still works (each class within one of its share)
    two = subset_positions(labels, 2, seed=0)
    assert len(two) == 2 and set(labels[two].tolist()) <= {0, 1}
    # one file per (labels, n, seed), holding what was returned
    stored = {tuple(np.load(f)["positions"].tolist()) for f in fresh_cache.glob("subset-*.npz")}
    assert stored == {tuple(picked.tolist()), tuple(two.tolist())}


def test_the_whole_split_and_too_many() -> None:
    full = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=0)
    every = build_datasets(DataConfig(train_subset=1437), image_size=8, in_channels=1, seed=0)
    assert torch.equal(every.train.indices, full.train.indices)
    with pytest.raises(ValidationError, match="must be at most 1437"):
        DataConfig(train_subset=1438)
    # a larger validation share leaves fewer: the limit follows val_fraction
    assert DataConfig(train_subset=1000, val_fraction=0.4).train_subset == 1000
    with pytest.raises(ValidationError, match="must be at most 898"):
        DataConfig(train_subset=1000, val_fraction=0.5)
    with pytest.raises(DataError) as e:
        subset_positions(np.zeros(10, dtype=int), 11, seed=0)
    assert str(e.value) == ("data.train_subset=11 is more than the 10 images of the training "
                            "split: use at most 10, or leave data.train_subset unset to train "
                            "on all of them")


@pytest.mark.parametrize("val_fraction", [0.2, 0.5, 1 / 3, 0.05])
def test_known_split_sizes_match_the_built_split(val_fraction: float) -> None:
    built = build_datasets(DataConfig(val_fraction=val_fraction), image_size=8, in_channels=1)
    assert train_split_size("digits", val_fraction) == len(built.train)
    assert train_split_size("imagefolder", val_fraction) is None


# ---------------------------------------------------------------- files: mnist, mnist_test


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The real IDX layout: magic (0x08 = ubyte, then ndim), big-endian dims, raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _digits_28(rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Real digits as MNIST-like 28x28 uint8 images: 8x8 scaled 3x, padded by 2."""
    images = np.kron(DIGITS.images[rows] * 255 / 16, np.ones((3, 3))).round()
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.uint8), DIGITS.target[rows]


def test_torchvision_mnist_files_subset_and_validation(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, rows in (("train", slice(0, 1000)), ("t10k", slice(1000, None))):
        images, labels = _digits_28(rows)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    cfg = DataConfig(dataset="mnist", root=str(tmp_path))
    full = build_datasets(cfg, image_size=28, in_channels=1, seed=0)
    small = build_datasets(cfg.model_copy(update={"train_subset": 120}), image_size=28,
                           in_channels=1, seed=0)
    assert (len(full.train), len(small.train), len(small.val)) == (1000, 120, 797)
    assert torch.equal(small.val.indices, full.val.indices)
    assert set(small.train.indices.tolist()) < set(range(1000))  # from the train files only
    _assert_stratified(small.train.targets.numpy(), DIGITS.target[:1000], 120)
    # the config allows up to MNIST's 60,000; these files have 1,000: refused when built
    too_many = DataConfig(dataset="mnist", root=str(tmp_path), train_subset=1001)
    with pytest.raises(DataError) as e:
        build_datasets(too_many, image_size=28, in_channels=1, seed=0)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("data.train_subset=1001 is more than the 1000 images of the "
                                   "training split of mnist: use at most 1000")


def test_mnist_test_split_then_subset(tmp_path: Path) -> None:
    images, labels = _digits_28(slice(None))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    cfg = DataConfig(dataset="mnist_test", root=str(tmp_path))
    full = build_datasets(cfg, image_size=28, in_channels=1, seed=2)
    small = build_datasets(cfg.model_copy(update={"train_subset": 300}), image_size=28,
                           in_channels=1, seed=2)
    assert (len(full.train), len(small.train)) == (1437, 300)
    assert torch.equal(small.val.indices, full.val.indices)
    assert set(small.train.indices.tolist()) < set(full.train.indices.tolist())
    _assert_stratified(small.train.targets.numpy(), full.train.targets.numpy(), 300)


# ---------------------------------------------------------------- imagefolder


def _digit_pngs(folder: Path, per_class: dict[int, int]) -> None:
    """Real digits as RGB PNGs, one folder per class."""
    for digit, count in per_class.items():
        (folder / f"d{digit}").mkdir(parents=True)
        rows = np.flatnonzero(DIGITS.target == digit)[:count]
        for i in rows:
            grey = (DIGITS.images[i] * 255 / 16).round().astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, -1)).save(folder / f"d{digit}" / f"{i}.png")


def test_imagefolder_subset_of_the_flat_split(tmp_path: Path) -> None:
    tree = tmp_path / "tree"  # beside the cache folder, not around it
    _digit_pngs(tree, {0: 30, 1: 15, 2: 5})  # uneven on purpose: 60 % / 30 % / 10 %
    cfg = DataConfig(dataset="imagefolder", root=str(tree), val_fraction=0.2)
    full = build_datasets(cfg, image_size=8, in_channels=3, seed=0)
    small = build_datasets(cfg.model_copy(update={"train_subset": 10}), image_size=8,
                           in_channels=3, seed=0)
    assert (len(full.train), len(full.val), len(small.train)) == (40, 10, 10)
    assert np.array_equal(small.val.indices, full.val.indices)
    assert set(small.train.indices.tolist()) < set(full.train.indices.tolist())
    assert np.bincount(small.train.targets).tolist() == [6, 3, 1]
    assert [small.train[i][1] for i in range(10)] == small.train.targets.tolist()
    with pytest.raises(DataError, match=r"^data\.train_subset=41 is more than the 40 images of "
                                        r"the training split of imagefolder"):
        build_datasets(cfg.model_copy(update={"train_subset": 41}), image_size=8,
                       in_channels=3, seed=0)


# ---------------------------------------------------------------- the YAML field

SPEC = {"name": "subset", "data": {"dataset": "digits", "image_size": 32},
        "model": {"family": "lenet5"}, "train": {"batch_size": 32},
        "budget": {"max_epochs": 2, "num_samples": 1}}


def _spec_file(tmp_path: Path, subset: object) -> Path:
    doc = {**SPEC, "data": {**SPEC["data"], "train_subset": subset}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_yaml_field_reaches_the_trial_config(tmp_path: Path) -> None:
    spec = load_spec(_spec_file(tmp_path, 300))
    assert spec.data.train_subset == 300
    assert spec.base_config().data.train_subset == 300
    assert load_spec(_spec_file(tmp_path, None)).data.train_subset is None
    assert spec.train_config({"train_subset": 100}).data.train_subset == 100  # searchable


@pytest.mark.parametrize(("value", "allowed"), [
    (0, "greater than or equal to 1"), (-3, "greater than or equal to 1"),
    ("x", "a valid integer"), (True, "a valid integer"), (2.5, "a valid integer"),
    (5000, "must be at most 1437: the training split of digits has 1437 images"),
])
def test_bad_values_are_one_line_naming_the_field(tmp_path: Path, value: object,
                                                  allowed: str) -> None:
    path = _spec_file(tmp_path, value)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert len(e.value.problems) == 1 and "\n" not in str(e.value)
    assert str(e.value).startswith(f"{path}: data.train_subset: {value!r} → ")
    assert allowed in str(e.value)
