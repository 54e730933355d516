"""Tests for service/data.py: the digits default, the real on-disk formats torchvision reads
(MNIST idx, CIFAR pickles, ImageFolder PNGs), DataError messages and the PCA lighting noise."""

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image
from pydantic import ValidationError
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from service.config.data import DATASETS, AugmentConfig, DataConfig, DataError
from service.training.data import build_datasets, split_indices, tensor_datasets
from service.training.datafiles import load_idx_pair
from service.training.transforms import Lighting, pca_lighting_basis

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MNIST_T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _unnormalise(x: torch.Tensor, ds) -> torch.Tensor:
    """Item back to [0, 1] using the mean/std the Datasets reports."""
    mean = torch.tensor(ds.mean).view(-1, 1, 1)
    std = torch.tensor(ds.std).view(-1, 1, 1)
    return x * std + mean


def _stack(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


# ---------------------------------------------------------------- digits (embedded default)


def test_registry_constants() -> None:
    assert DATASETS["cifar100"].classes == 100 and DATASETS["mnist"].channels == 1


@pytest.mark.parametrize("size", [32, 67])
@pytest.mark.parametrize("channels", [1, 3])
def test_digits_shapes_labels_and_split_sizes(size: int, channels: int) -> None:
    d = build_datasets(DataConfig(), image_size=size, in_channels=channels)
    assert len(d.train) + len(d.val) == 1797
    assert (d.num_classes, d.in_channels, d.image_size) == (10, channels, size)
    for ds in (d.train, d.val):
        x, y = ds[5]
        assert x.shape == (channels, size, size) and x.dtype == torch.float32
        assert isinstance(y, int) and 0 <= y <= 9
    assert set(d.train.targets.tolist()) == set(range(10))


def test_digits_values_match_sklearn_and_train_split_is_normalised() -> None:
    d = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=3)
    raw = torch.from_numpy(load_digits().images).float() / 16.0
    j = int(d.val.indices[7])
    assert torch.allclose(_unnormalise(d.val[7][0], d)[0], raw[j], atol=1e-5)
    # mean/std come from the train split, so the train items are standardised exactly
    x = _stack(d.train)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-3


def test_digits_split_is_seeded_and_stratified() -> None:
    a = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=0)
    b = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=0)
    c = build_datasets(DataConfig(), image_size=8, in_channels=1, seed=1)
    assert torch.equal(a.train.indices, b.train.indices)
    assert not torch.equal(a.train.indices, c.train.indices)
    assert not set(a.train.indices.tolist()) & set(a.val.indices.tolist())
    all_counts = np.bincount(load_digits().target)
    val_counts = np.bincount(a.val.targets.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * all_counts) <= 1)
    half = build_datasets(DataConfig(val_fraction=0.5), image_size=8, in_channels=1)
    assert len(half.val) == 899


def test_digits_resized_tensors_are_cached_and_shared() -> None:
    # a sweep builds many times per process: the resize happens once per size, and every
    # build (any seed, any channel count) indexes the same tensor instead of copying it
    a = build_datasets(DataConfig(), image_size=40, in_channels=3, seed=5)
    b = build_datasets(DataConfig(), image_size=40, in_channels=1, seed=6)
    assert a.train.images is b.val.images
    assert a.train.images.shape == (1797, 1, 40, 40) and a.train.images.dtype == torch.float32


def test_digits_val_is_deterministic_train_is_augmented() -> None:
    torch.manual_seed(0)
    aug = AugmentConfig(crop="random", crop_padding=4, hflip=True)
    d = build_datasets(DataConfig(augmentation=aug), image_size=32, in_channels=3)
    assert torch.equal(d.val[3][0], d.val[3][0])
    reads = [d.train[3][0] for _ in range(8)]
    assert any(not torch.equal(reads[0], r) for r in reads[1:])
    assert all(r.shape == (3, 32, 32) for r in reads)
    plain = build_datasets(DataConfig(), image_size=32, in_channels=3)
    assert torch.equal(plain.train[3][0], plain.train[3][0])


