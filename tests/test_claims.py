"""service.claims (registry and measures): the statistics on hand-made numbers, the per-trial
analyses and the CLI on a real sweep (the session's 4-trial conv1 grid, which is claim 6's
design with one seed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.claims import measures as claimdata
from service.claims import registry as claims
from service.config.spec import load_spec
from service.results.stats import paired

ROOT = Path(__file__).resolve().parents[1]


def test_crossing_interpolates_between_epochs():
    hist = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}, {"epoch": 3, "acc": 0.9}]
    assert claimdata.crossing(hist, "acc", 0.8, 0.1) == pytest.approx(2.5)
    assert claimdata.crossing(hist, "acc", 0.3, 0.1) == pytest.approx(0.5)  # from (0, 0.1)
    assert claimdata.crossing(hist, "acc", 0.95, 0.1) is None


def test_paired_effects_and_verdicts():
    a = {0: {"v": 1.0}, 1: {"v": 2.0}, 2: {"v": 3.0}, 9: {"v": 5.0}}
    b = {0: {"v": 2.0}, 1: {"v": 3.5}, 2: {"v": 4.0}}
    diffs = paired(a, b, lambda t: t["v"])
    assert diffs == [1.0, 1.5, 1.0]  # seed 9 has no partner
    assert paired(a, b, lambda t: t["v"], "ratio") == [2.0, 1.75, 4.0 / 3.0]
    r = claimdata.row("x", diffs, "paper", "+")
    # mean 1.1667, sd 0.2887, t(0.975, 2) = 4.3027: half-width 0.7172
    assert r["mean"] == pytest.approx(7 / 6) and r["ci95"] == pytest.approx(0.71716, abs=1e-4)
    assert r["verdict"] == "agrees"
    assert claimdata.row("x", diffs, "", "-")["verdict"] == "opposite"
    assert claimdata.row("x", [1.0, -1.0, 0.5], "", "+")["verdict"] == "inconclusive"
    assert claimdata.row("x", [2.0, 2.5, 3.0], "", "+", zero=2.0)["verdict"] == "inconclusive"
    assert claimdata.row("x", [4.0], "", "+")["verdict"] is None  # one seed: no interval


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    assert claimdata.linear_cka(x, x) == pytest.approx(1.0)
    # Invariant to rotations and isotropic scaling of the features, as CKA is.
    assert claimdata.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    unrelated = torch.randn(200, 30, generator=g, dtype=torch.float64)
    assert claimdata.linear_cka(x, unrelated) < 0.3


def test_every_claim_has_its_spaces():
    for claim in claims.CLAIMS.values():
        for space in claim.spaces:
            spec = load_spec(claims.SPACES / space)  # validates
            assert spec.budget.seeds >= 5 and spec.scheduler.type == "none"
    assert sorted(claims.CLAIMS) == list(range(1, 11))


@pytest.mark.slow
def test_measure_claim6_on_a_real_sweep(alexnet_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "service.claims", "measure", "6",
                           str(alexnet_run), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "claim_06.json")
    result = json.loads((tmp_path / "claim_06.json").read_text())
    rows = {r["quantity"]: r for r in result["rows"]}
    summary = json.loads((alexnet_run / "summary.json").read_text())
    final = {(t["config"]["conv1_kernel"], t["config"]["conv1_stride"]): t["final"]["val_acc"]
             for t in summary["trials"]}
    acc = rows["val accuracy, 7x7/2 - 11x11/4"]
    assert acc["n"] == 1 and acc["ci95"] is None and acc["verdict"] is None
    assert acc["mean"] == pytest.approx(100 * (final[(7, 2)] - final[(11, 4)]), abs=1e-3)
    dead = rows["dead conv1 filters, 11x11/4 - 7x7/2"]
    assert dead["n"] == 1 and -100 <= dead["mean"] <= 100
    assert rows["layer-2 aliasing (over noise), 11x11/4 - 7x7/2"]["n"] == 1
    assert "| val accuracy, 7x7/2 - 11x11/4 |" in proc.stdout
    table = subprocess.run([sys.executable, "-m", "service.claims", "table", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0
    assert "#### Claim 6: ZFNet's conv1 beats AlexNet's (digits)" in table.stdout


@pytest.mark.slow
def test_evolution_and_invariance_measures_on_a_real_sweep(alexnet_run):
    run = claims.load_run(alexnet_run)
    trial = next(t for t in run.trials if t.status == "completed")
    settle = claimdata.settle_epochs(alexnet_run, trial)
    assert list(settle) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    last = trial.history[-1]["epoch"]
    assert all(1 <= e <= last for e in settle.values())
    probs = claimdata.invariance_probs(alexnet_run, trial, images=16)
    for key in ("identity", "shift", "scale", "rot90", "rot180"):
        assert 0.0 <= probs[key] <= 1.0
    assert probs["shift_px"] == 4 and probs["scales"] == [0.8, 1.2]  # 67 px: shifts of 4 px
    rows = claims.measure(8, [alexnet_run])["rows"]
    assert rows[-1]["quantity"] == "conv5 - conv1 settling epoch"
    assert rows[-1]["n"] == len([t for t in run.trials if t.status not in ("error", "diverged")])


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tmp_path):
    cases = [
        (["measure", "11", str(tmp_path)], "claim 11: no such claim"),
        (["measure", "4", str(tmp_path)], "no summary.json"),
        (["measure", "10", str(tmp_path)], "needs 3 run directories"),
        (["table", str(tmp_path)], "no claim_*.json"),
    ]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "service.claims", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert math.isfinite(claimdata.row("x", [1.0, 2.0], "")["mean"])
