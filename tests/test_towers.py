"""AlexNet's two-tower split: the grouped model's outputs, gradients and checkpoints, on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from service.config.train import TrainConfig
from service.models import build_model, count_params
from service.models.towers import TowerAlexNet, tower_devices
from service.training.data import tensor_datasets
from service.training.loop import CHECKPOINT_FILE, fit, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=67, width_mult=0.25, fc_width=64, num_classes=10, dropout=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_up_to_rounding(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal but for float summation order: max |difference| within 1e-5 of max |expected|."""
    scale = float(expected.detach().abs().max())
    assert scale > 0, what
    assert float((actual - expected).detach().abs().max()) <= 1e-5 * scale, what


def small_pair(**knobs) -> tuple[torch.nn.Module, TowerAlexNet]:
    torch.manual_seed(0)
    grouped = build_model("alexnet", **{**SMALL, **knobs})
    return grouped, TowerAlexNet.from_grouped(grouped, ("cpu", "cpu"))


@pytest.mark.parametrize("knobs", [
    {},  # AlexNet: LRN before the pools, dropout after FC6/FC7
    {"lrn_position": "after_pool", "pool": "plain", "dropout_position": "input"},
    {"adaptive_pool": 2, "activation": "tanh"},
    {"width_mult": 0.05},  # two maps per tower at conv1: the LRN halo is the whole neighbour
])
def test_split_equals_grouped_outputs_and_gradients(knobs):
    grouped, split = small_pair(**knobs)
    # Large inputs make LRN's denominator matter, so a tower that skipped its halo would differ.
    x = 20 * torch.randn(4, 3, 67, 67)
    y_grouped, y_split = grouped(x), split(x)
    assert_same_up_to_rounding(y_split, y_grouped, "logits")
    y_grouped.logsumexp(1).mean().backward()
    y_split.logsumexp(1).mean().backward()
    split_grads = split.grouped_grads()
    assert list(split_grads) == [name for name, _ in grouped.named_parameters()]
    for name, p in grouped.named_parameters():
        assert_same_up_to_rounding(split_grads[name], p.grad, name)


def test_each_tower_holds_half_of_every_split_layer():
    grouped, split = small_pair()
    halves = [count_params(t) for t in split.towers]
    assert halves[0] == halves[1]
    assert sum(halves) + count_params(split.fc8) == count_params(grouped)
    conv1, conv2, conv3 = split.towers[0].features[0], split.towers[0].features[4], \
        split.towers[0].features[8]
    assert conv1.in_channels == 3  # each tower sees the whole image
    assert conv2.in_channels == conv1.out_channels  # its own conv1 maps only
    assert conv3.in_channels == 2 * conv2.out_channels  # both towers' conv2 maps


def test_state_dict_is_the_grouped_layout_both_ways():
    grouped, split = small_pair()
    saved = split.state_dict()
    assert {k: v.shape for k, v in saved.items()} == \
        {k: v.shape for k, v in grouped.state_dict().items()}
    other = build_model("alexnet", **SMALL)  # different weights (a later seed draw)
    other.load_state_dict(saved)
    x = torch.randn(2, 3, 67, 67)
    torch.testing.assert_close(other(x), grouped(x), rtol=0, atol=0)
    split.load_state_dict(build_model("alexnet", **SMALL).state_dict())
    assert not torch.allclose(split(x), grouped(x))
    split.load_state_dict(grouped.state_dict())
    assert_same_up_to_rounding(split(x), grouped(x), "logits")
    with pytest.raises(RuntimeError, match="missing"):
        split.load_state_dict({k: v for k, v in saved.items() if "classifier" not in k})


def test_tower_devices_on_cpu_are_both_cpu():
    assert tower_devices(torch.device("cpu")) == (torch.device("cpu"), torch.device("cpu"))


@pytest.mark.parametrize("model, knobs, needle", [
    ("zfnet", {}, "groups=2"),
    ("alexnet", {"groups": 1}, "groups=2"),
    ("alexnet-one-tower", {}, "groups=2"),
    ("lenet5", {}, "AlexNet-family"),
])
def test_towers_need_a_two_group_alexnet(model, knobs, needle):
    with pytest.raises(ValidationError, match=needle):
        TrainConfig(model=model, knobs=knobs, model_parallel="towers")


def tiny_data():
    torch.manual_seed(1)
    images, labels = torch.rand(96, 3, 67, 67), torch.arange(96) % 10
    return tensor_datasets(images, labels, range(64), range(64, 96), image_size=67,
                           in_channels=3, num_classes=10)


def run(mode: str, data, **kwargs) -> list[dict]:
    cfg = TrainConfig(model="alexnet", knobs={k: v for k, v in SMALL.items() if k != "num_classes"},
                      epochs=2, batch_size=16, lr=0.01, num_threads=1, model_parallel=mode)
    reports: list[dict] = []
    fit(cfg, lambda m, _c: reports.append(m), datasets=data, **kwargs)
    return reports


def test_fit_with_towers_trains_like_the_grouped_model(tmp_path):
    data = tiny_data()
    runs = {mode: run(mode, data, checkpoint_root=tmp_path / mode) for mode in ("none", "towers")}
    for a, b in zip(runs["none"], runs["towers"], strict=True):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    # The towers' checkpoint is a grouped AlexNet's state_dict.
    state = load_checkpoint(tmp_path / "towers" / "epoch_0002")
    assert (tmp_path / "towers" / "epoch_0002" / CHECKPOINT_FILE).is_file()
    grouped = build_model("alexnet", **SMALL)
    grouped.load_state_dict(state["model"])
    ref = load_checkpoint(tmp_path / "none" / "epoch_0002")["model"]
    for name, value in grouped.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=1e-3, atol=1e-5, msg=name)


def test_towers_resume_exactly_from_their_checkpoint(tmp_path):
    data = tiny_data()
    straight = run("towers", data, checkpoint_root=tmp_path / "a")
    resumed = run("towers", data, resume_from=tmp_path / "a" / "epoch_0001")
    assert [r["epoch"] for r in resumed] == [2]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert resumed[0][key] == straight[1][key], key


def test_one_tower_preset_has_about_alexnets_parameters():
    # The paper's footnote: conv5 and the FCs keep their size, so the counts stay close.
    with torch.device("meta"):
        one, two = build_model("alexnet-one-tower"), build_model("alexnet")
    assert [c.out_channels for c in one.conv_layers()] == [48, 128, 192, 192, 256]
    assert abs(count_params(one) / count_params(two) - 1) < 0.03


@pytest.mark.slow
def test_gpu_check_script_quick_mode_agrees():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "towers_check.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    last = dict(pair.split("=", 1) for pair in out.stdout.strip().splitlines()[-1].split())
    assert last["ok"] == "true"
    assert float(last["max_rel_diff"]) < 1e-4
    assert float(last["one_device_img_s"]) > 0 and float(last["grouped_img_s"]) > 0


@pytest.mark.slow  # seconds in a subprocess
def test_gpu_check_script_without_gpu_is_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full check would run")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "towers_check.py")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: no CUDA device; run with --quick for the small CPU check"]