@pytest.mark.parametrize(
    "aug",
    [
        AugmentConfig(crop="random_resized", crop_scale_min=0.5),
        AugmentConfig(color_jitter=0.4, lighting=0.1, hflip=True),
    ],
)
def test_digits_other_augmentations_through_a_loader(aug: AugmentConfig) -> None:
    d = build_datasets(DataConfig(augmentation=aug), image_size=32, in_channels=3)
    x, y = next(iter(DataLoader(d.train, batch_size=64, shuffle=True, num_workers=0)))
    assert x.shape == (64, 3, 32, 32) and y.dtype == torch.int64
    assert torch.isfinite(x).all()


def test_config_image_size_overrides_model_size() -> None:
    d = build_datasets(DataConfig(image_size=16), image_size=32, in_channels=1)
    assert d.image_size == 16 and d.train[0][0].shape == (1, 16, 16)


def test_config_validation_and_argument_errors() -> None:
    with pytest.raises(ValidationError):
        DataConfig(datset="mnist")
    with pytest.raises(ValidationError):
        DataConfig(val_fraction=1.0)
    with pytest.raises(ValidationError):
        AugmentConfig(crop_scale_min=0.0)
    with pytest.raises(DataError, match="in_channels"):
        build_datasets(DataConfig(), image_size=32, in_channels=2)
    with pytest.raises(DataError, match=r"data\.root"):
        build_datasets(DataConfig(dataset="cifar10"), image_size=32, in_channels=3)


# ---------------------------------------------------------------- MNIST idx format


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The real IDX layout: magic (0x08 = ubyte, then ndim), big-endian dims, raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 40, n_test: int = 24) -> dict:
    raw = root / folder / "raw"  # torchvision: {root}/{ClassName}/raw/<unzipped files>
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_idx_files_round_trip(tmp_path: Path, name: str, folder: str) -> None:
    written = _write_mnist(tmp_path, folder)
    d = build_datasets(DataConfig(dataset=name, root=str(tmp_path)), image_size=28, in_channels=1)
    assert (len(d.train), len(d.val), d.num_classes) == (40, 24, 10)
    for ds, split in ((d.train, "train"), (d.val, "t10k")):
        images, labels = written[split]
        for i in (0, 9, len(ds) - 1):
            x, y = ds[i]
            pixels = torch.round(_unnormalise(x, d) * 255)[0]
            assert torch.equal(pixels, torch.from_numpy(images[i]).float())
            assert y == int(labels[i])
    big = build_datasets(DataConfig(dataset=name, root=str(tmp_path)), image_size=32, in_channels=3)
    assert big.train[0][0].shape == (3, 32, 32)


