"""service/claims/design.py describes an ablation space (its cells with the settings each sets,
paired seeds, per-cell tuning and the trial count) as well as a grid space, whose text is the
one docs/claims.md shows. Fast: YAML only, no Ray, no training."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.claims.design import SPACES, design

LRN = SPACES / "04_lrn.yaml"
EVOLUTION = SPACES / "08_evolution.yaml"
HEAD = ("alexnet (width_mult 0.25, fc_width 256) on mnist_test at 67 px; sgd, momentum 0.9, "
        "lr 0.02, batch size 64, schedule cosine, 8 epochs; ")


def _space(tmp_path: Path, ablation: dict) -> Path:
    """Claim 4's space with another ablation block."""
    spec = yaml.safe_load(LRN.read_text())
    spec["ablation"] = ablation
    if "tune" in ablation:
        spec["searcher"], spec["scheduler"] = {"type": "random", "seed": 0}, {"type": "asha"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_spaces_read_as_in_docs_claims_md():
    grid = ("`searchspaces/claims/08_evolution.yaml`: alexnet (width_mult 0.25, fc_width 256) "
            "on digits at 67 px; sgd, momentum 0.9, lr 0.02, batch size 64, 15 epochs; "
            "lrn ∈ {true}: 1 condition × 8 seeds = 8 trials")
    study = (f"`searchspaces/claims/04_lrn.yaml`: {HEAD}ablation, cells baseline (lrn false); "
             "lrn (lrn true): 2 cells × 8 paired seeds = 16 trials")
    assert (design(EVOLUTION), design(LRN)) == (grid, study)
    doc = (SPACES.parents[2] / "docs" / "claims.md").read_text()
    assert f"- Design: {grid}\n" in doc and f"- Design: {study}\n" in doc


def test_an_ablation_names_the_baseline_and_each_arm_with_its_settings(tmp_path):
    path = _space(tmp_path, {"baseline": {"activation": "relu"},
                             "arms": {"tanh": {"activation": "tanh", "dropout": 0.0}},
                             "seeds": 4})
    assert design(path) == (f"`{path.as_posix()}`: {HEAD}ablation, cells baseline (activation "
                            "relu); tanh (activation tanh, dropout 0): 2 cells × 4 paired "
                            "seeds = 8 trials")


def test_a_factorial_ablation_names_every_combination(tmp_path):
    path = _space(tmp_path, {"baseline": {"crop": "none"},
                             "arms": {"crop": {"crop": "random"}, "light": {"lighting": 0.1}},
                             "design": "factorial", "seeds": 5})
    assert design(path).endswith(
        f"{HEAD}factorial ablation, cells baseline (crop none); crop (crop random); light "
        "(lighting 0.1); crop+light (crop random, lighting 0.1): 4 cells × 5 paired seeds = "
        "20 trials")


def test_a_tuned_ablation_counts_the_tuning_trials_of_every_cell(tmp_path):
    path = _space(tmp_path, {"arms": {"tanh": {"activation": "tanh"}, "drop": {"dropout": 0.0}},
                             "seeds": 3,
                             "tune": {"space": {"lr": {"type": "float", "low": 0.001,
                                                       "high": 0.1, "log": True},
                                                "batch_size": {"type": "choice",
                                                               "values": [32, 64]}},
                                      "trials": 6}})
    text = design(path)
    # lr and batch_size are tuned per cell, so the fixed training line no longer shows them
    assert "; sgd, momentum 0.9, schedule cosine, 8 epochs; ablation, cells baseline; tanh " \
           "(activation tanh); drop (dropout 0): " in text
    assert text.endswith("3 cells × 3 paired seeds = 9 trials + 6 tuning trials per cell at "
                         "seed 0 over lr: float 0.001–0.1 (log); batch_size ∈ {32, 64} = "
                         "27 trials")


def test_an_ablation_block_that_does_not_read_says_so(tmp_path):
    path = _space(tmp_path, {"arms": {"baseline": {"activation": "tanh"}}})
    assert design(path).endswith("8 epochs; ablation block does not read: Value error, arm "
                                 "name 'baseline': letters, digits, _ . - only, and not "
                                 "'baseline'")
