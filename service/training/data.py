"""Datasets for the sweeps: the embedded digits default, torchvision datasets, augmentation.

`build_datasets` returns train/val datasets of `(float32 (C, H, W), int label)` items, resized
to the model's input, adapted to its channels and normalised; per item (transforms v2):
to float [0, 1] -> resize -> grey<->RGB -> [train only: crop, flip, jitter, PCA lighting]
-> normalise. Every user-facing problem raises `DataError` with one printable message.
- digits: sklearn's 1,797 real 8x8 digits, seeded stratified split, resized ONCE per size and
  kept in memory; mean/std computed on the train split of each seed (not fixed constants).
- mnist_test: MNIST's test set alone (the t10k idx pair in data.root), split like digits.
- mnist, fashion_mnist, cifar10, cifar100: torchvision's classes read the official files (test
  split = validation); the decoded uint8 arrays stay in memory, cached per process.
- imagefolder: class-per-folder tree; `root/train` + `root/val` if both exist, else split;
  each file decoded by service.training.images.load_image (a broken one: one DataError line).
The files themselves are read by service.training.datafiles.
"""

import functools
import importlib
import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from service.config.data import DATASETS, AugmentConfig, DataConfig, DataError, check_available
from service.training.cache import cached_arrays, key, sklearn_version
from service.training.images import image_folders, load_image
from service.training.subset import subset_train
from service.training.transforms import (
    Lighting,
    Standardise,
    adapt_stats,
    augment_steps,
    augments,
    channel_step,
    compose,
    pca_lighting_basis,
)

_LIGHTING_SAMPLE = 256  # train images for the PCA basis: plenty for a 3x3 covariance


@dataclass
class Datasets:
    """What `build_datasets` returns; items are (float tensor (C, H, W), int label)."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    # Normalisation applied to the items (per produced channel), so that analyses can show
    # images in [0, 1] again: x01 = x * std + mean. None when unknown.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class TensorImageDataset(Dataset):
    """Images in memory as one (N, C, H, W) tensor, a per-item transform, and the `indices` of
    this split (so splits share one tensor instead of copying it)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any = None,
                 indices: Any = None) -> None:
        self.images, self.labels, self.transform = images, labels.long(), transform
        self.indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.images[int(self.indices[i])], self.labels[int(self.indices[i])]
        return (self.transform(x) if self.transform is not None else x), int(y)

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this split, in item order."""
        return self.labels[self.indices]


class _TransformSubset(Dataset):
    """A subset of a PIL-yielding dataset (ImageFolder) with its own transform."""

    def __init__(self, base: Any, indices: np.ndarray, transform: Any) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[int(self.indices[i])]
        return self.transform(img), int(label)

    @property
    def targets(self) -> np.ndarray:
        """Labels of this subset, in item order (read from the folder names, no image)."""
        return np.asarray(self.base.targets)[self.indices]


def split_indices(labels: Any, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index split by `seed`, stratified by label when possible."""
    labels = np.asarray(labels)
    n_val = math.ceil(len(labels) * val_fraction)
    if n_val < 1 or n_val >= len(labels):
        raise DataError(f"cannot split {len(labels)} images with data.val_fraction="
                        f"{val_fraction}: one side would be empty")

    def split() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split  # lazily: ~80 MB with scipy

        idx = np.arange(len(labels))
        try:
            tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed,
                                      stratify=labels)
        except ValueError:  # a class with < 2 images, or fewer val slots than classes
            tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed)
        return {"train": np.sort(tr), "val": np.sort(va)}

    # one sklearn split per node and labels: a trial's new process reads it from disk
    found = cached_arrays(f"split-{key(sklearn_version(), labels, val_fraction, seed)}", split)
    return found["train"], found["val"]


