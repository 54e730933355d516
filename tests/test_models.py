"""Model family: every preset against the paper figures, and the knobs' validation."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import nn

from service.models import (
    architecture_knobs,
    build_model,
    check_model,
    count_params,
    describe,
    knob_names,
    list_models,
    make_config,
    model_knobs,
)
from service.models.common import clip_filter_rms
from service.models.lenet import C3_TABLE, PartialConv2d
from service.models.registry import FAMILIES, PRESETS, Family
from service.models.shapes import architectural

# papers.md: parameters at the paper's class count, and the spatial size after each conv.
PAPER = {
    "lenet5": (61_706, [28, 10, 1]),
    "lenet5-1998": (60_000, [28, 10, 1]),
    "alexnet": (60_965_224, [55, 27, 13, 13, 13]),
    # The paper gives no count for its one-GPU net; by hand: convs 1,167,168 + FCs 58,631,144
    # (FC6-8 as AlexNet's, since conv5 keeps 256 kernels), "about the same" as AlexNet's.
    "alexnet-one-tower": (59_798_312, [55, 27, 13, 13, 13]),
    "zfnet": (62_357_608, [110, 26, 13, 13, 13]),
    "alexnet-torchvision": (61_100_840, [55, 27, 13, 13, 13]),
    "alexnet-fig1": (89_578, [32, 16, 8]),  # by hand in tests/test_fig1.py
}


def test_registry_lists_every_paper_preset():
    assert sorted(list_models()) == sorted(PAPER)


def measured_conv_maps(model: nn.Module, x: torch.Tensor) -> list[int]:
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
             for m in model.conv_layers()]
    model(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("name", list_models())
def test_preset_keeps_the_papers_maps_and_trains_at_a_small_width(name):
    """Forward and backward of every preset at its paper input size, narrowed (width_mult,
    fc_width) so that the check is quick: the maps do not depend on width, and the full-width
    parameter counts are checked on the meta device (test_describe_agrees_with_built_model)."""
    torch.manual_seed(0)
    small = {k: v for k, v in {"width_mult": 0.125, "fc_width": 64}.items()
             if k in knob_names(name)}
    model = build_model(name, **small)
    knobs = model_knobs(name)
    x = torch.randn(2, knobs["in_channels"], knobs["image_size"], knobs["image_size"])
    assert measured_conv_maps(model, x) == PAPER[name][1]
    out = model(x)
    assert out.shape == (2, knobs["num_classes"])
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", list_models())
def test_describe_agrees_with_built_model(name):
    info = describe(name, flops=True)
    assert info["params"] == PAPER[name][0]
    assert info["conv_maps"] == PAPER[name][1]
    assert info["flops"] > 2 * info["params"] * 0.5  # every weight is used at least once


@pytest.mark.slow
def test_models_cli_json_lists_every_preset():
    out = subprocess.run([sys.executable, "-m", "service.models", "--json"], check=True,
                         capture_output=True, text=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(PAPER)
    for name, (params, maps) in PAPER.items():
        assert rows[name]["params"] == params
        assert rows[name]["conv_maps"] == maps
    assert rows["alexnet"]["input_size"] == [3, 227, 227]
    assert rows["zfnet"]["input_size"] == [3, 224, 224]


def test_torchvision_weights_load_and_give_identical_outputs():
    torch.manual_seed(1)
    theirs = torchvision.models.alexnet(weights=None).eval()
    ours = build_model("alexnet-torchvision").eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_zfnet_differs_from_alexnet_where_the_paper_says():
    alex, zf = model_knobs("alexnet"), model_knobs("zfnet")
    assert (alex["conv1_kernel"], alex["conv1_stride"]) == (11, 4)
    assert (zf["conv1_kernel"], zf["conv1_stride"], zf["conv2_stride"]) == (7, 2, 2)
    assert (alex["groups"], zf["groups"]) == (2, 1)
    assert zf["filter_rms_clip"] == 0.1 and alex["filter_rms_clip"] is None
    model = build_model("zfnet", num_classes=10, width_mult=0.25)
    kinds = [type(m).__name__ for m in model.features]
    # ZFNet normalises after the pools; AlexNet before them.
    assert kinds[:4] == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm"]
    kinds = [type(m).__name__ for m in build_model("alexnet", num_classes=10).features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]


def test_alexnet_towers_are_grouped_convs():
    convs = build_model("alexnet").conv_layers()
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]


def test_lenet_1998_c3_respects_connection_table():
    model = build_model("lenet5-1998")
    c3 = next(m for m in model.features if isinstance(m, PartialConv2d))
    dense = c3.dense_weight()
    for out_map, inputs in enumerate(C3_TABLE):
        for in_map in range(6):
            connected = bool(dense[out_map, in_map].abs().sum() > 0)
            assert connected == (in_map in inputs)
    assert sum(len(t) for t in C3_TABLE) == 60  # 1,516 params = 60 kernels*25 + 16 biases
    # A change to an unconnected input map leaves that output map unchanged.
    x = torch.randn(1, 6, 14, 14)
    y0 = c3(x)
    x[0, 3] += 1.0  # S2 map 3 feeds C3 maps 1, 2, 3, 6, ... but not map 0
    y1 = c3(x)
    assert torch.equal(y0[0, 0], y1[0, 0])
    assert not torch.equal(y0[0, 1], y1[0, 1])


def test_scaled_tanh_is_lecuns():
    model = build_model("lenet5-1998")
    act = model.features[1]
    a = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(act(a), 1.7159 * torch.tanh(2 * a / 3))


@pytest.mark.parametrize("knobs, field", [
    ({"image_size": 63}, "image_size"),  # AlexNet's maps shrink to zero below 67
    ({"groups": 3}, "groups"),  # 3 does not divide 256
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"activation": "gelu"}, "activation"),
    ({"pool": "huge"}, "pool"),
    ({"conv1_stride": 0}, "conv1_stride"),
    ({"fc_width": 0}, "fc_width"),
    ({"lenet_only_knob": 1}, "lenet_only_knob"),
])
def test_invalid_knobs_name_the_knob(knobs, field):
    with pytest.raises(ValueError, match=field):
        check_model("alexnet", **knobs)


def test_lenet_too_small_image_is_rejected():
    with pytest.raises(ValueError, match="image_size=28"):
        build_model("lenet5", image_size=28)


def test_validation_happens_before_allocation(monkeypatch):
    # A 16x-wide AlexNet would need ~billions of weights; the bad image size must fail first.
    # A spy that records every conv construction and then runs the real one.
    allocated = []
    real_init = nn.Conv2d.__init__

    def spy(self, *args, **kwargs):
        allocated.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "__init__", spy)
    build_model("lenet5")
    assert len(allocated) == 3  # the spy sees a valid model's C1, C3 and C5
    allocated.clear()
    with pytest.raises(ValueError, match="image_size"):
        build_model("alexnet", image_size=32, width_mult=16)
    assert allocated == []


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="zfnet"):
        build_model("vgg16")


def test_width_mult_keeps_groups_divisible():
    model = build_model("alexnet", width_mult=0.25, image_size=67, num_classes=10)
    widths = [c.out_channels for c in model.conv_layers()]
    assert widths == [24, 64, 96, 96, 64]
    assert model(torch.randn(2, 3, 67, 67)).shape == (2, 10)


def test_filter_rms_clip_renormalises_only_large_filters():
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        scale = torch.tensor([0.01, 0.05, 0.5, 2.0]).view(4, 1, 1, 1)
        conv.weight.copy_(torch.randn(4, 3, 3, 3) * scale)
    before = conv.weight.detach().clone()
    clipped = clip_filter_rms(conv, 0.1)
    rms = conv.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert clipped == 2
    torch.testing.assert_close(rms[2:], torch.full((2,), 0.1))
    torch.testing.assert_close(conv.weight[:2], before[:2])


def test_paper_init_sets_alexnet_biases():
    model = build_model("alexnet", init="paper", width_mult=0.25, num_classes=10)
    convs = model.conv_layers()
    assert [float(c.bias.detach().mean()) for c in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert abs(float(convs[0].weight.detach().std()) - 0.01) < 0.002


@pytest.mark.parametrize("name, knobs, field", [
    ("alexnet", {"width_mult": "big"}, "width_mult"),
    ("alexnet", {"lrn": "no"}, "lrn"),
    ("alexnet", {"conv1_kernel": 7.5}, "conv1_kernel"),
    ("alexnet", {"fc_width": True}, "fc_width"),
    ("alexnet", {"widths": [96, 256, 384, 384]}, "widths"),
    ("alexnet", {"init": "xavier"}, "init"),
    ("lenet5", {"dropout": "0.5"}, "dropout"),
    ("lenet5", {"c3_table": 1}, "c3_table"),
    ("lenet5", {"pool": "trainable2"}, "pool"),
])
def test_wrong_knob_types_are_value_errors_naming_the_knob(name, knobs, field):
    with pytest.raises(ValueError, match=field):
        check_model(name, **knobs)


def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_in // groups * c_out * k * k + c_out


@pytest.mark.parametrize("remove, convs, expected", [
    # ZFNet Table 3's ablations of AlexNet, counted by hand from the layer sizes.
    ("3,4", 3, 60_965_224 - _conv(256, 384, 3) - _conv(384, 384, 3, 2)
     - _conv(384, 256, 3, 2) + _conv(256, 256, 3, 2)),
    ("7", 5, 60_965_224 - (4096 * 4096 + 4096)),
    ("6,7", 5, 60_965_224 - (9216 * 4096 + 4096) - (4096 * 4096 + 4096) - (4096 * 1000 + 1000)
     + (9216 * 1000 + 1000)),
])
def test_remove_layers_takes_out_zfnet_table3_layers(remove, convs, expected):
    model = build_model("alexnet", remove_layers=remove, init="paper")
    assert count_params(model) == expected
    assert len(model.conv_layers()) == convs
    assert model(torch.randn(1, 3, 227, 227)).shape == (1, 1000)
    # The paper's bias-1 layers that remain keep bias 1; FC8 stays at 0.
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert float(fcs[-1].bias.abs().max()) == 0.0
    assert all(float(m.bias.min()) == 1.0 for m in fcs[:-1])


def test_remove_layers_rejects_other_sets_and_towers():
    with pytest.raises(ValueError, match="remove_layers"):
        check_model("alexnet", remove_layers="5")
    from service.models import towers

    with pytest.raises(ValueError, match="remove_layers"):
        towers.check_towers(make_config("alexnet", remove_layers="3,4"))


def test_towers_need_even_hidden_fc_widths():
    from service.models import towers

    with pytest.raises(ValueError, match="fc_width"):
        towers.check_towers(make_config("alexnet", fc_width=33))
    towers.check_towers(make_config("alexnet", fc_width=34))


# Per preset family: a value of every architecture knob other than the preset's own. Its keys
# must be the registered architecture knobs, so a new one has to be added here and tested.
OTHER_ARCHITECTURE = {
    "alexnet": dict(widths=(64, 192, 384, 256, 256), width_mult=0.5, conv1_kernel=7,
                    conv1_stride=2, conv1_padding=1, conv2_stride=2, conv2_padding=0, groups=1,
                    fc_width=2048, lrn=False, lrn_position="after_pool", activation="tanh",
                    pool="plain", pool_ceil=True, adaptive_pool=6, remove_layers="3,4"),
    "lenet5": dict(activation="tanh", pool="avg", c3_table=True, output="rbf"),
}


def _network(name: str, **knobs) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    with torch.device("meta"):
        model = build_model(name, **knobs)
    return repr(model), [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", ["alexnet", "lenet5"])
def test_every_architecture_knob_is_a_knob_that_changes_the_network(name):
    arch = architecture_knobs(name)
    assert set(arch) <= set(knob_names(name))
    assert set(arch) == set(OTHER_ARCHITECTURE[name])
    # image_size 224: conv1's 54x54 maps pool to 26 (floor) or 27 (ceil), so pool_ceil shows.
    base = dict(image_size=224) if name == "alexnet" else {}
    reference = _network(name, **base)
    for knob, value in OTHER_ARCHITECTURE[name].items():
        assert _network(name, **base, **{knob: value}) != reference, knob
    # How the network is fed or trained is not architecture.
    for knob in ("num_classes", "in_channels", "image_size", "dropout", "init",
                 "filter_rms_clip"):
        assert knob not in arch



def test_every_preset_registers_architecture_knobs_among_its_knobs():
    for name in list_models():
        arch = architecture_knobs(name)
        assert arch and set(arch) <= set(knob_names(name)), name
        make_config(name, **{k: model_knobs(name)[k] for k in arch})  # accepted as knobs


# Claim 7's grid at one FC width, two seeds: trials that differ only in remove_layers (and in
# how they were trained: seed, lr) are three models.
CLAIM7_SPEC = {"model": {"family": "alexnet", "knobs": {"width_mult": 0.25}},
               "budget": {"metric": "val_acc", "mode": "max"},
               "search": {"remove_layers": {"type": "grid", "values": ["none", "3,4", "6,7"]}}}
CLAIM7_CONFIGS = [{"fc_width": 128, "remove_layers": removed, "seed": seed, "lr": 0.02 + seed}
                  for removed in ("none", "3,4", "6,7") for seed in (0, 1)]


def test_architecture_keeps_claim7_removed_layers_apart():
    from service.report.data import architecture

    keys = [architecture({"config": c}, CLAIM7_SPEC) for c in CLAIM7_CONFIGS]
    assert keys[0] == ("alexnet", ("fc_width", 128), ("remove_layers", "none"))
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[4] == keys[5]  # seeds, lr
    assert len(set(keys)) == 3


def test_searched_widths_group_and_describe() -> None:
    # A list-valued knob (widths) was an unhashable group key.
    from service.report.data import architecture, describe_group, model_groups
    from service.results.records import Summary, TrialRecord

    spec = {**CLAIM7_SPEC, "data": {"dataset": "digits", "image_size": 67}}
    narrow, wide = [24, 64, 96, 96, 64], [48, 128, 192, 192, 128]
    trials = [TrialRecord(trial_id=f"t{i}", config={"widths": w, "seed": i}, status="completed",
                          epochs=1, best_val_acc=0.5, highest={"val_acc": 0.5})
              for i, w in enumerate([narrow, narrow, wide])]
    assert architecture({"config": {"widths": narrow}}, spec) == (
        "alexnet", ("widths", tuple(narrow)))
    groups = model_groups(Summary(name="w", spec=spec, searched=["widths"], trials=trials))
    assert sorted(g["trials"] for g in groups) == [1, 2]
    params = {g["knobs"]["widths"]: describe_group(g, spec)["params"] for g in groups}
    assert params[tuple(wide)] > params[tuple(narrow)]


def test_model_comparison_keeps_claim7_removed_layers_apart():
    from service.report.data import model_groups
    from service.results.records import Summary, TrialRecord

    trials = []
    for i, config in enumerate(CLAIM7_CONFIGS):
        acc = 0.9 - 0.1 * (i // 2) + 0.01 * config["seed"]
        trials.append(TrialRecord(trial_id=f"t{i}", config=config, status="completed", epochs=1,
                                  best_val_acc=acc, highest={"val_acc": acc}))
    groups = model_groups(Summary(name="claim07", spec=CLAIM7_SPEC, searched=["remove_layers"],
                                  trials=trials))
    assert len(groups) == 3  # the old hand-written list merged them into one
    by_removed = {g["knobs"]["remove_layers"]: g for g in groups}
    assert sorted(by_removed) == ["3,4", "6,7", "none"]
    assert all(g["model"] == "alexnet" and g["trials"] == 2 for g in groups)
    assert all(g["knobs"] == {"fc_width": 128, "remove_layers": r} for r, g in by_removed.items())
    assert by_removed["none"]["best"] == pytest.approx(0.91)
    assert by_removed["6,7"]["best"] == pytest.approx(0.71)

def test_registry_and_shape_arithmetic_import_neither_torch_nor_ray():
    # The sweep's driver validates search spaces with these and never imports torch.
    code = (
        "import sys\n"
        "import service.models.alexnet_plan, service.models.lenet_plan\n"
        "import service.models.registry, service.models.shapes\n"
        "from service.models import architecture_knobs, check_model\n"
        "check_model('zfnet', remove_layers='3,4'); architecture_knobs('alexnet')\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'ray') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


@dataclass
class TinyConfig:
    """A throw-away family's knobs."""

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 8
    width: int = architectural(4)


class TinyNet(torch.nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.conv = torch.nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1)
        self.fc = torch.nn.Linear(cfg.width * cfg.image_size ** 2, cfg.num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _tiny_plan(cfg: TinyConfig) -> int:
    if cfg.width < 1:
        raise ValueError(f"width={cfg.width}: must be at least 1")
    return cfg.width


def test_a_new_family_is_one_record_and_its_presets(monkeypatch):
    # A family is its config, its shape check and its module; a preset names the family.
    monkeypatch.setitem(FAMILIES, "tiny", Family(TinyConfig, _tiny_plan, f"{__name__}:TinyNet"))
    monkeypatch.setitem(PRESETS, "tiny-wide", ("tiny", {"width": 6}))
    assert "tiny-wide" in list_models() and knob_names("tiny-wide")[-1] == "width"
    assert architecture_knobs("tiny-wide") == ("width",)
    net = build_model("tiny-wide", num_classes=3)
    assert isinstance(net, TinyNet) and net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="width=0"):
        check_model("tiny-wide", width=0)
