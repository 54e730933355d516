"""Sweep specs: every file in searchspaces/ validates; bad specs fail with one line per problem
naming the field path and the bad value; the Tune translation keeps the declared bounds."""

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from service.config.blocks import MAX_FILE_BYTES
from service.config.spec import SpecError, SweepSpec, load_spec
from service.metrics import default_mode
from service.models import check_model
from service.tune.search import tune_param_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "searchspaces").glob("**/*.yaml"))

# Small and fast: AlexNet at quarter width on digits at 67 px (11x11/4 just fits).
BASE: dict[str, Any] = {
    "name": "t",
    "data": {"dataset": "digits", "image_size": 67},
    "model": {"family": "alexnet", "knobs": {"width_mult": 0.25}},
    "train": {"optimizer": "sgd", "batch_size": 64},
    "search": {"conv1_kernel": {"type": "choice", "values": [11, 7]},
               "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    "budget": {"max_epochs": 4, "num_samples": 4},
}


def write(tmp_path: Path, doc: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert problems and all("\n" not in p and p.startswith(f"{path}: ") for p in problems)
    assert str(info.value) == "\n".join(problems)
    return problems


def spec_with(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes; a value of ... deletes the key."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            node.pop(last)
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_searchspaces_validate(path: Path) -> None:
    spec = load_spec(path)
    # Results go to RESULTS/<name>/: a claim's space is claimNN_..., a variant's ends in _mnist or
    # _gpu (its folder), so no two spaces share a results folder.
    claims = ROOT / "searchspaces" / "claims"
    if path.parent == claims:
        assert spec.name == f"claim{path.stem}"
    elif path.parent.parent == claims:
        assert spec.name == f"claim{path.stem}_{path.parent.name}"
    else:
        assert spec.name == path.stem
    assert spec.base_config().epochs == spec.budget.max_epochs
    assert spec.budget.primary[1] == spec.default_mode
    assert all(mode == default_mode(m) for m, mode in spec.budget.objectives)
    assert set(tune_param_space(spec)) == set(spec.search)


def test_the_expected_searchspaces_exist() -> None:
    assert {"default.yaml", "lenet5.yaml", "zfnet_vs_alexnet.yaml"} <= {p.name for p in SPACES}


def test_default_is_alexnet_vs_zfnet_conv1_at_the_smallest_size() -> None:
    spec = load_spec(ROOT / "searchspaces" / "default.yaml")
    assert spec.search["conv1_kernel"].values == [11, 7]
    assert spec.search["conv1_stride"].values == [4, 2]
    size = spec.data.image_size
    knobs = dict(spec.model.knobs, conv1_kernel=11, conv1_stride=4)
    check_model(spec.model.family, image_size=size, **knobs)
    with pytest.raises(ValueError, match="shrinks to zero"):
        check_model(spec.model.family, image_size=size - 1, **knobs)


BAD = [  # id, changes to BASE, field path, the bad value as shown, a piece of the reason
    ("top-level typo", {"serach": {}}, "serach", "{}", "did you mean 'search'"),
    ("distribution typo", {"search__dropout__hgih": 0.4}, "search.dropout.hgih", "0.4",
     "did you mean 'high'"),
    ("unknown search key", {"search__conv1_kernal": {"type": "choice", "values": [7]}},
     "search.conv1_kernal", "<key>", "did you mean 'conv1_kernel'"),
    ("unknown knob", {"model__knobs__widht_mult": 0.5}, "model.knobs.widht_mult", "0.5",
     "did you mean 'width_mult'"),
    ("unknown family", {"model__family": "vgg"}, "model.family", "'vgg'", "choose one of"),
    ("missing block", {"model": ...}, "model", "<missing>", "required"),
    ("wrong type", {"train__lr": "fast"}, "train.lr", "'fast'", "valid number"),
    ("fixed setting out of range", {"train__momentum": 1.5}, "train.momentum", "1.5",
     "less than 1"),
    ("bad dataset", {"data__dataset": "imagenet"}, "data.dataset", "'imagenet'",
     "'imagefolder'"),
    ("bad value type", {"search__conv1_kernel__values": [11, "eleven"]},
     "search.conv1_kernel.values[1]", "'eleven'", "conv1_kernel must be an integer >= 1"),
    ("empty choice", {"search__conv1_kernel__values": []}, "search.conv1_kernel.values", "[]",
     "at least 1 item"),
    ("duplicate choice", {"search__conv1_kernel__values": [11, 11]},
     "search.conv1_kernel.values", "[11, 11]", "values[1]=11 is listed twice"),
    ("unknown distribution", {"search__dropout__type": "uniform"}, "search.dropout.type",
     "'uniform'", "choice, grid, int, float"),
    ("low >= high", {"search__dropout": {"type": "float", "low": 0.5, "high": 0.5}},
     "search.dropout.high", "0.5", "greater than low (0.5)"),
    ("log with low <= 0", {"search__lr": {"type": "float", "low": 0, "high": 0.1, "log": True}},
     "search.lr.low", "0", "log sampling needs low > 0"),
    ("int log with low <= 0",
     {"search__fc_width": {"type": "int", "low": 0, "high": 512, "log": True}},
     "search.fc_width.low", "0", "log sampling needs low > 0"),
    ("int with a float end", {"search__fc_width": {"type": "int", "low": 1.5, "high": 9}},
     "search.fc_width.low", "1.5", "valid integer"),
    ("int step not dividing", {"search__batch_size": {"type": "int", "low": 10, "high": 100,
                                                      "step": 20}},
     "search.batch_size.step", "20", "multiples of step"),
    ("range end not finite", {"search__dropout__high": float("nan")}, "search.dropout.high",
     "nan", "finite number"),
    ("range end a boolean", {"search__dropout__high": True}, "search.dropout.high", "True",
     "valid number"),
    ("range end the model refuses", {"search__dropout__high": 1.5}, "search.dropout.high",
     "1.5", "dropout must be a number in [0, 1)"),
    ("range end the trainer refuses", {"search__lr": {"type": "float", "low": -1, "high": 0.1}},
     "search.lr.low", "-1.0", "lr: Input should be greater than 0"),
    ("bad augmentation value", {"search__crop": {"type": "choice", "values": ["none", "center"]}},
     "search.crop.values[1]", "'center'", "'random_resized'"),
    ("bad preset value", {"search__model": {"type": "choice", "values": ["alexnet", "vgg"]}},
     "search.model.values[1]", "'vgg'", "unknown model"),
    ("grid with optuna-tpe", {"search__lrn": {"type": "grid", "values": [True, False]}},
     "search.lrn.type", "'grid'", "Optuna's searcher in Tune cannot grid search"),
    ("range with searcher grid", {"searcher": {"type": "grid"}}, "search.dropout.type",
     "'float'", "use type grid or choice"),
    ("fixed and searched (train)", {"train__lr": 0.1, "search__lr": {"type": "float",
                                                                     "low": 0.01, "high": 0.1}},
     "search.lr", "<key>", "also fixed in train.lr"),
    ("fixed and searched (knob)", {"model__knobs__conv1_kernel": 11}, "search.conv1_kernel",
     "<key>", "also fixed in model.knobs.conv1_kernel"),
    ("fixed and searched (augmentation)", {"data__augmentation": {"hflip": True},
                                           "search__hflip": {"type": "choice",
                                                             "values": [True, False]}},
     "search.hflip", "<key>", "also fixed in data.augmentation.hflip"),
    ("epochs searched", {"search__epochs": {"type": "int", "low": 1, "high": 4}},
     "search.epochs", "<key>", "budget.max_epochs"),
    ("metric/mode contradiction", {"budget__metric": "val_loss", "budget__mode": "max"},
     "budget.mode", "'max'", "val_loss improves towards min"),
    ("unknown metric", {"budget__metric": "acc"}, "budget.metric", "'acc'", "'val_acc'"),
    ("unknown scheduler", {"scheduler": {"type": "pbt"}}, "scheduler.type", "'pbt'",
     "asha, hyperband, median, none"),
    ("scheduler field typo", {"scheduler": {"type": "asha", "grace": 1}}, "scheduler.grace",
     "1", "did you mean 'grace_period'"),
    ("grace beyond budget", {"scheduler": {"type": "asha", "grace_period": 9}},
     "scheduler.grace_period", "9", "at most budget.max_epochs (4)"),
    ("nccl without GPUs", {"resources": {"backend": "nccl"}}, "resources.backend", "'nccl'",
     "nccl needs GPUs"),
    ("tune engine with several workers", {"resources": {"workers_per_trial": 2,
                                                        "engine": "tune"}},
     "resources.engine", "'tune'", "runs one worker per trial, not 2"),
    ("unknown engine", {"resources": {"engine": "ddp"}}, "resources.engine", "'ddp'",
     "'auto', 'tune' or 'train'"),
    ("fractional GPUs above one", {"resources": {"gpus_per_worker": 1.5}},
     "resources.gpus_per_worker", "1.5", "whole number"),
    ("bad name", {"name": "a/b"}, "name", "'a/b'", "pattern"),
    ("name of dots", {"name": ".."}, "name", "'..'", "escape"),
    ("bad storage", {"storage": "ftp://host/x"}, "storage", "'ftp://host/x'", "s3"),
    ("infeasible fixed image size", {"data__image_size": 32}, "data.image_size", "32",
     "image_size: the feature map shrinks to zero"),
    ("knob disagreeing with data", {"model__knobs__image_size": 64}, "model.knobs.image_size",
     "64", "disagrees with data.image_size=67"),
    ("infeasible corner",
     {"data": {"dataset": "digits"}, "model": {"family": "zfnet"},
      "search__image_size": {"type": "choice", "values": [67, 63]},
      "search__conv1_kernel": {"type": "choice", "values": [7, 11]}},
     "search", "<conv1_kernel=11, image_size=63>",
     "this combination cannot be built: image_size=63: the feature map shrinks to zero"),
]


@pytest.mark.parametrize(("changes", "path", "value", "why"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_spec_names_path_and_value(tmp_path: Path, changes: dict, path: str, value: str,
                                       why: str) -> None:
    file = write(tmp_path, spec_with(**changes))
    problems = problems_of(file)
    hits = [p for p in problems if p.startswith(f"{file}: {path}: {value} → ")]
    assert len(hits) == 1, problems
    assert why in hits[0], hits[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    structural = problems_of(write(tmp_path, spec_with(
        serach={}, train__lr="fast", search__dropout__high="x", budget__metric="acc")))
    assert len(structural) == 4, structural
    cross = problems_of(write(tmp_path, spec_with(
        search__lrn={"type": "grid", "values": [True, False]},
        search__conv1_kernal={"type": "choice", "values": [7]},
        search__conv1_kernel__values=[11, 0], search__dropout__high=2.0)))
    assert [p.split(": ")[1] for p in cross] == [
        "search.lrn.type", "search.conv1_kernal", "search.conv1_kernel.values[1]",
        "search.dropout.high"], cross


def test_a_corner_is_reported_once_by_its_least_cause(tmp_path: Path) -> None:
    doc = spec_with(data={"dataset": "digits"}, model={"family": "zfnet"},
                    search={"image_size": {"type": "choice", "values": [63, 67]},
                            "conv1_kernel": {"type": "choice", "values": [7, 11]},
                            "lrn": {"type": "choice", "values": [True, False]},
                            "dropout": {"type": "float", "low": 0.0, "high": 0.5}})
    problems = problems_of(write(tmp_path, doc))
    assert len(problems) == 1 and "<image_size=63, conv1_kernel=11>" in problems[0], problems


def test_a_huge_space_samples_its_corners(tmp_path: Path) -> None:
    search = {k: {"type": "choice", "values": v} for k, v in {
        "conv1_kernel": [11, 9], "fc_width": [64, 128], "lrn": [True, False],
        "dropout": [0.0, 0.5], "pool_ceil": [True, False], "activation": ["relu", "tanh"],
        "groups": [1, 2], "lrn_position": ["before_pool", "after_pool"],
        "dropout_position": ["hidden", "input"], "init": ["paper", "default"],
        "schedule": ["cosine", "none"], "hflip": [True, False], "label_smoothing": [0.0, 0.1],
    }.items()}  # 2**13 = 8192 combinations, over MAX_CORNERS
    spec = load_spec(write(tmp_path, spec_with(search=search)))
    assert len(spec.search) == 13


@pytest.mark.parametrize(("text", "where", "why"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "byte 0: <0x89>", "not UTF-8"),
    (b"name: x\nmodel: {family: lenet5\nsearch: [\n", "line 3, column 7: <search: [>",
     "not valid YAML"),
    (b"- name\n- model\n", "<top level>: <list>", "a spec is a mapping"),
    (b"", "<top level>: <empty>", "a spec is a mapping"),
    (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
     "line 2, column 8: <b: &b", "alias *a is not allowed"),
    (b"name: x\nname: y\nmodel: {family: lenet5}\n", "line 2, column 1: <name: y>",
     "duplicate key 'name'"),
    (b"name: x\n---\nname: y\n", "line 2, column 1: <--->", "single document"),
    (b"[" * 100_000, "<yaml>: <text>", "nested too deeply"),
    (b"name: x\x00\n", "<yaml>: <text>", "not valid YAML"),
], ids=["binary", "syntax", "list", "empty", "alias", "duplicate key", "two documents",
        "deep nesting", "NUL"])
def test_unreadable_files(tmp_path: Path, text: bytes, where: str, why: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: {where}") and why in problem, problem


def test_missing_huge_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems_of(missing) == [f"{missing}: <file>: <missing> → no such file"]
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    assert "a spec is at most 1 MiB" in problems_of(huge)[0]
    assert "<file>: <unreadable>" in problems_of(tmp_path)[0]


def test_yaml_exponent_floats_are_floats(tmp_path: Path) -> None:
    doc = "\n".join(["name: t", "model: {family: lenet5}", "train: {weight_decay: 5e-4}",
                     "search: {lr: {type: float, low: 1e-3, high: 1E-1, log: true}}"])
    spec = load_spec(write(tmp_path, doc))
    assert spec.train.weight_decay == 5e-4
    assert (spec.search["lr"].low, spec.search["lr"].high) == (1e-3, 0.1)


def test_mode_defaults_from_the_metric() -> None:
    assert SweepSpec.model_validate(spec_with()).budget.mode == "max"
    spec = SweepSpec.model_validate(spec_with(budget__metric="val_loss"))
    assert spec.budget.mode == spec.default_mode == "min"


FULL = spec_with(  # every block, every distribution
    train={"optimizer": "sgd"},
    description="all blocks", storage="s3://bucket/sweeps",
    data__augmentation={"crop": "random", "hflip": True},
    search={"conv1_kernel": {"type": "choice", "values": [11, 7]},
            "lrn": {"type": "grid", "values": [True, False]},
            "fc_width": {"type": "int", "low": 64, "high": 256, "log": True},
            "conv1_padding": {"type": "int", "low": 0, "high": 2},
            "batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    searcher={"type": "random", "seed": 3},
    scheduler={"type": "median", "grace_period": 2, "min_samples_required": 2},
    resources={"workers_per_trial": 2, "cpus_per_worker": 0.5, "gpus_per_worker": 0.5,
               "max_concurrent_trials": 2, "backend": "gloo"})


@pytest.mark.parametrize("doc", [FULL, *SPACES], ids=["full", *[p.name for p in SPACES]])
def test_model_dump_round_trips(doc: Any) -> None:
    spec = load_spec(doc) if isinstance(doc, Path) else SweepSpec.model_validate(doc)
    dump = spec.model_dump(mode="json")
    again = SweepSpec.model_validate(dump)
    assert again == spec and again.model_dump(mode="json") == dump
    # Only what the file set is dumped: a reloaded spec has the same fixed settings.
    assert again.train.model_fields_set == spec.train.model_fields_set
    assert again.data.model_fields_set == spec.data.model_fields_set
    assert SweepSpec.model_validate(yaml.safe_load(yaml.safe_dump(dump))) == spec


def test_train_config_routes_sampled_keys() -> None:
    spec = SweepSpec.model_validate(FULL)
    cfg = spec.train_config({"lr": 0.003, "hflip": False, "conv1_kernel": 7,
                             "batch_size": 96, "image_size": 99})
    assert cfg.lr == 0.003 and cfg.batch_size == 96 and cfg.epochs == 4
    assert cfg.data.augmentation.hflip is False and cfg.data.augmentation.crop == "random"
    assert cfg.data.image_size == 99
    assert cfg.knobs == {"width_mult": 0.25, "conv1_kernel": 7}
    assert spec.train_config({"model": "zfnet"}).model == "zfnet"
    assert spec.base_config() == spec.train_config({})


def test_tune_domains_keep_the_declared_bounds() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

    spec = SweepSpec.model_validate(FULL)
    space = tune_param_space(spec)
    assert space["lrn"] == {"grid_search": [True, False]}
    assert isinstance(space["conv1_kernel"], Categorical)
    for key in ("fc_width", "conv1_padding", "batch_size"):
        assert isinstance(space[key], Integer)
    # randint/lograndint exclude their upper bound, qrandint includes it: ours is inclusive.
    assert (space["fc_width"].lower, space["fc_width"].upper) == (64, 257)
    assert isinstance(space["fc_width"].get_sampler(), LogUniform)
    assert (space["conv1_padding"].lower, space["conv1_padding"].upper) == (0, 3)
    sampler = space["batch_size"].get_sampler()
    assert isinstance(sampler, Quantized) and sampler.q == 32
    assert (space["batch_size"].lower, space["batch_size"].upper) == (32, 128)
    assert isinstance(space["lr"], Float) and isinstance(space["lr"].get_sampler(), LogUniform)
    assert (space["dropout"].lower, space["dropout"].upper) == (0.0, 0.5)

    rng = np.random.default_rng(0)
    draws = {k: space[k].sample(size=400, random_state=rng) for k in space if k != "lrn"}
    assert set(draws["conv1_kernel"]) == {11, 7}
    assert set(draws["conv1_padding"]) == {0, 1, 2}
    assert set(draws["batch_size"]) == {32, 64, 96, 128}
    assert min(draws["fc_width"]) >= 64 and max(draws["fc_width"]) <= 256
    assert all(0.0 <= x <= 0.5 for x in draws["dropout"])
    assert all(0.001 <= x <= 0.1 for x in draws["lr"])
    import ray

    assert not ray.is_initialized()  # translating and sampling need no cluster


def test_optuna_sees_the_same_inclusive_bounds() -> None:
    from ray.tune.search.optuna import OptunaSearch

    doc = copy.deepcopy(FULL)
    del doc["search"]["lrn"]  # Optuna cannot grid search
    doc["searcher"] = {"type": "optuna-tpe"}
    dists = OptunaSearch.convert_search_space(tune_param_space(SweepSpec.model_validate(doc)))
    assert (dists["fc_width"].low, dists["fc_width"].high, dists["fc_width"].log) == (64, 256,
                                                                                       True)
    assert (dists["conv1_padding"].low, dists["conv1_padding"].high) == (0, 2)
    assert (dists["batch_size"].low, dists["batch_size"].high, dists["batch_size"].step) == (
        32, 128, 32)


def test_searcher_grid_enumerates_choices() -> None:
    doc = spec_with(searcher={"type": "grid"},
                    search={"conv1_kernel": {"type": "choice", "values": [11, 7]}})
    space = tune_param_space(SweepSpec.model_validate(doc))
    assert space == {"conv1_kernel": {"grid_search": [11, 7]}}


@pytest.mark.slow  # seconds in a subprocess
def test_the_driver_validates_and_plans_without_torch() -> None:
    # The sweep's driver holds ~0.3 GiB less without torch: validating every shipped space,
    # checking its data, planning the sweep and Tune's TensorBoard logger must not import it.
    import subprocess
    import sys

    code = """
import sys
from pathlib import Path
from service.tune import runtime
from service.tune import plan, sweep
from service.tune import trial
from service.tune import schedulers  # the driver's modules
from service.config.data import DataError, check_available
from service.config.spec import load_spec
for path in sorted(Path('searchspaces').glob('**/*.yaml')):
    spec = load_spec(path)
    try:
        check_available(spec.data)
    except DataError:
        pass  # the GPU spaces name data that is not on this machine
    plan.plan_sweep(spec, '/tmp/unused', {'CPU': 64.0, 'GPU': 8.0}, 'run')
    trial.trial_train_config(spec.base_config().model_dump(mode='json'), {})
assert runtime.local_resources(via_ray=True)['CPU'] >= 1  # the pre-Ray plan check
import tempfile
sweep.import_tensorboardx_without_torch()  # Tune's TensorBoard logger imports it
from tensorboardX import SummaryWriter
with tempfile.TemporaryDirectory() as tmp:
    with SummaryWriter(tmp) as w:
        w.add_scalar('val_acc', 0.5, 1)
    assert any(p.name.startswith('events.out.tfevents') for p in Path(tmp).iterdir())
print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