def tensor_datasets(
    images: torch.Tensor, labels: torch.Tensor, train_idx: Any, val_idx: Any, *,
    image_size: int, in_channels: int, num_classes: int | None = None,
    augmentation: AugmentConfig | None = None, mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None, seed: int = 0,
) -> Datasets:
    """`Datasets` over in-memory images (N, H, W) or (N, C, H, W), uint8 or float in [0, 1],
    split by index (e.g. `load_idx_pair` + `split_indices`). mean/std (native channels)
    default to the statistics of up to 10,000 train images; `seed` picks the lighting sample."""
    from torchvision.transforms import v2

    _check_shape_args(image_size, in_channels)
    aug, size = augmentation or AugmentConfig(), image_size
    images = images.unsqueeze(1) if images.dim() == 3 else images
    # copies: the digits split is cached, and a caller editing .indices must not change it
    train_idx, val_idx = (torch.as_tensor(i).long().clone() for i in (train_idx, val_idx))
    native, scale = images.shape[1], 255.0 if images.dtype == torch.uint8 else 1.0
    if mean is None or std is None:
        x = images[train_idx[:10_000]].double() / scale
        mean, std = tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())
    pre: list[nn.Module] = []
    if images.dtype == torch.uint8:
        pre.append(v2.ToDtype(torch.float32, scale=True))
    if tuple(images.shape[-2:]) != (size, size):
        pre.append(v2.Resize([size, size], antialias=True))
    pre += channel_step(native, in_channels)
    lighting = None
    if aug.lighting > 0:  # basis from train images in [0, 1] with the produced channels
        g = torch.Generator().manual_seed(seed)
        pick = train_idx[torch.randperm(len(train_idx), generator=g)[:_LIGHTING_SAMPLE]]
        sample = images[pick].float() / scale
        for step in channel_step(native, in_channels):
            sample = step(sample)
        lighting = Lighting(*pca_lighting_basis(sample), aug.lighting)
    stats = adapt_stats((mean, std), in_channels)
    t_train = compose(pre, augment_steps(aug, size, lighting), stats)
    n_cls = num_classes or int(labels.max()) + 1
    return Datasets(TensorImageDataset(images, labels, t_train, train_idx),
                    TensorImageDataset(images, labels, compose(pre, [], stats), val_idx),
                    n_cls, in_channels, size, *stats)


