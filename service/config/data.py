"""The `data:` block of a spec and the cheap checks on it, without torch.

Spec validation and `check_available` run in the sweep's driver, which never imports torch (its
memory); `service.data` builds the datasets from these configs in the trial's workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", *T10K)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel mean and std in [0, 1] units


@dataclass(frozen=True)
class Dataset:
    """A dataset a spec may name, everything known of it in one record: its native channels,
    classes (None: its tree's class folders), how many images it has where that is known
    without reading it (`split_images`, split by data.val_fraction; `train_images`, the
    official training split, whose test split validates), the torchvision class that reads it
    (`torchvision`: class, folder under data.root, the files it needs there), its published
    normalisation (None: computed on each seed's training split), whether it can be downloaded
    and the function that builds it ("module:function" under service.training, torch). A new
    dataset is one record here and its builder (docs/architecture.md)."""

    builder: str
    channels: int
    classes: int | None
    split_images: int | None = None
    train_images: int | None = None
    torchvision: tuple[str, str, tuple[str, ...]] | None = None
    stats: Stats | None = None
    downloadable: bool = False
    needs_root: bool = True


_BUILD = "service.training.data"
DATASETS: dict[str, Dataset] = {
    "digits": Dataset(f"{_BUILD}:build_digits", 1, 10, split_images=1797, needs_root=False),
    "mnist": Dataset(f"{_BUILD}:build_torchvision", 1, 10, train_images=60_000,
                     torchvision=("MNIST", "MNIST/raw", _IDX_FILES),
                     stats=((0.1307,), (0.3081,)), downloadable=True),
    "mnist_test": Dataset(f"{_BUILD}:build_t10k", 1, 10, split_images=10_000,
                          stats=((0.1307,), (0.3081,))),  # MNIST's training-set statistics
    "fashion_mnist": Dataset(f"{_BUILD}:build_torchvision", 1, 10, train_images=60_000,
                             torchvision=("FashionMNIST", "FashionMNIST/raw", _IDX_FILES),
                             stats=((0.2860,), (0.3530,)), downloadable=True),
    "cifar10": Dataset(f"{_BUILD}:build_torchvision", 3, 10, train_images=50_000,
                       torchvision=("CIFAR10", "cifar-10-batches-py", _CIFAR10_FILES),
                       stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                       downloadable=True),
    "cifar100": Dataset(f"{_BUILD}:build_torchvision", 3, 100, train_images=50_000,
                        torchvision=("CIFAR100", "cifar-100-python", ("train", "test", "meta")),
                        stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
                        downloadable=True),
    "imagefolder": Dataset(f"{_BUILD}:build_imagefolder", 3, None,
                           stats=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),  # ImageNet's
}


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
    dataset: str = Field("digits", json_schema_extra={"enum": list(DATASETS)})
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

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError("Input should be " + ", ".join(map(repr, DATASETS)))
        return name

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
    info = DATASETS.get(dataset)
    if info is None:
        return None
    if info.train_images is not None:
        return info.train_images
    if info.split_images is None or not isinstance(val_fraction, float):
        return None
    return info.split_images - math.ceil(info.split_images * val_fraction)


def torchvision_files(name: str, root: Path) -> tuple[Path, list[str]]:
    """The folder torchvision looks in under `root` and the files it requires there."""
    _, folder, files = DATASETS[name].torchvision
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
    info = DATASETS[cfg.dataset]
    if cfg.download and not info.downloadable and info.needs_root:
        if cfg.dataset == "mnist_test":
            raise DataError("mnist_test cannot be downloaded: put MNIST's two t10k files in "
                            "data.root, or use dataset: mnist with download: true")
        return  # the builder says what to do instead
    if not info.needs_root or cfg.download:
        return
    if cfg.root is None:
        raise DataError(f"dataset {cfg.dataset!r} needs `data.root`: the folder that holds (or,"
                        " with `data.download: true`, will receive) its files")
    root = Path(cfg.root).expanduser().resolve()
    if info.torchvision is None:
        if cfg.dataset == "mnist_test":
            t10k_paths(root)
        elif not root.is_dir():
            raise DataError(f"{cfg.dataset} root {root} is not a directory")
        return
    where, files = torchvision_files(cfg.dataset, root)
    missing = [f for f in files if not (where / f).is_file()]
    if missing:
        raise DataError(f"{cfg.dataset} not found: no {where / missing[0]} (torchvision needs "
                        f"{len(files)} files in {where}). Set `data.download: true` to download "
                        f"it, or point `data.root` at the folder that contains "
                        f"{where.relative_to(root)}/")
