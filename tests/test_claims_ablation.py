"""The claims' measures on ablation runs (service.claims.cells): a trial config {arm, seed}
resolved to its cell's effective settings (baseline, arm(s), tuned values from ablation.json,
else the spec's own), so that a claim reads an ablation run as it reads the equivalent grid
run. Hand-made trial records as in tests/test_claims.py; no Ray, no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.claims import cells
from service.claims import measures as claimdata
from service.claims import registry as claims
from service.config.spec import parse_spec
from service.results import ablation as stats
from service.results.records import Summary, TrialRecord
from service.rundir import ABLATION, ARM_KEY, SEED_KEY

SEEDS = range(4)
# Claim 1's space (searchspaces/claims/01_relu.yaml) as a study: no search, no budget.seeds.
BASE = {
    "name": "claim01_relu_ablation",
    "data": {"dataset": "digits", "image_size": 67, "augmentation": {"crop_padding": 6}},
    "model": {"family": "alexnet", "knobs": {"width_mult": 0.25, "fc_width": 256}},
    "train": {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "lr": 0.02},
    "budget": {"max_epochs": 3, "metric": "val_acc", "mode": "max"},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}
RELU_TANH = {"baseline": {"activation": "relu"}, "arms": {"tanh": {"activation": "tanh"}},
             "seeds": len(SEEDS)}
# Claim 3's 2x2 design as a factorial study with an empty baseline: crop none and lighting 0.0
# are the augmentation's defaults, so the baseline cell resolves to ("none", 0.0).
AUGMENT = {"baseline": {}, "arms": {"crops": {"crop": "random"}, "light": {"lighting": 0.1}},
           "design": "factorial", "seeds": len(SEEDS)}
# Claim 7's design: each change alone from the full net.
DEPTH = {"baseline": {"fc_width": 128, "remove_layers": "none"},
         "arms": {"wide": {"fc_width": 1024}, "no34": {"remove_layers": "3,4"},
                  "no67": {"remove_layers": "6,7"}}, "seeds": len(SEEDS)}


def _spec(ablation: dict, **more) -> dict:
    """The spec as summary.json records it: validated, then dumped."""
    return parse_spec({**BASE, "ablation": ablation, **more}).model_dump(mode="json")


def _trial(tid: str, config: dict, history: list[dict], status: str = "completed"
           ) -> TrialRecord:
    t = TrialRecord.from_history(tid, config, status, history)
    t.history = history  # what store.load_run attaches from the trial's directory
    return t


def _history(rate: float, final: float) -> list[dict]:
    """Three epochs: train_acc rising at `rate` per epoch from 0.1, val_acc ending at `final`."""
    return [{"epoch": e, "train_acc": min(0.99, 0.1 + rate * e), "val_acc": final - 0.01 * (3 - e),
             "val_loss": 1.0 - final + 0.01 * (3 - e)} for e in (1, 2, 3)]


def _summary(trials: list[TrialRecord], spec: dict) -> Summary:
    return Summary.ranked(trials, name="hand-made", spec=spec)


def _ablation_run(spec: dict, histories: dict[str, dict[int, list[dict]]]) -> Summary:
    """An ablation run: one trial per (cell, seed) with config {ARM_KEY: cell, SEED_KEY: seed}."""
    return _summary([_trial(f"{cell}-{s}", {ARM_KEY: cell, SEED_KEY: s}, h)
                     for cell, by_seed in histories.items() for s, h in by_seed.items()], spec)


def _grid_run(keys: list[str], histories: dict[tuple, dict[int, list[dict]]]) -> Summary:
    """The grid run of the same conditions: config {key: value, ..., SEED_KEY: seed}."""
    spec = {"budget": {"metric": "val_acc"}, "search": {k: {} for k in keys}}
    return _summary([_trial(f"{cond}-{s}", {**dict(zip(keys, cond, strict=True)), SEED_KEY: s}, h)
                     for cond, by_seed in histories.items() for s, h in by_seed.items()], spec)


def _ids(conds: dict[tuple, claimdata.Trials]) -> dict[tuple, dict[int, str]]:
    return {c: {s: t.trial_id for s, t in by_seed.items()} for c, by_seed in conds.items()}


RELU_HIST = {"baseline": {s: _history(0.30 - 0.02 * s, 0.95 + 0.005 * s) for s in SEEDS},
             "tanh": {s: _history(0.12 + 0.01 * s, 0.93 + 0.004 * s) for s in SEEDS}}


def test_trials_group_by_a_key_the_arms_set_as_in_a_grid_run():
    run = _ablation_run(_spec(RELU_TANH), RELU_HIST)
    conds = claimdata.conditions(run, ["activation"])
    assert _ids(conds) == {("relu",): {s: f"baseline-{s}" for s in SEEDS},
                           ("tanh",): {s: f"tanh-{s}" for s in SEEDS}}
    # A factorial study's cells: the baseline, each arm and their combination, each resolved
    # through every arm it combines (and the augmentation's defaults for the empty baseline).
    hist = {c: {s: _history(0.2, 0.9) for s in SEEDS}
            for c in ("baseline", "crops", "light", "crops+light")}
    conds = claimdata.conditions(_ablation_run(_spec(AUGMENT), hist), ["crop", "lighting"])
    assert {c: sorted({t.trial_id.rsplit("-", 1)[0] for t in by_seed.values()})
            for c, by_seed in conds.items()} == {
        ("none", 0.0): ["baseline"], ("random", 0.0): ["crops"], ("none", 0.1): ["light"],
        ("random", 0.1): ["crops+light"]}


def test_a_key_the_study_does_not_set_is_the_specs_own_for_every_cell():
    run = _ablation_run(_spec(RELU_TANH), RELU_HIST)
    value = cells.resolver(run)
    expected = {"fc_width": 256, "width_mult": 0.25,  # model.knobs
                "lr": 0.02, "momentum": 0.9, "batch_size": 64,  # train
                "weight_decay": 5e-4,  # train's default (the spec does not set it)
                "image_size": 67, "dataset": "digits",  # data
                "crop_padding": 6, "crop": "none",  # data.augmentation, set and default
                "lrn": True, "pool": "overlap",  # the alexnet preset's knobs
                "epochs": 3, "model": "alexnet",  # budget.max_epochs, model.family
                "no_such_setting": None}
    for t in run.trials:
        assert {k: value(t.config, k) for k in expected} == expected, t.config
    # Grouped by such keys, every cell lands in the one condition.
    conds = claimdata.conditions(run, ["activation", "fc_width", "lr", "no_such_setting"])
    assert set(conds) == {("relu", 256, 0.02, None), ("tanh", 256, 0.02, None)}


def test_a_grid_run_reads_its_trial_configs_only():
    # Unchanged for grid runs: a key the grid did not search is None, not the spec's value.
    run = _grid_run(["activation"], {("relu",): RELU_HIST["baseline"]})
    run.spec.update(model={"family": "alexnet", "knobs": {"fc_width": 256}})
    assert set(claimdata.conditions(run, ["activation", "fc_width"])) == {("relu", None)}


def _tuned_study_json(run_dir: Path, tuned: dict[str, dict]) -> None:
    """ablation.json as service.tune.ablation.ablation_json writes it (service.results.ablation
    .study), with `tuned` per cell."""
    settings = {"baseline": {"activation": "relu"}, "tanh": {"activation": "tanh"},
                "avg": {"activation": "relu", "pool": "plain"}}
    study = stats.study(
        name="s", run_id="r", metric="val_acc", mode="max", alpha=0.05, design="one-at-a-time",
        epochs=3, seeds=list(SEEDS), cells={c: {**s, **tuned[c]} for c, s in settings.items()},
        changes={"tanh": {"activation": "tanh"}, "avg": {"pool": "plain"}},
        values={c: {s: 0.9 + 0.01 * s + 0.001 * i for s in SEEDS}
                for i, c in enumerate(settings)},
        tuned=tuned, tuning={c: [0.8, 0.9] for c in settings},
        tuning_space={"lr": {"type": "float"}}, tuning_trials=2)
    (run_dir / ABLATION).write_text(json.dumps(study))


def test_a_tuned_study_uses_each_cells_tuned_values(tmp_path):
    base_train = {k: v for k, v in BASE["train"].items() if k != "lr"}  # lr is tuned
    lr = {"type": "float", "low": 0.001, "high": 0.1, "log": True}
    spec = _spec({**RELU_TANH, "arms": {"tanh": {"activation": "tanh"}, "avg": {"pool": "plain"}},
                  "tune": {"space": {"lr": lr}, "trials": 2}},
                 train=base_train, searcher={"type": "random", "seed": 0})
    run = _ablation_run(spec, {**RELU_HIST, "avg": RELU_HIST["tanh"]})
    # The avg cell's tuning found nothing ({}): it trained the spec's lr (train's default).
    _tuned_study_json(tmp_path, {"baseline": {"lr": 0.01}, "tanh": {"lr": 0.03}, "avg": {}})
    conds = claimdata.conditions(run, ["activation", "pool", "lr"], tmp_path)
    assert _ids(conds) == {("relu", "overlap", 0.01): {s: f"baseline-{s}" for s in SEEDS},
                           ("tanh", "overlap", 0.03): {s: f"tanh-{s}" for s in SEEDS},
                           ("relu", "plain", 0.05): {s: f"avg-{s}" for s in SEEDS}}
    # Without ablation.json the tuned values are unknown: said, not guessed.
    with pytest.raises(claimdata.ClaimError, match="tuned lr per cell"):
        claimdata.conditions(run, ["lr"], tmp_path / "elsewhere")
    # Keys that were not tuned still resolve without it.
    assert set(claimdata.conditions(run, ["activation"])) == {("relu",), ("tanh",)}


def test_an_unknown_cell_is_a_claim_error():
    run = _ablation_run(_spec(RELU_TANH), {"sigmoid": RELU_HIST["tanh"]})
    with pytest.raises(claimdata.ClaimError, match="cell 'sigmoid'"):
        claimdata.conditions(run, ["activation"])


@pytest.mark.parametrize("number, ablation, grid_keys, cell_of", [
    (1, RELU_TANH, ["activation"], {("relu",): "baseline", ("tanh",): "tanh"}),
    (7, DEPTH, ["fc_width", "remove_layers"], {(128, "none"): "baseline", (1024, "none"): "wide",
                                               (128, "3,4"): "no34", (128, "6,7"): "no67"}),
])
def test_a_claims_rows_are_the_same_on_the_ablation_and_the_grid_run(
        tmp_path, number, ablation, grid_keys, cell_of):
    histories = {cond: {s: _history(0.22 + 0.04 * i + 0.01 * (s % 2) + 0.004 * s,
                                    0.90 + 0.01 * i + 0.003 * s + 0.002 * (i * s % 3))
                        for s in SEEDS} for i, cond in enumerate(cell_of)}
    grid = claims.claim_rows(number, [(tmp_path, _grid_run(grid_keys, histories))])
    knobs = {"width_mult": 0.25, **({"fc_width": 256} if "fc_width" not in grid_keys else {})}
    spec = _spec(ablation, model={"family": "alexnet", "knobs": knobs})
    run = _ablation_run(spec, {cell_of[c]: h for c, h in histories.items()})
    rows = claims.claim_rows(number, [(tmp_path, run)])
    if number == 1:  # the ablation run knows the lr each activation trained with; a grid
        # run that did not search lr does not
        assert [r["note"] for r in rows[:2]] == ["lr 0.02", "lr 0.02"]
        assert [r["note"] for r in grid[:2]] == ["", ""]
        for r in rows[:2]:
            r["note"] = ""
    assert json.dumps(rows, sort_keys=True) == json.dumps(grid, sort_keys=True)
    assert all(r["n"] == len(SEEDS) for r in rows if r["expect"] is not None)
    assert any(r["verdict"] is not None for r in rows)