@functools.lru_cache(maxsize=4)
def _digits_resized(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All 1,797 digits resized once per size: images (N,1,S,S) float32 in [0,1], labels, and
    per-image pixel mean and mean square (so any split's mean/std costs O(N), not a copy).
    The resize is torchvision's (bilinear, antialiased) done by torch alone."""

    def load() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits  # lazily, and once per node (the cache)

        d = load_digits()
        return {"images": d.images, "target": d.target}

    d = cached_arrays(f"digits-{sklearn_version()}", load)
    x = torch.from_numpy(d["images"]).float().div_(16.0).unsqueeze(1)  # values 0..16 -> [0, 1]
    if size != 8:
        x = nn.functional.interpolate(x, size=[size, size], mode="bilinear", align_corners=False,
                                      antialias=True).clamp_(0.0, 1.0)
    x = x.contiguous()
    return x, torch.from_numpy(d["target"]).long(), x.mean((1, 2, 3)), x.square().mean((1, 2, 3))


@functools.lru_cache(maxsize=64)
def _digits_split(size: int, seed: int, val_fraction: float) -> tuple[Any, Any, float, float]:
    _, labels, m, sq = _digits_resized(size)
    tr, va = split_indices(labels.numpy(), val_fraction, seed)
    mean = float(m[tr].double().mean())
    std = math.sqrt(max(float(sq[tr].double().mean()) - mean * mean, 1e-12))
    return tr, va, mean, std


def _check_shape_args(size: int, in_channels: int) -> None:
    if in_channels not in (1, 3):
        raise DataError(f"in_channels={in_channels}: only 1 (grey) or 3 (RGB) is supported")
    if size < 1:
        raise DataError(f"image_size={size}: must be a positive number of pixels")


def build_imagefolder(cfg: DataConfig, root: Path, size: int, in_channels: int,
                      seed: int) -> Datasets:
    """A tree of class folders under `root` (root/train + root/val, or split by
    data.val_fraction), each file decoded by service.training.images.load_image."""
    import torchvision.datasets as tvd
    from torchvision.transforms import v2

    if cfg.download:
        raise DataError("data.download is not supported for imagefolder: put the tree at "
                        f"data.root ({root}) yourself")
    if not root.is_dir():
        raise DataError(f"imagefolder: data.root {root} is not a directory")
    aug, chan = cfg.augmentation, channel_step(3, in_channels)
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    val_pre = [*to_float, v2.Resize(size, antialias=True), v2.CenterCrop(size), *chan]
    train_pre = val_pre  # photos are not square: shorter side to `size`, centre square
    if aug.crop == "random_resized":  # crop the full-resolution photo, not the resized square
        rrc = v2.RandomResizedCrop(size, scale=(aug.crop_scale_min, 1.0), antialias=True)
        train_pre, aug = [*to_float, rrc, *chan], aug.model_copy(update={"crop": "none"})
    try:
        folders = image_folders(root)  # root/train and root/val, or root
        if len(folders) == 2:
            tr_base, va_base = (tvd.ImageFolder(f, loader=load_image) for f in folders)
            if tr_base.classes != va_base.classes:
                raise DataError(f"imagefolder: {root}/train and {root}/val have different class "
                                f"folders ({len(tr_base.classes)} vs {len(va_base.classes)})")
            tr_idx, va_idx = np.arange(len(tr_base)), np.arange(len(va_base))
        else:
            tr_base = va_base = tvd.ImageFolder(root, loader=load_image)
            tr_idx, va_idx = split_indices(tr_base.targets, cfg.val_fraction, seed)
    except FileNotFoundError as e:  # no class folders / no image files
        raise DataError(f"imagefolder: {e} (data.root needs one sub-folder of images per "
                        "class, or train/ and val/ folders that each have them)") from e
    lighting = None
    if aug.lighting > 0:  # colour statistics from a small sample of train images
        pick = np.random.default_rng(seed).permutation(tr_idx)[:64]
        small = v2.Compose([*to_float, v2.Resize(32, antialias=True), v2.CenterCrop(32), *chan])
        sample = torch.stack([small(tr_base[int(i)][0]) for i in pick])
        lighting = Lighting(*pca_lighting_basis(sample), aug.lighting)
    stats = adapt_stats(DATASETS[cfg.dataset].stats, in_channels)
    t_train = compose(train_pre, augment_steps(aug, size, lighting), stats)
    return Datasets(_TransformSubset(tr_base, tr_idx, t_train),
                    _TransformSubset(va_base, va_idx, compose(val_pre, [], stats)),
                    len(tr_base.classes), in_channels, size, stats[0], stats[1])


def build_datasets(
    cfg: DataConfig, *, image_size: int, in_channels: int, seed: int = 0
) -> Datasets:
    """Build the train and validation datasets described by `cfg`.

    `image_size` and `in_channels` are the model's input; `cfg.image_size`, when set, overrides
    the size. `seed` fixes the train/val split where the dataset has none (digits, a flat
    imagefolder), the lighting sample and the `cfg.train_subset` images (service.training.subset).
    Raises DataError for every user-facing problem.
    """
    built = _build(cfg, image_size=image_size, in_channels=in_channels, seed=seed)
    return subset_train(built, cfg.train_subset, seed, cfg.dataset)


def _build(cfg: DataConfig, *, image_size: int, in_channels: int, seed: int) -> Datasets:
    size = cfg.image_size if cfg.image_size is not None else image_size
    _check_shape_args(size, in_channels)
    info = DATASETS[cfg.dataset]
    root = None
    if info.needs_root:
        if cfg.root is None:
            raise DataError(f"dataset {cfg.dataset!r} needs `data.root`: the folder that holds "
                            "(or, with `data.download: true`, will receive) its files")
        root = Path(cfg.root).expanduser().resolve()
    module, function = info.builder.split(":")
    return getattr(importlib.import_module(module), function)(cfg, root, size, in_channels, seed)


def build_digits(cfg: DataConfig, root: None, size: int, in_channels: int,
                 seed: int) -> Datasets:
    """scikit-learn's digits, resized once per size, split by data.val_fraction and `seed`,
    standardised with the training split's mean and std."""
    images, labels, _, _ = _digits_resized(size)
    tr, va, mean, std = _digits_split(size, seed, cfg.val_fraction)
    if not augments(cfg.augmentation):  # nothing but standardising: no torchvision here
        std_items = Standardise((mean,) * in_channels, (std,) * in_channels, in_channels)
        tr, va = (torch.as_tensor(i).long().clone() for i in (tr, va))
        return Datasets(TensorImageDataset(images, labels, std_items, tr),
                        TensorImageDataset(images, labels, std_items, va), 10, in_channels,
                        size, std_items.mean_tuple, std_items.std_tuple)
    return tensor_datasets(images, labels, tr, va, image_size=size, in_channels=in_channels,
                           num_classes=10, augmentation=cfg.augmentation, mean=(mean,),
                           std=(std,), seed=seed)


def build_t10k(cfg: DataConfig, root: Path, size: int, in_channels: int, seed: int) -> Datasets:
    """MNIST's t10k pair in `root`, split by data.val_fraction and `seed`."""
    from service.training.datafiles import load_t10k

    check_available(cfg)
    images, labels = load_t10k(str(root))
    tr, va = split_indices(labels.numpy(), cfg.val_fraction, seed)
    info = DATASETS[cfg.dataset]
    return tensor_datasets(images, labels, tr, va, image_size=size, in_channels=in_channels,
                           num_classes=info.classes, augmentation=cfg.augmentation,
                           mean=info.stats[0], std=info.stats[1], seed=seed)


def build_torchvision(cfg: DataConfig, root: Path, size: int, in_channels: int,
                      seed: int) -> Datasets:
    """A torchvision dataset's official files in `root`: its training split trains, its test
    split validates."""
    from service.training.datafiles import load_torchvision

    images, labels, n_train = load_torchvision(cfg.dataset, str(root), cfg.download)
    info = DATASETS[cfg.dataset]
    return tensor_datasets(images, labels, torch.arange(n_train),
                           torch.arange(n_train, len(images)), image_size=size,
                           in_channels=in_channels, num_classes=info.classes,
                           augmentation=cfg.augmentation, mean=info.stats[0],
                           std=info.stats[1], seed=seed)
