"""service.claims (registry and measures): the claims' rows on hand-made trial records (each
effect equal to service.results.paired's on the same per-seed values, Holm across the claim),
the per-trial analyses and the CLI on a real sweep (the session's 4-trial conv1 grid, which is
claim 6's design with one seed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_main

from service.claims import checkpoints
from service.claims import measures as claimdata
from service.claims import registry as claims
from service.config.spec import load_spec
from service.results import paired
from service.results.records import Summary, TrialRecord
from service.rundir import SEED_KEY

ROOT = Path(__file__).resolve().parents[1]
STATS = ("n", "p", "p_perm", "d_z", "win_share")  # the same numbers in a row and an ArmResult


def _trial(tid: str, config: dict, history: list[dict], status: str = "completed"
           ) -> TrialRecord:
    t = TrialRecord.from_history(tid, config, status, history)
    t.history = history  # what store.load_run attaches from the trial's directory
    return t


def _run(trials: list[TrialRecord]) -> list[tuple[Path, Summary]]:
    summary = Summary.ranked(trials, name="hand-made", spec={"budget": {"metric": "val_acc"}})
    return [(Path("unused"), summary)]


def _final_only(key: str, value, seed: int, acc: float, loss: float = 0.1) -> TrialRecord:
    return _trial(f"{key}-{value}-{seed}", {key: value, SEED_KEY: seed},
                  [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "train_acc": 0.5},
                   {"epoch": 2, "val_acc": acc, "val_loss": loss, "train_acc": 0.9}])


def _same_as_compare(row: dict, result: paired.ArmResult) -> None:
    for key in STATS:
        assert row[key] == getattr(result, key), key
    assert (row["mean"], row["ci_low"], row["ci_high"], row["boot_low"], row["boot_high"],
            row["mde"]) == (result.effect, result.ci_low, result.ci_high, result.boot_low,
                            result.boot_high, result.mde)
    assert [r["diff"] for r in row["per_seed"]] == [round(r["diff"], 5)
                                                    for r in result.per_seed]


def test_crossing_interpolates_between_epochs():
    hist = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}, {"epoch": 3, "acc": 0.9}]
    assert claimdata.crossing(hist, "acc", 0.8, 0.1) == pytest.approx(2.5)
    assert claimdata.crossing(hist, "acc", 0.3, 0.1) == pytest.approx(0.5)  # from (0, 0.1)
    assert claimdata.crossing(hist, "acc", 0.95, 0.1) is None


def test_a_layer_settles_at_the_first_epoch_from_which_it_stays_above_the_threshold():
    curve = [(1, 0.5), (2, 0.95), (3, 0.85), (4, 0.92), (5, 1.0)]
    assert claimdata.settled(curve) == 4.0  # epoch 2's 0.95 does not last
    assert claimdata.settled(curve, 0.8) == 2.0
    assert claimdata.settled([(1, 0.2), (2, 1.0)]) == 2.0  # only the last epoch itself


def test_claim_rows_are_paired_compare_and_holm_on_trial_records():
    # Claim 4 (LRN): accuracy expected up, loss expected down. Seed 5 has no partner, a
    # diverged trial is left out, and seed 3's NaN loss drops it from the loss row only.
    base_acc = {s: 0.95 + 0.004 * s for s in range(5)}
    gain = [0.010, 0.012, 0.008, 0.011, 0.009]
    loss_up = [0.02, 0.03, 0.025, math.nan, 0.028]
    trials = [_final_only("lrn", False, s, base_acc[s], 0.10 + 0.01 * s) for s in range(5)]
    trials += [_final_only("lrn", True, s, base_acc[s] + gain[s], 0.10 + 0.01 * s + loss_up[s])
               for s in range(5)]
    trials += [_final_only("lrn", True, 5, 0.99),
               _trial("div", {"lrn": False, SEED_KEY: 5}, [{"epoch": 1, "val_acc": 0.1,
                                                            "val_loss": math.nan}], "diverged")]
    acc_row, loss_row = claims.claim_rows(4, _run(trials))

    points = {lrn: {int(t.config[SEED_KEY]): 100.0 * t.history[-1]["val_acc"] for t in trials
                    if t.config["lrn"] is lrn and not t.failed} for lrn in (False, True)}
    loss = {lrn: {int(t.config[SEED_KEY]): t.history[-1]["val_loss"] for t in trials
                  if t.config["lrn"] is lrn and not t.failed} for lrn in (False, True)}
    acc = paired.compare("acc", points[False], points[True], "max")
    los = paired.compare("loss", loss[False], loss[True], "min")
    _same_as_compare(acc_row, acc)
    _same_as_compare(loss_row, los)
    assert acc_row["n"] == 5 and loss_row["n"] == 4
    assert [r["seed"] for r in loss_row["per_seed"]] == [0, 1, 2, 4]
    # Holm across the claim's two tested rows, and the verdicts from the adjusted p.
    assert [acc_row["p_holm"], loss_row["p_holm"]] == paired.holm([acc.p, los.p])
    assert acc_row["holm_k"] == loss_row["holm_k"] == 2
    assert acc_row["verdict"] == "agrees"  # up, as the paper says
    assert loss_row["verdict"] == "opposite"  # the loss rose, the paper expects it to fall
    json.dumps(acc_row, allow_nan=False)  # claim_NN.json stays strict JSON


def _claim7(acc: dict[tuple, list[float | None]]) -> list[TrialRecord]:
    return [_trial(f"{w}{r}{s}", {"fc_width": w, "remove_layers": r, SEED_KEY: s},
                   [{"epoch": 1, "val_acc": a / 100, "val_loss": 1 - a / 100}])
            for (w, r), values in acc.items() for s, a in enumerate(values) if a is not None]


def test_holm_across_a_claims_rows_can_leave_a_raw_significant_row_not_resolved():
    # Claim 7: three arms against the same full net and a derived row; the wide FC alone would
    # be "helps" at p 0.024, but Holm over the claim's four rows makes it 0.097.
    base = [90.0, 91.0, 92.0, 93.0, 94.0]
    deltas = {(1024, "none"): [1.0, 1.4, 0.5, 1.2, 0.1],
              (256, "3,4"): [-0.5, 0.5, -0.3, 0.2, 0.0],
              (256, "6,7"): [0.3, -0.6, -0.1, 0.4, -0.2]}
    acc = {(256, "none"): base, **{c: [b + x for b, x in zip(base, d, strict=True)]
                                   for c, d in deltas.items()}}
    rows = claims.claim_rows(7, _run(_claim7(acc)))
    pts = {c: {s: 100.0 * (a / 100) for s, a in enumerate(v)} for c, v in acc.items()}
    full = pts[(256, "none")]
    wide = paired.compare("w", full, pts[(1024, "none")])
    _same_as_compare(rows[0], wide)
    _same_as_compare(rows[1], paired.compare("d", pts[(256, "3,4")], full))
    assert wide.verdict == "helps" and wide.p < 0.05
    assert [r["p_holm"] for r in rows] == paired.holm([r["p"] for r in rows])
    assert rows[0]["p_holm"] == pytest.approx(4 * wide.p) and rows[0]["p_holm"] > 0.05
    assert [r["verdict"] for r in rows] == ["not resolved"] * 4
    table = claims.markdown({"claim": 7, "title": "t", "rows": rows})
    assert f"| {rows[0]['p_holm']:.2g} | {rows[0]['mde']:.2f} pts |" in table
    assert "Holm-adjusted across the claim's 4 row(s)" in table


def test_the_papers_effect_is_carried_over_as_a_share_of_the_error_with_its_seeds():
    # LRN's 1.4 of 42.1 points of top-1 error, carried over to the no-LRN trials' mean error
    # here (4%), and the paired seeds that detect it at the spread of these differences.
    base_acc = [0.96, 0.955, 0.965, 0.96, 0.96]
    gain = [0.001, -0.002, 0.003, 0.0, 0.002]
    trials = [_final_only("lrn", False, s, a) for s, a in enumerate(base_acc)]
    trials += [_final_only("lrn", True, s, a + g) for s, (a, g) in
               enumerate(zip(base_acc, gain, strict=True))]
    acc_row, loss_row = claims.claim_rows(4, _run(trials))
    assert acc_row["target"] == pytest.approx(4.0 * 1.4 / 42.1)
    diffs = [r["diff"] for r in acc_row["per_seed"]]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    assert acc_row["n_target"] == paired.seeds_needed(acc_row["target"], sd)
    assert paired.paired_power(acc_row["target"], sd, acc_row["n_target"]) >= paired.POWER
    assert paired.paired_power(acc_row["target"], sd, acc_row["n_target"] - 1) < paired.POWER
    assert loss_row["target"] is None and loss_row["n_target"] is None  # no paper number


def test_derived_rows_of_claim_7():
    # |depth effect| - |width effect| is paired by seed like the rest: the wide net has no
    # seed 2, so that seed is out of both the width row and the derived row.
    acc = {(128, "none"): [97.0, 97.5, 96.8, 97.2, 97.9],
           (1024, "none"): [97.4, 97.1, None, 97.6, 98.3],
           (128, "3,4"): [95.0, 96.9, 95.5, 96.0, 96.1],
           (128, "6,7"): [96.0, 96.1, 95.2, 96.5, 97.0]}
    width, depth34, depth67, size = claims.claim_rows(7, _run(_claim7(acc)))
    pts = {c: {s: 100.0 * (a / 100) for s, a in enumerate(v) if a is not None}
           for c, v in acc.items()}
    w = paired.compare("w", pts[(128, "none")], pts[(1024, "none")])
    d = paired.compare("d", pts[(128, "3,4")], pts[(128, "none")])
    _same_as_compare(width, w)
    _same_as_compare(depth34, d)
    assert width["n"] == 4 and depth34["n"] == 5
    expected = paired.compare("s", {r["seed"]: abs(r["diff"]) for r in w.per_seed},
                              {r["seed"]: abs(r["diff"]) for r in d.per_seed})
    _same_as_compare(size, expected)
    assert [r["seed"] for r in size["per_seed"]] == [0, 1, 3, 4]
    assert {r["holm_k"] for r in (width, depth34, depth67, size)} == {4}
    ps = [paired.compare("", pts[a], pts[b]).p
          for a, b in (((128, "none"), (1024, "none")), ((128, "3,4"), (128, "none")),
                       ((128, "6,7"), (128, "none")))] + [expected.p]
    assert [r["p_holm"] for r in (width, depth34, depth67, size)] == paired.holm(ps)
    # The depth rows' paper effect: ZFNet's error rise without the layers, as a share of its
    # error, on the full net's error here.
    full_error = sum(100 - a for a in acc[(128, "none")]) / 5
    assert depth34["target"] == pytest.approx(full_error * 4.9 / 40.5)


def test_ratio_row_is_compare_on_the_logs():
    # Claim 1: epochs to 25% training error, tanh / ReLU; tanh seed 4 never gets there.
    relu_acc = [0.45, 0.50, 0.55, 0.40, 0.50]  # ReLU crosses between epochs 2 and 3
    tanh_acc = [0.55, 0.50, 0.60, 0.45, 0.30]  # tanh between epochs 1 and 2

    def curve(*train_acc: float) -> list[dict]:
        return [{"epoch": e, "train_acc": a, "val_acc": 0.9 + 0.01 * e}
                for e, a in enumerate(train_acc, start=1)]

    trials = [_trial(f"relu{s}", {"activation": "relu", SEED_KEY: s},
                     curve(0.1, relu_acc[s], 0.9)) for s in range(5)]
    trials += [_trial(f"tanh{s}", {"activation": "tanh", SEED_KEY: s},
                      curve(tanh_acc[s], 0.85 if s < 4 else 0.5, 0.9 if s < 4 else 0.6))
               for s in range(5)]
    relu_lvl, tanh_lvl, ratio, later, acc = claims.claim_rows(1, _run(trials))

    to25 = {t.trial_id: claimdata.crossing(t.history, "train_acc", 0.75, 0.1) for t in trials}
    relu = {s: to25[f"relu{s}"] for s in range(5)}
    tanh = {s: to25[f"tanh{s}"] for s in range(5)}
    assert tanh[4] is None and relu_lvl["n"] == 5 and tanh_lvl["n"] == 4
    assert tanh_lvl["note"] == "1 seeds never got there"  # a grid run: no tuned lr to name
    assert ratio["target"] == 6.0 and ratio["n_target"] is not None
    logs = paired.compare("r", {s: math.log(v) for s, v in relu.items()},
                          {s: math.log(v) for s, v in tanh.items() if v is not None})
    assert ratio["kind"] == "ratio" and ratio["n"] == logs.n == 4
    for key in STATS:
        assert ratio[key] == getattr(logs, key), key
    assert ratio["mean"] == pytest.approx(math.exp(logs.effect), rel=1e-12)
    assert (ratio["ci_low"], ratio["ci_high"]) == pytest.approx(
        (math.exp(logs.ci_low), math.exp(logs.ci_high)), rel=1e-12)
    assert ratio["mde"] == pytest.approx(math.exp(logs.mde), rel=1e-12)
    # The geometric mean of the per-seed ratios, worked out directly.
    ratios = [tanh[s] / relu[s] for s in range(4)]
    assert ratio["mean"] == pytest.approx(math.prod(ratios) ** (1 / 4), rel=1e-12)
    assert [r["ratio"] for r in ratio["per_seed"]] == [round(r, 5) for r in ratios]
    assert ratio["ci_low"] < ratio["mean"] < ratio["ci_high"] < 1  # tanh was faster here
    assert ratio["p_holm"] == paired.holm([logs.p, acc["p"]])[0]
    assert later["expect"] is None and later["verdict"] is None  # no paper number: no test
    assert later["n"] == 0 or later["n"] is None  # no curve reaches 95% here
    assert ratio["verdict"] == "opposite"  # the paper expects ReLU faster (ratio above 1)
    line = claims.fmt(ratio)
    assert line == f"{ratio['mean']:.2f}x [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]"


def test_rows_with_too_few_seeds():
    one = [_final_only("lrn", lrn, 0, acc) for lrn, acc in ((False, 0.95), (True, 0.96))]
    rows = claims.claim_rows(4, _run(one))
    acc = rows[0]
    assert acc["n"] is None and acc["mean"] is None and acc["verdict"] is None
    assert "at least 2 seeds" in acc["notes"][0]
    assert acc["values"]["arm"]["0"] - acc["values"]["baseline"]["0"] == pytest.approx(1.0)
    json.dumps(rows, allow_nan=False)
    table = claims.markdown({"claim": 4, "title": "LRN", "rows": rows})
    assert "| final val accuracy, LRN - none | fewer than 2 paired seeds | <2 | — | — |" in table


def test_levels_keep_mean_ci95():
    r = claimdata.level("x", [1.0, 1.5, 1.0, None, math.nan], unit="pts")
    # mean 1.1667, sd 0.2887, t(0.975, 2) = 4.3027: half-width 0.7172
    assert r["n"] == 3 and r["mean"] == pytest.approx(7 / 6)
    assert r["ci95"] == pytest.approx(0.71716, abs=1e-4) and r["verdict"] is None
    assert claims.fmt(r) == "1.17 ± 0.72 pts"
    assert claimdata.level("x", [])["mean"] is None


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    assert checkpoints.linear_cka(x, x) == pytest.approx(1.0)
    # Invariant to rotations and isotropic scaling of the features, as CKA is.
    assert checkpoints.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    unrelated = torch.randn(200, 30, generator=g, dtype=torch.float64)
    assert checkpoints.linear_cka(x, unrelated) < 0.3


def test_every_claim_has_its_spaces():
    for claim in claims.CLAIMS.values():
        for space in claim.spaces:
            spec = load_spec(claims.SPACES / space)  # validates
            seeds = spec.ablation.seeds if spec.ablation else spec.budget.seeds
            assert seeds >= 5 and spec.scheduler.type == "none"
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
    acc = rows["val accuracy, 7x7/2 - 11x11/4"]  # one seed: no paired statistics
    assert acc["n"] is None and acc["mean"] is None and acc["verdict"] is None
    values = acc["values"]
    assert values["arm"]["0"] - values["baseline"]["0"] == pytest.approx(
        100 * (final[(7, 2)] - final[(11, 4)]), abs=1e-3)
    dead = rows["dead conv1 filters, 11x11/4 - 7x7/2"]
    assert dead["n"] is None and all(0 <= v <= 100 for v in dead["values"]["arm"].values())
    assert rows["layer-2 aliasing (over noise), 11x11/4 - 7x7/2"]["n"] is None
    assert "| val accuracy, 7x7/2 - 11x11/4 |" in proc.stdout
    table = subprocess.run([sys.executable, "-m", "service.claims", "table", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0
    assert "#### Claim 6: ZFNet's conv1 beats AlexNet's (cpu)" in table.stdout


@pytest.mark.slow
def test_evolution_and_invariance_measures_on_a_real_sweep(alexnet_run):
    run = claims.load_run(alexnet_run)
    trial = next(t for t in run.trials if t.status == "completed")
    curves = checkpoints.cka_to_last(alexnet_run, trial)
    settle = {layer: claimdata.settled(curve) for layer, curve in curves.items()}
    assert list(settle) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    last = trial.history[-1]["epoch"]
    assert all(1 <= e <= last for e in settle.values())
    probs = checkpoints.invariance_probs(alexnet_run, trial, images=16)
    for key in ("identity", "shift", "scale", "rot90", "rot180"):
        assert 0.0 <= probs[key] <= 1.0
    assert probs["shift_px"] == 4 and probs["scales"] == [0.8, 1.2]  # 67 px: shifts of 4 px
    rows = claims.measure(8, [alexnet_run])["rows"]
    assert rows[-2]["quantity"] == "conv5 - conv1 settling epoch"
    finished = [t for t in run.trials if t.status not in ("error", "diverged")]
    assert rows[-2]["n"] == len(finished)
    # The mean CKA before the last epoch needs two checkpoints or more.
    several = [t for t in finished if len(checkpoints.cka_to_last(alexnet_run, t)["conv1"]) > 1]
    assert rows[-1]["quantity"].startswith("mean CKA") and rows[-1]["n"] == len(several)


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from service.claims.__main__ import main

    cases = [
        (["measure", "11", str(tmp_path)], "claim 11: no such claim"),
        (["measure", "4", str(tmp_path)], "no summary.json"),
        (["measure", "10", str(tmp_path)], "needs 3 run directories"),
        (["table", str(tmp_path)], "no claim_*.json"),
    ]
    for args, message in cases:
        proc = run_main(main, args, capsys)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert math.isfinite(claimdata.level("x", [1.0, 2.0])["mean"])