def test_load_idx_pair_plain_and_errors(tmp_path: Path) -> None:
    written = _write_mnist(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    images, labels = load_idx_pair(raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte")
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(written["t10k"][0]))
    with pytest.raises(DataError, match="magic"):  # swapped files
        load_idx_pair(raw / "t10k-labels-idx1-ubyte", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="has 24 images but .* has 40 labels"):
        load_idx_pair(raw / "t10k-images-idx3-ubyte", raw / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="nowhere"):
        load_idx_pair(tmp_path / "nowhere", raw / "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- CIFAR pickles


def _write_cifar(root: Path, cls: type, n_per_file: int = 4) -> dict:
    """CIFAR's python pickles: dicts with str keys (torchvision unpickles the original Python 2
    files with encoding="latin1", so their keys arrive as str), data uint8 (N, 3072) in
    R-plane, G-plane, B-plane order, labels a list."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    label_key = "labels" if cls is tvd.CIFAR10 else "fine_labels"
    n_classes = 10 if cls is tvd.CIFAR10 else 100
    out = {}
    for name, _ in cls.train_list + cls.test_list:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_classes, n_per_file).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f, protocol=2)
        out[name] = (data, labels)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(n_classes)]}, f, protocol=2)
    return out


def _accept_written_md5s(monkeypatch: pytest.MonkeyPatch, root: Path, cls: type) -> None:
    """torchvision 0.29's CIFAR10._check_integrity and _load_meta compare every file's md5
    with the OFFICIAL checksums (class attributes train_list / test_list / meta), which no
    synthetic file can match. So, inside this test only, the class's expected checksums are
    replaced by those of the files we wrote; the whole real loading path (file discovery,
    unpickling, reshaping, meta) still runs unchanged."""
    folder = root / cls.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(cls, "train_list", [[n, md5(n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


@pytest.mark.parametrize(("name", "cls"), [("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)])
def test_cifar_pickles_round_trip(tmp_path: Path, monkeypatch, name: str, cls: type) -> None:
    written = _write_cifar(tmp_path, cls)
    _accept_written_md5s(monkeypatch, tmp_path, cls)
    d = build_datasets(DataConfig(dataset=name, root=str(tmp_path)), image_size=32, in_channels=3)
    n_train = 4 * len(cls.train_list)
    assert (len(d.train), len(d.val), d.num_classes) == (n_train, 4, DATASETS[name].classes)
    first_train, test_name = cls.train_list[0][0], cls.test_list[0][0]
    for ds, (data, labels) in ((d.train, written[first_train]), (d.val, written[test_name])):
        x, y = ds[1]
        assert x.shape == (3, 32, 32) and y == labels[1]
        pixels = torch.round(_unnormalise(x, d) * 255)
        assert torch.equal(pixels, torch.from_numpy(data[1].reshape(3, 32, 32)).float())
    grey = build_datasets(
        DataConfig(dataset=name, root=str(tmp_path)), image_size=24, in_channels=1
    )
    assert grey.train[0][0].shape == (1, 24, 24) and len(grey.mean) == 1


def test_cifar_with_unofficial_files_fails_integrity_clearly(tmp_path: Path) -> None:
    _write_cifar(tmp_path, tvd.CIFAR10)  # real layout, but not the official md5s
    with pytest.raises(DataError, match="integrity check") as e:
        build_datasets(
            DataConfig(dataset="cifar10", root=str(tmp_path)), image_size=32, in_channels=3
        )
    assert "cifar-10-batches-py" in str(e.value) and "download" in str(e.value)


@pytest.mark.parametrize(
    ("name", "inner"),
    [
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_files_without_download_name_path_and_flag(
    tmp_path: Path, name: str, inner: str
) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        build_datasets(DataConfig(dataset=name, root=str(root)), image_size=32, in_channels=1)
    msg = str(e.value)
    assert str(root / inner) in msg and "data.download: true" in msg and "\n" not in msg


# ---------------------------------------------------------------- ImageFolder


def _write_pngs(folder: Path, classes: tuple[str, ...], per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (14, 20, 3), dtype=np.uint8)  # not square on purpose
            Image.fromarray(pixels).save(folder / c / f"{i}.png")


def test_imagefolder_flat_tree_is_split_by_seed(tmp_path: Path) -> None:
    _write_pngs(tmp_path, ("cat", "dog", "emu"), per_class=6, seed=0)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), val_fraction=1 / 3)
    a = build_datasets(cfg, image_size=16, in_channels=3, seed=0)
    b = build_datasets(cfg, image_size=16, in_channels=3, seed=7)
    assert (a.num_classes, len(a.train), len(a.val)) == (3, 12, 6)
    assert sorted(a.val[i][1] for i in range(6)) == [0, 0, 1, 1, 2, 2]  # stratified
    assert not set(a.train.indices) & set(a.val.indices)
    assert set(a.val.indices) != set(b.val.indices)
    x, _ = a.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(a.val[2][0], a.val[2][0])


def test_imagefolder_train_val_subfolders(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", ("a", "b", "c"), per_class=4, seed=1)
    _write_pngs(tmp_path / "val", ("a", "b", "c"), per_class=2, seed=2)
    aug = AugmentConfig(crop="random_resized", hflip=True, lighting=0.1, color_jitter=0.2)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), augmentation=aug)
    d = build_datasets(cfg, image_size=16, in_channels=1)
    assert (d.num_classes, len(d.train), len(d.val)) == (3, 12, 6)
    assert d.train[0][0].shape == (1, 16, 16) and d.val[5][0].shape == (1, 16, 16)
    assert d.val[5][1] == 2


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        build_datasets(
            DataConfig(dataset="imagefolder", root=str(tmp_path / "x")),
            image_size=16,
            in_channels=3,
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="class folder"):
        build_datasets(
            DataConfig(dataset="imagefolder", root=str(tmp_path / "empty")),
            image_size=16,
            in_channels=3,
        )


# ---------------------------------------------------------------- PCA lighting


def _correlated_rgb(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, 1, 8, 8, generator=g)
    noise = torch.rand(n, 3, 8, 8, generator=g)
    return (0.7 * base + 0.3 * noise * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)).clamp(0, 1)


def test_pca_lighting_basis_is_the_colour_eigendecomposition() -> None:
    images = _correlated_rgb()
    eigval, eigvec = pca_lighting_basis(images)
    assert eigval.shape == (3,) and eigvec.shape == (3, 3)
    assert torch.allclose(eigvec.T @ eigvec, torch.eye(3), atol=1e-5)
    assert (eigval >= 0).all() and (eigval[:-1] >= eigval[1:]).all()
    cov = torch.from_numpy(np.cov(images.movedim(1, -1).reshape(-1, 3).numpy().T)).float()
    assert torch.allclose(cov @ eigvec, eigvec * eigval, atol=1e-5)
    u8 = pca_lighting_basis((images * 255).round().to(torch.uint8))[0]
    assert torch.allclose(u8, eigval, rtol=0.05)


def test_lighting_identity_and_per_image_shift() -> None:
    eigval, eigvec = pca_lighting_basis(_correlated_rgb())
    x = torch.rand(3, 10, 12)
    assert torch.equal(Lighting(eigval, eigvec, 0.0)(x), x)
    torch.manual_seed(0)
    diff = Lighting(eigval, eigvec, 0.1)(x) - x
    assert diff.abs().max() > 0
    assert torch.allclose(diff, diff[:, :1, :1].expand_as(diff), atol=1e-6)
    batch = torch.rand(5, 3, 4, 4)
    bdiff = Lighting(eigval, eigvec, 0.1)(batch) - batch
    assert torch.allclose(bdiff, bdiff[..., :1, :1].expand_as(bdiff), atol=1e-6)
    assert not torch.allclose(bdiff[0], bdiff[1])  # one draw per image


def test_lighting_offsets_follow_the_paper_distribution() -> None:
    # offset = eigvec @ (alpha * eigval): its coordinate along eigvec i has std sigma * eigval_i
    eigval, eigvec = torch.tensor([0.2, 0.05, 0.01]), torch.linalg.qr(torch.randn(3, 3))[0]
    torch.manual_seed(1)
    offsets = Lighting(eigval, eigvec, 0.1)(torch.zeros(20_000, 3, 1, 1)).view(-1, 3)
    coords = offsets @ eigvec
    assert torch.allclose(coords.std(0), 0.1 * eigval, rtol=0.05)


@pytest.mark.parametrize("channels", [1, 3])
def test_lighting_on_digits_is_a_uniform_shift(channels: int) -> None:
    cfg = DataConfig(augmentation=AugmentConfig(lighting=0.5))
    d = build_datasets(cfg, image_size=16, in_channels=channels)
    torch.manual_seed(2)
    diff = d.train[0][0] - d.train[0][0]
    assert diff.abs().max() > 0
    # grey repeated to RGB: the only colour direction is (1,1,1), so all channels shift alike
    assert torch.allclose(diff, diff[:1, :1, :1].expand_as(diff), atol=1e-5)


# ---------------------------------------------------------------- real MNIST test set


def test_real_mnist_t10k_files() -> None:
    folder = SHARED / "data" / "mnist"
    images_path = folder / "t10k-images-idx3-ubyte.gz"
    if not images_path.exists():
        pytest.skip(f"real MNIST test files not found in {folder}")
    images, labels = load_idx_pair(images_path, folder / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == MNIST_T10K_COUNTS
    assert int(images.max()) == 255 and 0.10 < float(images.float().mean()) / 255 < 0.16
    tr, va = split_indices(labels, 0.2, seed=0)
    d = tensor_datasets(images, labels, tr, va, image_size=32, in_channels=1)
    assert (len(d.train), len(d.val), d.num_classes) == (8000, 2000, 10)
    assert d.train[0][0].shape == (1, 32, 32)
    assert abs(d.mean[0] - 0.1325) < 0.01  # close to the published MNIST mean 0.1307


def test_mnist_test_dataset_splits_the_real_t10k_files(tmp_path: Path) -> None:
    folder = SHARED / "data" / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test files not found in {folder}")
    cfg = DataConfig(dataset="mnist_test", root=str(folder), val_fraction=0.2)
    d = build_datasets(cfg, image_size=32, in_channels=1, seed=3)
    assert (len(d.train), len(d.val), d.num_classes) == (8000, 2000, 10)
    _, labels = load_idx_pair(folder / "t10k-images-idx3-ubyte.gz",
                              folder / "t10k-labels-idx1-ubyte.gz")
    tr, va = split_indices(labels, 0.2, seed=3)  # the same seeded, stratified split
    assert torch.equal(d.val.indices, torch.as_tensor(va).long())
    val_counts = torch.bincount(labels[d.val.indices], minlength=10)
    assert (val_counts - torch.tensor(MNIST_T10K_COUNTS) * 0.2).abs().max() <= 1
    # Plain (un-gzipped) files work too; a folder without them is one DataError.
    import gzip

    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((folder / f"{name}.gz").read_bytes()))
    plain = build_datasets(cfg.model_copy(update={"root": str(tmp_path)}), image_size=32,
                           in_channels=1, seed=3)
    assert torch.equal(plain.train[5][0], d.train[5][0])
    with pytest.raises(DataError, match="mnist_test: no .*t10k-images-idx3-ubyte.gz"):
        build_datasets(DataConfig(dataset="mnist_test", root=str(tmp_path / "none")),
                       image_size=32, in_channels=1)
    with pytest.raises(DataError, match="cannot be downloaded"):
        build_datasets(DataConfig(dataset="mnist_test", root=str(folder), download=True),
                       image_size=32, in_channels=1)


def test_check_available_agrees_with_the_loader(tmp_path: Path) -> None:
    from service.config.data import check_available

    cfg = DataConfig(dataset="mnist", root=str(tmp_path))
    with pytest.raises(DataError, match="data.download: true"):
        check_available(cfg)
    _write_mnist(tmp_path, "MNIST")
    check_available(cfg)  # the files torchvision needs are there now
    build_datasets(cfg, image_size=32, in_channels=1)  # and the loader agrees
    check_available(DataConfig(dataset="mnist", root=str(tmp_path / "elsewhere"), download=True))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_torchvision_file_lists_match_torchvision(tmp_path: Path, name: str) -> None:
    # dataconfig lists the files without importing torchvision (the driver stays torch-free);
    # they must be the ones torchvision's own classes look for.
    import torchvision.datasets as tvd

    from service.config.data import torchvision_files

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
           "cifar100": tvd.CIFAR100}[name]
    where, files = torchvision_files(name, tmp_path)
    if name in ("mnist", "fashion_mnist"):
        assert where == tmp_path / cls.__name__ / "raw"
        assert files == [Path(url).name.removesuffix(".gz") for url, _ in cls.resources]
    else:
        assert where == tmp_path / cls.base_folder
        assert files == [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def build_tiny(cfg, root, size, in_channels, seed):
    """A throw-away dataset's builder: 20 random grey 6x6 images of two classes."""
    images, labels = torch.rand(20, 1, 6, 6), torch.arange(20) % 2
    tr, va = split_indices(labels.numpy(), cfg.val_fraction, seed)
    return tensor_datasets(images, labels, tr, va, image_size=size, in_channels=in_channels,
                           num_classes=2, seed=seed)


def test_a_new_dataset_is_one_record_and_its_builder(monkeypatch) -> None:
    from pydantic import ValidationError

    from service.config.data import Dataset
    from service.config.spec import parse_spec

    monkeypatch.setitem(DATASETS, "tiny", Dataset(f"{__name__}:build_tiny", channels=1,
                                                  classes=2, split_images=20, needs_root=False))
    d = build_datasets(DataConfig(dataset="tiny", train_subset=16), image_size=8, in_channels=3)
    assert (len(d.train), len(d.val), d.num_classes, d.in_channels) == (16, 4, 2, 3)
    assert d.train[0][0].shape == (3, 8, 8)
    with pytest.raises(ValidationError, match="at most 16"):  # the record's split size
        DataConfig(dataset="tiny", train_subset=17)
    spec = parse_spec({"name": "tiny", "data": {"dataset": "tiny"}, "model": {"family": "lenet5"},
                       "search": {"dropout": {"type": "choice", "values": [0.0, 0.5]}}})
    assert spec.data.dataset == "tiny"
