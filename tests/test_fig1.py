"""alexnet-fig1: AlexNet's Figure 1 net (ReLU vs tanh on CIFAR-10), assumed to be cuda-convnet's
layers-18pct net; shapes, parameter count, the activation and LRN knobs, and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.models import (
    architecture_knobs,
    build_model,
    check_model,
    count_params,
    describe,
    knob_names,
    list_models,
    model_knobs,
)


def _conv(c_in: int, c_out: int, k: int = 5) -> int:
    return c_in * c_out * k * k + c_out


# By hand: conv1 3->32, conv2 32->32, conv3 32->64 (5x5, one bias per filter), then FC from
# 64 maps of 4x4 (32 -> 16 -> 8 -> 4 through three ceil-mode 3x3/2 pools) to 10 classes.
FIG1_PARAMS = _conv(3, 32) + _conv(32, 32) + _conv(32, 64) + (64 * 4 * 4 * 10 + 10)


def test_hand_count_is_what_we_think():
    assert FIG1_PARAMS == 2_432 + 25_632 + 51_264 + 10_250 == 89_578


def test_registered_with_its_knobs():
    assert "alexnet-fig1" in list_models()
    knobs = model_knobs("alexnet-fig1")
    assert knobs == {"num_classes": 10, "in_channels": 3, "image_size": 32,
                     "activation": "relu", "lrn": True, "init": "kaiming"}
    assert "dropout" not in knob_names("alexnet-fig1")
    assert architecture_knobs("alexnet-fig1") == ("activation", "lrn")


@pytest.mark.parametrize("in_channels", [3, 1])
def test_forward_shape(in_channels):
    model = build_model("alexnet-fig1", in_channels=in_channels)
    out = model(torch.randn(4, in_channels, 32, 32))
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()


def test_four_weight_layers_and_the_hand_count():
    model = build_model("alexnet-fig1")
    weighted = [m for m in model.modules() if getattr(m, "weight", None) is not None]
    assert [type(m) for m in weighted] == [nn.Conv2d] * 3 + [nn.Linear]
    assert [c.out_channels for c in model.conv_layers()] == [32, 32, 64]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in model.conv_layers())
    assert count_params(model) == FIG1_PARAMS
    info = describe("alexnet-fig1", flops=True)
    assert info["params"] == FIG1_PARAMS
    assert info["conv_maps"] == [32, 16, 8]
    assert info["input_size"] == [3, 32, 32]
    # Grey input: conv1 loses 2 * 32 * 25 weights.
    assert count_params(build_model("alexnet-fig1", in_channels=1)) == FIG1_PARAMS - 1_600


def test_layer_order_is_cuda_convnets():
    kinds = [type(m).__name__ for m in build_model("alexnet-fig1").features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "LocalResponseNorm",
                     "Conv2d", "ReLU", "AvgPool2d", "LocalResponseNorm",
                     "Conv2d", "ReLU", "AvgPool2d"]
    assert not any(isinstance(m, nn.Dropout) for m in build_model("alexnet-fig1").modules())


def test_activation_knob_changes_the_module():
    relu = build_model("alexnet-fig1")
    tanh = build_model("alexnet-fig1", activation="tanh")
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 3
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 3
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    assert count_params(tanh) == FIG1_PARAMS


def test_lrn_off_removes_local_response_norm():
    on = build_model("alexnet-fig1")
    off = build_model("alexnet-fig1", lrn=False)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in on.modules()) == 2
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in off.modules())
    assert count_params(off) == FIG1_PARAMS  # LRN has no weights
    assert off(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_gradient_step_runs_and_lowers_the_loss(activation):
    torch.manual_seed(0)
    model = build_model("alexnet-fig1", activation=activation)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    model.post_step()
    after = nn.functional.cross_entropy(model(x), y)
    assert after.item() < before.item()


def test_cuda_convnet_init_uses_its_scales():
    torch.manual_seed(0)
    convs = build_model("alexnet-fig1", init="cuda-convnet").conv_layers()
    assert abs(float(convs[0].weight.detach().std()) - 1e-4) < 2e-5
    assert abs(float(convs[1].weight.detach().std()) - 0.01) < 2e-3
    assert all(float(c.bias.detach().abs().max()) == 0.0 for c in convs)


def test_image_size_follows_the_data():
    assert check_model("alexnet-fig1", image_size=12).conv_maps == [12, 6, 3]
    model = build_model("alexnet-fig1", image_size=64, num_classes=100)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 100)
    with pytest.raises(ValueError, match="image_size=11"):
        check_model("alexnet-fig1", image_size=11)


@pytest.mark.parametrize("knobs, field", [
    ({"activation": "sigmoid"}, "activation"),
    ({"activation": "gelu"}, "activation"),
    ({"lrn": "yes"}, "lrn"),
    ({"init": "xavier"}, "init"),
    ({"num_classes": 0}, "num_classes"),
    ({"in_channels": 1.5}, "in_channels"),
    ({"dropout": 0.5}, "dropout"),  # no regularisation: not a knob
])
def test_bad_knob_is_a_one_line_value_error_naming_it(knobs, field):
    with pytest.raises(ValueError, match=field) as err:
        build_model("alexnet-fig1", **knobs)
    assert "\n" not in str(err.value)


def test_spec_names_the_preset():
    from service.config.spec import SpecError, parse_spec

    spec = parse_spec({"name": "fig1", "data": {"dataset": "cifar10"},
                       "model": {"family": "alexnet-fig1", "knobs": {"lrn": False}},
                       "search": {"activation": {"type": "choice", "values": ["relu", "tanh"]}},
                       "budget": {"max_epochs": 1}})
    assert spec.model.family == "alexnet-fig1"
    with pytest.raises(SpecError, match="activation"):
        parse_spec({"name": "fig1", "data": {"dataset": "cifar10"},
                    "model": {"family": "alexnet-fig1"},
                    "search": {"activation": {"type": "choice", "values": ["relu", "gelu"]}},
                    "budget": {"max_epochs": 1}})
