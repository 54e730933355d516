"""The training loop without Ray: reports, exact resume, divergence, the CLI and real MNIST."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.config.train import TrainConfig
from service.training.data import split_indices, tensor_datasets
from service.training.datafiles import load_idx_pair
from service.training.loop import CHECKPOINT_FILE, fit, load_checkpoint

REQUIRED = {"epoch", "train_loss", "val_loss", "val_acc", "lr", "epoch_s", "images_per_s",
            "status"}
MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def small_config(**overrides) -> TrainConfig:
    base = TrainConfig(model="lenet5", epochs=4, num_threads=1)
    return base.with_overrides(overrides)


def collect(cfg: TrainConfig, **kwargs) -> list[dict]:
    reports: list[dict] = []

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            assert (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file()
        reports.append(dict(metrics, checkpoint_dir=checkpoint_dir))

    fit(cfg, report, **kwargs)
    return reports


def test_fit_reports_every_epoch_and_learns():
    reports = collect(small_config())
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    for r in reports:
        assert REQUIRED <= set(r)
        assert r["images_per_s"] > 0 and r["epoch_s"] > 0
    assert [r["status"] for r in reports] == ["running"] * 3 + ["completed"]
    assert reports[-1]["val_acc"] > 0.5 > reports[0]["val_loss"] / 10
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    # cosine schedule: the learning rate falls every epoch
    lrs = [r["lr"] for r in reports]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(0.05)


def test_temporary_checkpoints_are_removed_after_report():
    reports = collect(small_config(epochs=1))
    assert not Path(reports[0]["checkpoint_dir"]).exists()


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    cfg = small_config(hflip=True, crop="random", crop_padding=2, dropout=0.3)
    straight = collect(cfg)
    first = collect(cfg.model_copy(update={"epochs": 4}), checkpoint_root=tmp_path)
    ckpt_2 = first[1]["checkpoint_dir"]
    state = load_checkpoint(ckpt_2)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    resumed = collect(cfg, resume_from=ckpt_2)
    assert [r["epoch"] for r in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_acc"] == b["val_acc"]
        assert a["lr"] == pytest.approx(b["lr"])


def test_checkpoint_loads_with_weights_only(tmp_path):
    collect(small_config(epochs=1), checkpoint_root=tmp_path)
    path = tmp_path / "epoch_0001" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    assert state["config"]["model"] == "lenet5"
    assert "features.0.weight" in state["model"]


def test_divergence_is_reported_not_raised():
    reports = collect(small_config(lr=1e8, momentum=0.0, epochs=3))
    last = reports[-1]
    assert last["status"] == "diverged"
    assert math.isnan(last["train_loss"]) and last["val_acc"] == 0.0
    assert len(reports) <= 3


def test_with_overrides_routes_each_key():
    cfg = TrainConfig(model="zfnet").with_overrides(
        {"lr": 0.1, "hflip": True, "val_fraction": 0.3, "conv1_kernel": 11, "image_size": 227})
    assert cfg.lr == 0.1
    assert cfg.data.augmentation.hflip is True
    assert cfg.data.val_fraction == 0.3
    assert cfg.knobs == {"conv1_kernel": 11}
    assert cfg.data.image_size == 227  # a data field: the model takes its size from the data
    assert cfg.model_knobs() == {"conv1_kernel": 11, "image_size": 227}
    with pytest.raises(ValueError, match="conv1_stride"):
        TrainConfig(model="alexnet").with_overrides({"conv1_stride": 0})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "service.train", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_lenet5_on_digits_reaches_97_percent():
    proc = run_cli("--model", "lenet5", "--dataset", "digits", "--epochs", "10")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 10
    val_acc = float(lines[-1].split("val_acc")[1].split()[0])
    assert val_acc >= 0.97


@pytest.mark.slow
def test_cli_zfnet_with_knobs_runs_three_epochs():
    proc = run_cli("--model", "zfnet", "--epochs", "2", "width_mult=0.125", "image_size=99",
                   "fc_width=64", "lrn=false")
    assert proc.returncode == 0, proc.stderr
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("epoch")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["--model", "alexnet", "conv1_stride=0"], "conv1_stride"),
    (["--model", "lenet5", "image_size=28"], "image_size=28"),
    (["--model", "lenet5", "not_a_pair"], "key=value"),
    (["--model", "vgg", "--epochs", "1"], "vgg"),
    (["--dataset", "mnist", "--root", "/nonexistent/mnist"], "download"),
])
def test_cli_bad_input_is_one_clear_line(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist (real MNIST files) absent")
def test_lenet5_on_real_mnist_reaches_two_percent_error():
    images, labels = load_idx_pair(MNIST / "t10k-images-idx3-ubyte.gz",
                                   MNIST / "t10k-labels-idx1-ubyte.gz")
    train_idx, val_idx = split_indices(labels, val_fraction=0.2, seed=0)
    assert (len(train_idx), len(val_idx)) == (8000, 2000)
    data = tensor_datasets(images, labels, train_idx, val_idx, image_size=32, in_channels=1,
                           num_classes=10)
    cfg = TrainConfig(model="lenet5", epochs=15, num_threads=2)
    reports = collect(cfg, datasets=data)
    assert 1 - reports[-1]["val_acc"] <= 0.02
