"""The `data:` block of a spec and the cheap checks on it, without torch.

Spec validation and `check_available` run in the sweep's driver, which never imports torch (its
memory); `service.data` builds the datasets from these configs in the trial's workers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DATASETS: tuple[str, ...] = ("digits", "mnist", "mnist_test", "fashion_mnist", "cifar10",
                             "cifar100", "imagefolder")
T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", *T10K)
NATIVE_CHANNELS: dict[str, int] = {
    "digits": 1, "mnist": 1, "mnist_test": 1, "fashion_mnist": 1, "cifar10": 3, "cifar100": 3,
    "imagefolder": 3,
}
#: None for imagefolder: the number of class folders, known only once the tree is read.
NUM_CLASSES: dict[str, int | None] = {
    "digits": 10, "mnist": 10, "mnist_test": 10, "fashion_mnist": 10, "cifar10": 10,
    "cifar100": 100,
    "imagefolder": None,
}
# Images before the train/validation split: split by data.val_fraction (digits, mnist_test), or
# the official training split, with its own test split as validation (the torchvision ones).
# imagefolder's count is known only once the tree is read (build time).
SPLIT_IMAGES: dict[str, int] = {"digits": 1797, "mnist_test": 10_000}
TRAIN_IMAGES: dict[str, int] = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000,
                                "cifar100": 50_000}


class DataError(ValueError):
    """A user-facing data problem; the message is complete and meant to be printed as is."""


class AugmentConfig(BaseModel):
    """Train-time augmentation; everything is off by default and always off for validation."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    crop: Literal["none", "random", "random_resized"] = "none"
    """none: no cropping; random: a random square of the image size, after padding by crop_padding;
    random_resized: a random part (crop_scale_min to all of the area) resized to it."""
    crop_padding: int = Field(4, ge=0)
    """crop random: pixels of zero padding on each side before cropping."""
    crop_scale_min: float = Field(0.35, gt=0.0, le=1.0)
    """crop random_resized: the smallest share of the image's area a crop covers, (0, 1]."""
    hflip: bool = False
    """Flip each image horizontally with probability 0.5."""
    lighting: float = Field(0.0, ge=0.0)
    """AlexNet's PCA colour noise: the standard deviation of each principal component's
    per-image weight (AlexNet: 0.1); 0: off."""
    color_jitter: float = Field(0.0, ge=0.0)
    """Random brightness, contrast and saturation change of up to this factor; 0: off."""


class DataConfig(BaseModel):
    """Which dataset, where it lives and how it is prepared (the `data:` block of a spec)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    dataset: Literal["digits", "mnist", "mnist_test", "fashion_mnist", "cifar10", "cifar100",
                     "imagefolder"] = "digits"
    """digits: scikit-learn's 1,797 8x8 digits, built in; mnist, fashion_mnist, cifar10,
    cifar100: torchvision's official files in root (their test split validates); mnist_test:
    only MNIST's 10,000-image test set (the t10k idx pair, plain or .gz, in root), split like
    digits (seeded, stratified); imagefolder: one folder of images per class in root."""
    root: str | None = None
    """The folder that holds (or, with download, will receive) the dataset's files; needed by
    every dataset but digits."""
    download: bool = False
    """Download a torchvision dataset's files into root when missing (not mnist_test or
    imagefolder)."""
    image_size: int | None = Field(None, ge=1, le=4096)
    """Pixels per side the images are resized to; null: the model's input size."""
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Share held out for validation where the dataset has no split of its own (digits,
    mnist_test, an imagefolder without train/ and val/)."""
    train_subset: int | None = Field(None, ge=1, strict=True)
    """N (an integer; true is not 1): train on a stratified subset of N images of the training
    split, seeded by the train seed; the validation set is unchanged. null: the whole split."""
    augmentation: AugmentConfig = AugmentConfig()
    """Train-time augmentation; validation images are never augmented."""

    @field_validator("train_subset")
    @classmethod
    def _subset_fits(cls, n: int | None, info: ValidationInfo) -> int | None:
        size = train_split_size(info.data.get("dataset", ""), info.data.get("val_fraction"))
        if n is not None and size is not None and n > size:
            raise ValueError(f"must be at most {size}: the training split of "
                             f"{info.data['dataset']} has {size} images; leave train_subset "
                             "unset to train on all of them")
        return n


def train_split_size(dataset: str, val_fraction: Any) -> int | None:
    """Images in `dataset`'s training split, where known without reading it (else None); the
    split datasets keep `n - ceil(n * val_fraction)`, as scikit-learn's split does."""
    if dataset in TRAIN_IMAGES:
        return TRAIN_IMAGES[dataset]
    if dataset not in SPLIT_IMAGES or not isinstance(val_fraction, float):
        return None
    return SPLIT_IMAGES[dataset] - math.ceil(SPLIT_IMAGES[dataset] * val_fraction)


# Where torchvision's dataset classes look under data.root and the files they need there (the
# unpacked official files; tests check these against the classes' own lists).
TORCHVISION_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mnist": ("MNIST/raw", _IDX_FILES),
    "fashion_mnist": ("FashionMNIST/raw", _IDX_FILES),
    "cifar10": ("cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)),
                                        "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}


def torchvision_files(name: str, root: Path) -> tuple[Path, list[str]]:
    """The folder torchvision looks in and the files it requires there."""
    folder, files = TORCHVISION_FILES[name]
    return root / folder, list(files)


def t10k_paths(root: Path) -> tuple[Path, Path]:
    """The t10k image and label files in `root` (the .gz or the plain file); DataError if absent."""
    found = []
    for name in T10K:
        candidates = [root / f"{name}.gz", root / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DataError(f"mnist_test: no {candidates[0]} (or {candidates[1].name}) in "
                            "data.root: it needs MNIST's t10k-images-idx3-ubyte and "
                            "t10k-labels-idx1-ubyte files")
        found.append(path)
    return found[0], found[1]


def check_available(cfg: DataConfig) -> None:
    """Raise DataError (the same message loading would give) when the files `cfg` names are
    missing and will not be downloaded; a cheap look at the file system, no decoding."""
    if cfg.dataset == "mnist_test" and cfg.download:
        raise DataError("mnist_test cannot be downloaded: put MNIST's two t10k files in "
                        "data.root, or use dataset: mnist with download: true")
    if cfg.dataset == "digits" or cfg.download:
        return
    if cfg.root is None:
        raise DataError(f"dataset {cfg.dataset!r} needs `data.root`: the folder that holds (or,"
                        " with `data.download: true`, will receive) its files")
    root = Path(cfg.root).expanduser().resolve()
    if cfg.dataset == "imagefolder":
        if not root.is_dir():
            raise DataError(f"imagefolder root {root} is not a directory of class folders")
        return
    if cfg.dataset == "mnist_test":
        t10k_paths(root)
        return
    where, files = torchvision_files(cfg.dataset, root)
    missing = [f for f in files if not (where / f).is_file()]
    if missing:
        raise DataError(f"{cfg.dataset} not found: no {where / missing[0]} (torchvision needs "
                        f"{len(files)} files in {where}). Set `data.download: true` to download "
                        f"it, or point `data.root` at the folder that contains "
                        f"{where.relative_to(root)}/")
