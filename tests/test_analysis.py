"""The ZFNet-paper analyses: deconvnet against captum and autograd, occlusion, filters, aliasing,
invariance, loading a real sweep's registered checkpoints, analyze_trial and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_main
from torch import nn

from service.analysis import AnalysisError, analyze_model, analyze_trial, load_trial
from service.analysis.aliasing import layer2_aliasing, nyquist_energy
from service.analysis.deconv import project, unpool
from service.analysis.filters import dead_by_data, filter_stats, frequency_shares
from service.analysis.invariance import invariance, sweeps
from service.analysis.layers import conv_stages, receptive_field
from service.analysis.load import trial_checkpoints
from service.analysis.occlusion import captum_drop, occlusion_maps
from service.models import build_model
from service.results.records import Summary, TrialRecord
from service.results.store import read_summary, write_json
from service.rundir import TUNE_SNAPSHOT, checkpoint_list

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    """A tiny `features` + `classifier` net built from the given feature modules."""

    def __init__(self, *features: nn.Module, classes: int = 3, size: int = 16):
        super().__init__()
        self.features = nn.Sequential(*features)
        with torch.no_grad():
            n = self.features(torch.zeros(1, 3, size, size)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(n, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_alexnet(**knobs) -> nn.Module:
    torch.manual_seed(0)
    return build_model("alexnet", width_mult=0.25, image_size=67, num_classes=10,
                       **knobs).eval()


def neurons(model: nn.Module, index: int, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """A few (channel, y, x) units of features[index] that fire on x[0] and x[1]."""
    with torch.no_grad():
        maps = model.features[: index + 1](x)
    c, h, w = maps.shape[1:]
    return [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 3)]


# ---- deconvnet ---------------------------------------------------------------------------


def _captum_deconv(model: nn.Module, layer: nn.Module, x: torch.Tensor, unit) -> torch.Tensor:
    from captum.attr import NeuronDeconvolution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "setting backward hooks on ReLU"
        return NeuronDeconvolution(model, layer).attribute(x.clone().requires_grad_(), unit)


@pytest.mark.parametrize("which", ["hand", "alexnet-plain", "alexnet-overlap"])
def test_deconv_matches_captum(which):
    torch.manual_seed(0)
    if which == "hand":  # 2x2/2 pools, non-in-place ReLUs
        model = Net(nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
                    nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                    nn.Conv2d(8, 5, 3), nn.ReLU()).eval()
        x = torch.randn(2, 3, 16, 16)
    else:  # the real model, LRN off (the paper's path skips it, captum would not)
        model = small_alexnet(pool=which.split("-")[1], lrn=False)
        x = torch.randn(2, 3, 67, 67)
    for stage in conv_stages(model):
        for unit in neurons(model, stage.index, x):
            ref = _captum_deconv(model, model.features[stage.index], x, unit)
            mine = project(model, x, stage.index, [unit, unit])
            assert ref.abs().max() > 0
            assert (mine - ref).abs().max() <= 1e-5, (stage.name, unit)


def test_deconv_is_the_input_gradient_without_relu():
    # Overlapping 3x3/2 pools (ceil mode), a strided grouped conv: linear apart from the pools,
    # so the deconvnet path is exactly autograd's input gradient (which sums shared switches).
    torch.manual_seed(1)
    feats = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(4, 6, 3, stride=2, groups=2), nn.MaxPool2d(3, 2))
    model = Net(*feats, size=33).eval()
    x = torch.randn(3, 3, 33, 33, requires_grad=True)
    unit = (1, 1, 2)
    feats(x)[:, unit[0], unit[1], unit[2]].sum().backward()
    mine = project(model, x.detach(), 3, [unit] * 3)
    assert (mine - x.grad).abs().max() <= 1e-6
    assert x.grad.abs().max() > 0


def test_unpool_sums_windows_that_share_a_switch():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 5.0  # the max of all four 2x2 windows (stride 1)
    pooled, switches = F.max_pool2d(x, 2, 1, return_indices=True)
    back = unpool(torch.ones_like(pooled), switches, x.shape)
    assert back[0, 0, 1, 1] == 4.0 and back.sum() == 4.0
    # max_unpool2d keeps only one of them: the reason the deconvnet scatters with a sum.
    assert F.max_unpool2d(torch.ones_like(pooled), switches, 2, 1, output_size=(3, 3)).sum() < 4


def test_deconv_without_pools_does_not_depend_on_the_input():
    torch.manual_seed(2)
    model = Net(nn.Conv2d(3, 5, 5, stride=2), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.ReLU()).eval()
    a, b = torch.randn(1, 3, 16, 16), 3 * torch.randn(1, 3, 16, 16) + 1
    for index in (1, 3):
        pa, pb = project(model, a, index, [(2, 1, 2)]), project(model, b, index, [(2, 1, 2)])
        assert pa.abs().max() > 0
        assert torch.equal(pa, pb)


def test_deconv_skips_lrn():
    torch.manual_seed(3)
    model = Net(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.LocalResponseNorm(5, alpha=1.0, k=1.0)).eval()
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(project(model, x, 2, [(1, 4, 4)]), project(model, x, 1, [(1, 4, 4)]))


def test_receptive_field_arithmetic():
    model = small_alexnet(conv1_kernel=11, conv1_stride=4)  # AlexNet: conv1 11/4, pool 3/2
    assert receptive_field(model, conv_stages(model)[0].index) == (11, 4, 0)
    assert receptive_field(model, conv_stages(model)[1].index)[:2] == (11 + 2 * 4 + 4 * 8, 8)


# ---- occlusion ---------------------------------------------------------------------------


def _corner_model() -> nn.Module:
    """Logits from the top-left 2x2 units of a 3x3 conv: they see only pixels [0, 4)^2."""
    torch.manual_seed(4)

    class Corner(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            return self.head(self.features(x)[:, :, :2, :2].flatten(1))

    return Corner().eval()


def test_occlusion_outside_the_receptive_support_changes_nothing():
    model, x = _corner_model(), torch.randn(3, 16, 16)
    res = occlusion_maps(model, x, label=2, window=4, stride=4)
    probs = torch.tensor(res["true_prob"])
    assert torch.allclose(probs[1:, :], torch.tensor(res["clean_true_prob"]), atol=1e-7)
    assert torch.allclose(probs[:, 1:], torch.tensor(res["clean_true_prob"]), atol=1e-7)
    assert probs[0, 0] != res["clean_true_prob"]
    drop = captum_drop(model, x, 2, window=4, stride=2)
    assert drop[:, 6:, :].abs().max() == 0 and drop[:, :, 6:].abs().max() == 0
    assert drop[:, :4, :4].abs().max() > 0


@pytest.mark.parametrize("window", [16, 10])
def test_occlusion_with_stride_equal_to_window_is_the_direct_difference(window):
    model = small_alexnet()
    x = torch.randn(3, 67, 67)
    res = occlusion_maps(model, x, label=3, window=window, stride=window)
    direct = res["clean_true_prob"] - torch.tensor(res["true_prob"])
    tiled = direct.repeat_interleave(window, 0).repeat_interleave(window, 1)[:67, :67]
    drop = captum_drop(model, x, 3, window=window, stride=window)
    assert (drop - tiled).abs().max() <= 1e-6
    # And by hand: grey out one square and compare.
    grey = x.clone()
    grey[:, window:2 * window, 0:window] = 0.0
    with torch.no_grad():
        p = F.softmax(model(grey[None]), dim=1)[0, 3]
    assert abs(float(p) - res["true_prob"][1][0]) <= 1e-6


# ---- filters, aliasing, invariance -------------------------------------------------------


def test_filter_stats_dead_and_frequency():
    model = small_alexnet()
    conv1 = conv_stages(model)[0].conv
    with torch.no_grad():
        conv1.weight[:3] *= 1e-3  # three near-zero filters
    stats = filter_stats(model)
    assert stats["dead"] == [0, 1, 2]
    assert stats["dead_fraction"] == pytest.approx(3 / conv1.out_channels)
    assert sum(stats["frequency"].values()) == pytest.approx(1.0)
    assert len(stats["rms"]) == conv1.out_channels
    k = 7
    flat = torch.ones(1, 3, k, k)
    checker = ((-1.0) ** (torch.arange(k)[:, None] + torch.arange(k)[None, :])).expand(1, 3, k, k)
    low, high = frequency_shares(flat)[0], frequency_shares(checker)[0]
    assert low[0] > 0.8 and high[2] > 0.8


def test_dead_by_data_finds_a_filter_that_never_wins():
    model = small_alexnet()
    conv1 = conv_stages(model)[0].conv
    with torch.no_grad():
        conv1.bias[5] = -1e3  # never responds
        conv1.bias[6] = 1e3  # wins everywhere
    dead = dead_by_data(model, torch.randn(4, 3, 67, 67))
    assert dead[5] and not dead[6] and dead.sum() == conv1.out_channels - 1
    stats = filter_stats(model, torch.randn(4, 3, 67, 67))
    assert stats["dead_fraction"] == 0.0  # weights are all alive: the two rules differ
    assert stats["dead_fraction_data"] == pytest.approx(1 - 1 / conv1.out_channels)


def test_nyquist_energy_of_checkerboard_and_smooth_maps():
    y, x = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    checker = ((-1.0) ** (y + x))[None, None] + 3.0
    nyq, total = nyquist_energy(checker)
    assert float(nyq / total) == pytest.approx(1.0)
    nyq, total = nyquist_energy(torch.sin(2 * torch.pi * x / 8)[None, None])
    assert float(nyq / total) < 1e-10


def test_layer2_aliasing_is_a_share():
    value = layer2_aliasing(small_alexnet(), torch.randn(4, 3, 67, 67))
    assert isinstance(value, float) and 0.0 < value < 1.0


def test_invariance_is_zero_at_the_identity():
    model = small_alexnet()
    res = invariance(model, torch.randn(2, 3, 67, 67), torch.tensor([1, 2]), n_images=2)
    values = sweeps(67)
    for kind, identity in (("translation", 0.0), ("scale", 1.0), ("rotation", 0.0)):
        i = values[kind].index(identity)
        sweep = res["sweeps"][kind]
        assert set(sweep["distance"]) == {"conv1", "conv2", "conv3", "conv4", "conv5",
                                          "penultimate"}
        assert all(abs(d[i]) < 1e-5 for d in sweep["distance"].values())
        assert len(sweep["true_prob"]) == 2 and len(sweep["true_prob"][0]) == len(values[kind])


# ---- every analysis on models built directly ---------------------------------------------


@pytest.mark.parametrize("name", ["lenet5", "lenet5-1998", "zfnet"])
@pytest.mark.slow
def test_analyze_model_covers_lenet_and_zfnet(name, tmp_path):
    torch.manual_seed(0)
    knobs = {"width_mult": 0.125, "image_size": 112, "fc_width": 64} if name == "zfnet" else {}
    model = build_model(name, **knobs)
    size, c = model.cfg.image_size, model.cfg.in_channels
    x, y = torch.randn(6, c, size, size), torch.randint(0, 10, (6,))
    res = analyze_model(model, x, y, tmp_path)
    assert 0.0 <= res["filters"]["dead_fraction"] <= 1.0
    assert "skipped" in res["evolution"]  # no checkpoints given
    if name == "lenet5-1998":  # scaled tanh: no deconvnet
        assert "skipped" in res["deconv"]
    else:
        assert res["deconv"]["layers"]["conv1"]
    for name_, png in res["figures"].items():
        assert (tmp_path / png).stat().st_size > 1000, name_
    json.dumps(res, allow_nan=False)


# ---- a real sweep: registered checkpoints, analyze_trial, the CLI ------------------------


@pytest.fixture()
def run_copy(alexnet_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(alexnet_run, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


@pytest.mark.slow
def test_trial_checkpoints_come_only_from_the_registered_list(run_copy):
    summary = read_summary(run_copy)
    trial = summary.best.trial_id
    registered = trial_checkpoints(run_copy, trial)
    assert [e for e, _ in registered] == sorted(e for e, _ in registered)
    assert all((d / "checkpoint.pt").is_file() for _, d in registered)
    listed = checkpoint_list(run_copy, trial)
    assert listed.name == TUNE_SNAPSHOT  # a one-worker sweep: the tune engine's layout
    (listed.parent / "checkpoint_999999").mkdir()  # an unlisted directory, as a kill leaves
    assert trial_checkpoints(run_copy, trial) == registered
    # a listed checkpoint whose file is shorter than listed (stored partly) is not one either
    last = registered[-1][1] / "checkpoint.pt"
    whole = last.read_bytes()
    last.write_bytes(whole[:-1])
    assert trial_checkpoints(run_copy, trial) == registered[:-1]
    last.write_bytes(whole)
    loaded = load_trial(run_copy)
    assert loaded.trial_id == trial and loaded.epoch == registered[-1][0]
    assert not loaded.model.training


@pytest.mark.slow
def test_load_errors_name_the_problem(run_copy, tmp_path):
    with pytest.raises(AnalysisError, match="nope"):
        load_trial(run_copy, "nope")
    with pytest.raises(AnalysisError, match="missing"):
        load_trial(tmp_path / "missing")
    trial = read_summary(run_copy).trials[0].trial_id
    checkpoint_list(run_copy, trial).unlink()
    with pytest.raises(AnalysisError, match=trial):
        load_trial(run_copy, trial)


@pytest.mark.slow
def test_analyze_trial_writes_json_and_figures(alexnet_run):
    res = analyze_trial(alexnet_run, images=32)  # into the shared run: idempotent writes
    trial = read_summary(alexnet_run).best.trial_id
    out = alexnet_run / "analysis" / trial
    on_disk = json.loads((out / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert on_disk["trial_id"] == trial and on_disk["model"] == "alexnet"
    for key in ("filters", "aliasing", "deconv", "evolution", "occlusion", "invariance"):
        assert key in on_disk and "skipped" not in on_disk[key], key
        assert (out / on_disk["figures"][key]).is_file()
    assert on_disk["evolution"]["epochs"] == [e for e, _ in trial_checkpoints(alexnet_run, trial)]
    assert on_disk["epoch"] == on_disk["evolution"]["epochs"][-1]
    assert not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_cli(run_copy, tmp_path, capsys):
    from service.analyze import main

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "service.analyze", *map(str, args)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    trial = read_summary(run_copy).trials[-1].trial_id
    ok = cli(run_copy, "--trial", trial, "--images", 16, "--out", tmp_path / "out")
    assert ok.returncode == 0, ok.stderr[-2000:]
    last = Path(ok.stdout.strip().splitlines()[-1])
    assert last == tmp_path / "out" / "analysis.json"
    assert json.loads(last.read_text())["trial_id"] == trial
    for args, needle in (((tmp_path / "nowhere",), "nowhere"),
                         ((run_copy, "--trial", "zz9"), "zz9"),
                         ((run_copy, "--images", "many"), "many")):
        bad = run_main(main, [str(a) for a in args], capsys)  # in this process
        assert bad.returncode == 2, bad.stderr
        assert needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def _lenet_run(root: Path) -> Path:
    """A run directory laid out as a sweep leaves it, for one LeNet-5 trial of 2 epochs."""
    from service.config.train import TrainConfig
    from service.training.loop import fit

    run, trial = root / "lenet-run", "lenet_00000"
    train_dir = run / f"train_{trial}"
    cfg = TrainConfig(model="lenet5", epochs=2, num_threads=1, device="cpu")
    reports: list[dict] = []
    fit(cfg, lambda m, d: reports.append({"metrics": m, "checkpoint_dir_name": Path(d).name}),
        checkpoint_root=train_dir)
    (train_dir / "checkpoint_manager_snapshot.json").write_text(
        json.dumps({"checkpoint_results": reports}))
    record = TrialRecord.from_history(trial, {}, "completed", [r["metrics"] for r in reports])
    write_json(run / "summary.json", Summary.ranked([record], name="lenet-run", spec={}))
    return run


@pytest.mark.slow  # trains LeNet-5 for 2 epochs, then every analysis
def test_analyze_trial_on_a_lenet_run(tmp_path):
    run = _lenet_run(tmp_path)
    res = analyze_trial(run, images=16)
    assert res["model"] == "lenet5" and res["epoch"] == 2
    assert res["evolution"]["epochs"] == [1, 2]
    assert set(res["deconv"]["layers"]) == {"conv1", "conv2", "conv3"}
    assert res["occlusion"]["images"][0]["feature_layer"] == "conv3"
    saved = json.loads((run / "analysis" / "lenet_00000" / "analysis.json").read_text())
    assert saved["filters"]["dead_fraction"] == res["filters"]["dead_fraction"]
