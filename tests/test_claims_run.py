"""`python -m service.claims run` end to end, and every claim's measure on real trained trials.

Two real sweeps, each run once per module:
- claim 8's shipped space through `python -m service.claims run 8 --max-epochs 2`: quarter-width
  AlexNet on digits, one condition x 8 seeds, no tuning phase and a measure of seconds a trial
  (claims 1-7 are ablation studies of at least 16 trials, most of them tuned first; claim 10
  trains 24; claim 9's space, the same design with 5 seeds, is measured on two of this run's
  trials instead, its invariance analysis costing seconds a trial). `--max-epochs` is the only
  size the CLI lets a user change; 2 epochs, not 1, so that a trial has two checkpoints to
  settle between and a CKA curve with an epoch before the last.
- LeNet-5 on digits, ReLU vs tanh x 2 seeds, 3 epochs, a grid run: claim 1's real conditions
  (its lr fixed, not tuned: no "lr" note) and claim 10's second family.
Claims 2-7 need conditions these runs do not train (dropout, crops, LRN, pooling, conv1, depth);
their measures are called on these real trials relabelled to grid-style configs of those
conditions (`measures.conditions` reads a config without an ablation `arm` as a grid trial).
The rows that read checkpoints (claim 2's and 3's train - val gaps, claim 6's conv1 health,
claim 8's CKA) are given the relabelled trials' own run directory. Each effect is recomputed
from the per-seed values, and where the row carries the paper's effect (`target`, the paper's
error share of the baseline's mean error for an accuracy row), the seeds it needs (`n_target`)
are recomputed with `service.results.paired.seeds_needed` from the per-seed differences. What
is checked is what each measure computes from real histories and checkpoints, not the papers'
effects.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import joined_env

from service.claims import checkpoints
from service.claims import measures as claimdata
from service.claims import registry as claims
from service.claims.measures import MAX_SEEDS, ClaimError
from service.cli import Exit
from service.config.spec import parse_spec
from service.models import describe
from service.report.data import conv_health
from service.results.paired import seeds_needed
from service.results.records import Summary, TrialRecord
from service.results.store import load_run
from service.rundir import SEED_KEY

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = {"agrees", "opposite", "not resolved"}

LENET = {
    "name": "claims-lenet",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05, "batch_size": 64,
              "num_threads": 1},
    "search": {"activation": {"type": "grid", "values": ["relu", "tanh"]}},
    "budget": {"max_epochs": 3, "num_samples": 1, "seeds": 2},  # 3: curves that cross 75%
    "searcher": {"type": "grid", "seed": 0},
    "scheduler": {"type": "none"},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def _claims(*args: str, timeout: float = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.claims", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def claim8(tmp_path_factory, shared_ray):
    """`claims run 8 --max-epochs 2`: (the finished process, its --results directory)."""
    results = tmp_path_factory.mktemp("claims-run") / "results"
    proc = _claims("run", "8", "--max-epochs", "2", "--results", str(results),
                   env=joined_env(shared_ray))
    return proc, results


@pytest.fixture(scope="module")
def alex_run(claim8) -> Path:
    """The run directory of claim 8's sweep: 8 seeds of quarter-width AlexNet, 2 epochs."""
    proc, results = claim8
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (summary,) = (results / "claim08_evolution").glob("*/summary.json")
    return summary.parent


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, submit_space) -> Path:
    return submit_space(LENET, tmp_path_factory.mktemp("claims-lenet")).parent


def _trials(run: Summary, **config) -> dict[int, TrialRecord]:
    """The run's trials whose config has `config`, by seed index."""
    return {int(t.config[SEED_KEY]): t for t in run.trials
            if all(t.config.get(k) == v for k, v in config.items())}


def _as(trials: list[TrialRecord], **config) -> list[TrialRecord]:
    """The trials relabelled to `config`, as seeds 0, 1, ... in the given order."""
    return [t.model_copy(update={"config": {**config, SEED_KEY: s}})
            for s, t in enumerate(trials)]


def _summary(trials: list[TrialRecord]) -> Summary:
    return Summary.ranked(trials, name="relabelled", spec={"budget": {"metric": "val_acc"}})


def _seeds_for(target: float, diffs: list[float], ratio: bool) -> int:
    """The paired seeds that detect `target` (a factor for a ratio: its log) at the spread of
    these per-seed differences (logs of the ratios); more than MAX_SEEDS counts as one more."""
    size = abs(math.log(target) if ratio else target)
    try:
        return min(seeds_needed(size, statistics.stdev(diffs)), MAX_SEEDS + 1)
    except ValueError:  # more than a million
        return MAX_SEEDS + 1


def _check_effect(row: dict, baseline: dict, arm: dict, ratio: bool = False,
                  target: float | None = None) -> None:
    """An effect row is arm - baseline (arm / baseline) paired by seed on exactly these
    per-seed values, with a consistent mean, interval and verdict; with `target` (the paper's
    effect here), the seeds that would detect it at the spread of these differences."""
    def usable(v):
        return v is not None and math.isfinite(v) and (v > 0 or not ratio)

    seeds = sorted(s for s in baseline if s in arm and usable(baseline[s]) and usable(arm[s]))
    assert row["n"] == len(seeds) >= 2, row
    per = {r["seed"]: r for r in row["per_seed"]}
    assert sorted(per) == seeds
    diffs = []
    for s in seeds:
        assert per[s]["baseline"] == pytest.approx(baseline[s], abs=1e-5)
        assert per[s]["arm"] == pytest.approx(arm[s], abs=1e-5)
        diff = arm[s] / baseline[s] if ratio else arm[s] - baseline[s]
        assert per[s]["ratio" if ratio else "diff"] == pytest.approx(diff, abs=1e-4, rel=1e-4)
        diffs.append(diff)
    mean = math.prod(diffs) ** (1 / len(diffs)) if ratio else sum(diffs) / len(diffs)
    assert row["mean"] == pytest.approx(mean, rel=1e-6, abs=2e-5)  # values rounded to 1e-5
    if row["p"] is not None:  # some spread between the seeds
        assert row["ci_low"] <= row["mean"] <= row["ci_high"] and 0 <= row["p"] <= 1
    if row["expect"] is None:
        assert row["verdict"] is None and row["p_holm"] is None
    else:
        assert row["verdict"] in VERDICTS
        assert row["p_holm"] is None or row["p_holm"] >= row["p"]
    if target is None:
        assert row["target"] is None and row["n_target"] is None, row
    else:
        assert row["target"] == pytest.approx(target, rel=1e-9)
        logs = [math.log(arm[s]) - math.log(baseline[s]) for s in seeds]
        assert row["n_target"] == (None if row["p"] is None else  # no spread: no seeds
                                   _seeds_for(target, logs if ratio else diffs, ratio)), row
    json.dumps(row, allow_nan=False)


def _check_ratio_or_too_few(row: dict, baseline: dict, arm: dict, target: float) -> None:
    """A ratio row of crossing epochs: paired as `_check_effect` says when at least 2 seeds
    crossed on both sides, else no statistics, no seeds needed and the raw values kept."""
    both = [s for s in baseline if baseline[s] is not None and arm.get(s) is not None]
    if len(both) >= 2:
        _check_effect(row, baseline, arm, ratio=True, target=target)
    else:
        assert row["n"] is None and row["verdict"] is None and "at least 2" in row["notes"][0]
        assert row["target"] == target and row["n_target"] is None
        assert row["values"] == {"baseline": {str(s): v for s, v in baseline.items()},
                                 "arm": {str(s): v for s, v in arm.items()}}


def _points(t: TrialRecord) -> float:
    return 100.0 * t.history[-1]["val_acc"]


def _error_share(trials: list[TrialRecord], share: float) -> float:
    """`share` of the trials' mean final val error, in points: an accuracy row's `target`."""
    return share * statistics.fmean(100.0 - _points(t) for t in trials)


def _gaps(run_dir: Path, trials: list[TrialRecord]) -> dict[str, float]:
    """Each trial's eval-mode accuracy on its own 1,437 digits' training images at its last
    checkpoint - its final val accuracy, in points, by trial id."""
    gaps = {}
    for t in trials:
        train = checkpoints.train_accuracy(run_dir, t)
        assert 0.0 < train <= 1.0
        assert math.isclose(train * 1437, round(train * 1437))  # digits' 1,437 training images
        gaps[t.trial_id] = 100.0 * (train - t.history[-1]["val_acc"])
    return gaps


# ---- the CLI, end to end ----

@pytest.mark.slow
def test_claims_run_trains_the_claims_space_measures_it_and_writes_claim_json(claim8, alex_run):
    proc, results = claim8
    out = results / "claim_08.json"
    assert proc.returncode == Exit.OK
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "#### Claim 8: Low layers converge early, high layers late (cpu)" in proc.stdout
    # The sweep: the shipped space at --max-epochs 2, every (condition, seed) one trial, no
    # report (claims runs service.submit with --no-report), nothing else under --results.
    assert sorted(p.name for p in results.iterdir()) == ["claim08_evolution", "claim_08.json"]
    summary = json.loads((alex_run / "summary.json").read_text())
    assert summary["name"] == "claim08_evolution" and summary["spec"]["budget"]["max_epochs"] == 2
    assert sorted(t["config"][SEED_KEY] for t in summary["trials"]) == list(range(8))
    assert {t["status"] for t in summary["trials"]} == {"completed"}
    assert {t["epochs"] for t in summary["trials"]} == {2}
    assert not (alex_run / "report.html").exists()
    # claim_08.json: what `measure` computed from that run, and where it came from.
    result = json.loads(out.read_text())
    assert (result["claim"], result["variant"]) == (8, "cpu")
    assert result["runs"] == [str(alex_run)]
    assert result["spaces"] == ["searchspaces/claims/08_evolution.yaml"]
    # What the run cost: its wall time times the CPUs its plan was sized against; 8 trials,
    # one per seed, no tuning phase.
    cpus = float((summary["plan"].get("cluster") or {}).get("CPU", 1.0))
    assert summary["wall_s"] > 0 and cpus >= 1
    assert result["cost"] == {
        "wall_s": round(summary["wall_s"], 1),
        "cpu_h": round(summary["wall_s"] * cpus / 3600, 3), "trials": 8, "tuning_trials": 0,
        "cpu_s_per_trial": round(summary["wall_s"] * cpus / 8, 1), "trials_per_seed": 1}
    rows = result["rows"]
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [r["quantity"] for r in rows] == [
        *(f"epoch {layer} settles (CKA to last >= 0.9)" for layer in layers),
        "conv5 - conv1 settling epoch",
        "mean CKA to the last epoch over training, conv1 - conv5"]
    for r in rows[:5]:  # a settling epoch is one of the two checkpointed epochs
        assert r["kind"] == "level" and r["n"] == 8 and set(r["per_seed"]) <= {1.0, 2.0}
    # The settling effect pairs two layers of the same trial (trial ids, in summary.json's
    # order); the mean-CKA row is recomputed from the checkpoints in the next test.
    ids = [t["trial_id"] for t in summary["trials"]]
    _check_effect(rows[5], dict(zip(ids, rows[0]["per_seed"], strict=True)),
                  dict(zip(ids, rows[4]["per_seed"], strict=True)))
    for r in rows[5:]:  # both effects have the paper's direction: Holm over the two
        assert r["holm_k"] == 2 and r["note"] == "paired within each trial" and r["n"] == 8
        assert r["expect"] == "+" and r["verdict"] in VERDICTS
        assert f"| {r['quantity']} (paired within each trial) | {claims.fmt(r)} | 8 |" in (
            proc.stdout)


@pytest.mark.slow
def test_claims_run_whose_sweep_cannot_start_exits_with_the_sweeps_code(tmp_path):
    """service.submit refuses a results directory that is a file (exit 2, Ray never started):
    `claims run` says which space and exits 2 too, writing nothing."""
    results = tmp_path / "results"
    results.write_text("not a directory")
    proc = _claims("run", "8", "--results", str(results), timeout=300)
    assert proc.returncode == Exit.BAD_INPUT, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 08_evolution.yaml: the sweep exited with 2")
    assert results.read_text() == "not a directory" and list(tmp_path.iterdir()) == [results]
    assert "Traceback" not in proc.stderr


# ---- each claim's measure on real trials ----

@pytest.mark.slow
def test_claims_8_and_9_measure_real_checkpoints(claim8, alex_run):
    run = load_run(alex_run)
    first = run.trials[0]
    # Claim 8 (the run's own claim, measured by `claims run`), recomputed from every trial's
    # CKA curves: each level row's values are the trials' settling epochs, the first epoch from
    # which the layer's CKA to the last epoch stays >= 0.9 (in the run's trial order).
    eight = json.loads((claim8[1] / "claim_08.json").read_text())["rows"]
    curves = {t.trial_id: checkpoints.cka_to_last(alex_run, t) for t in run.trials}
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for curve in curves.values():
        assert list(curve) == layers
        for points in curve.values():  # a checkpoint per epoch; the last's CKA to itself is 1
            assert [e for e, _ in points] == [1, 2] and points[-1][1] == pytest.approx(1.0)
            assert all(-1e-9 <= c <= 1 + 1e-9 for _, c in points)

    def settles(points) -> float:
        return float(min(e for e, _ in points if all(c >= 0.9 for f, c in points if f >= e)))

    for row, layer in zip(eight, layers, strict=False):
        assert row["per_seed"] == [settles(c[layer]) for c in curves.values()], layer
        assert row["per_seed"][0] == claimdata.settled(curves[first.trial_id][layer], 0.9)
    # The continuous measure: per trial, each layer's mean CKA to the last epoch over the
    # epochs before the last (here epoch 1's), conv1 - conv5 paired within the trial.

    def mean_cka(layer: str) -> dict[str, float]:
        return {k: statistics.fmean(v for e, v in c[layer] if e < c[layer][-1][0])
                for k, c in curves.items()}

    assert eight[6]["quantity"] == "mean CKA to the last epoch over training, conv1 - conv5"
    _check_effect(eight[6], mean_cka("conv5"), mean_cka("conv1"))
    assert mean_cka("conv1") == {k: c["conv1"][0][1] for k, c in curves.items()}
    # Claim 9 on two of the run's trials (its space is the same design; the invariance analysis
    # costs seconds a trial): levels in [0, 1], the first trial's as invariance_probs says.
    two = run.model_copy(update={"trials": run.trials[:2]})
    nine = claims.claim_rows(9, [(alex_run, two)])
    probs = checkpoints.invariance_probs(alex_run, first)
    assert probs["shift_px"] == 4 and probs["scales"] == [0.8, 1.2]  # 67 px: 4 px shifts
    keys = ("identity", "shift", "scale", "rot90", "rot180")
    assert [r["quantity"] for r in nine[:5]] == [
        "P(true class), untransformed", "P(true class), shifted 4 px",
        "P(true class), scaled x0.8/1.2", "P(true class), rotated 90/270 deg",
        "P(true class), rotated 180 deg"]
    for row, key in zip(nine, keys, strict=False):
        assert row["n"] == 2 and all(0.0 <= p <= 1.0 for p in row["per_seed"])
        assert row["per_seed"][0] == pytest.approx(probs[key], abs=1e-4), key
    ids = [t.trial_id for t in two.trials]

    def level(i: int) -> dict[str, float]:
        return dict(zip(ids, nine[i]["per_seed"], strict=True))

    _check_effect(nine[5], level(3), level(1))  # small shift - 90 deg rotation, per trial
    _check_effect(nine[6], level(3), level(2))  # small scaling - 90 deg rotation
    assert nine[5]["holm_k"] == nine[6]["holm_k"] == 2


@pytest.mark.slow
def test_claim_1_relu_vs_tanh_on_the_real_lenet_run(lenet_run):
    run = load_run(lenet_run)
    relu, tanh = _trials(run, activation="relu"), _trials(run, activation="tanh")
    assert sorted(relu) == sorted(tanh) == [0, 1]
    rows = claims.claim_rows(1, [(lenet_run, run)])

    def to25(t):
        return claimdata.crossing(t.history, "train_acc", 0.75, 0.1)

    relu25 = {s: to25(t) for s, t in relu.items()}
    tanh25 = {s: to25(t) for s, t in tanh.items()}
    assert [r["quantity"] for r in rows] == [
        "epochs to 25% training error, ReLU", "epochs to 25% training error, tanh",
        "tanh / ReLU epochs to 25% training error", "tanh / ReLU epochs to 5% training error",
        "final val accuracy, ReLU - tanh"]
    assert rows[0]["per_seed"] == [round(v, 5) for v in relu25.values() if v is not None]
    assert rows[1]["per_seed"] == [round(v, 5) for v in tanh25.values() if v is not None]
    for v in (*relu25.values(), *tanh25.values()):  # within the 3 trained epochs
        assert v is None or 0 < v <= 3
    # A grid run's lr is the spec's fixed one, not a tuned value: the notes only count the
    # seeds that never reached 25% training error.
    for row, epochs in ((rows[0], relu25), (rows[1], tanh25)):
        never = sum(v is None for v in epochs.values())
        assert row["note"] == (f"{never} seeds never got there" if never else "")
    _check_ratio_or_too_few(rows[2], relu25, tanh25, target=6.0)
    # The later level has no paper number: no direction, no verdict, outside the Holm family.
    assert rows[3]["expect"] is None and rows[3]["verdict"] is None and rows[3]["target"] is None
    _check_effect(rows[4], {s: _points(t) for s, t in tanh.items()},
                  {s: _points(t) for s, t in relu.items()})
    # Holm over the effects with seeds to compare (both have the paper's direction).
    assert rows[4]["holm_k"] == (2 if rows[2]["n"] else 1) and rows[4]["expect"] == "+"


@pytest.mark.slow
def test_claim_2_eval_mode_train_accuracy_and_gap_on_real_checkpoints(lenet_run):
    run = load_run(lenet_run)
    off = list(_trials(run, activation="relu").values())
    on = list(_trials(run, activation="tanh").values())
    relabelled = _summary(_as(off, dropout=0.0) + _as(on, dropout=0.5))
    rows = claims.claim_rows(2, [(lenet_run, relabelled)])
    assert [r["quantity"] for r in rows] == [
        "train - val accuracy gap, no dropout", "train - val accuracy gap, dropout 0.5",
        "gap reduction by dropout", "final val accuracy, dropout - none",
        "dropout / no-dropout epochs to 5% training error"]
    gap_off, gap_on, reduction, acc, slower = rows
    gaps = _gaps(lenet_run, off + on)
    assert sorted(gap_off["per_seed"]) == sorted(round(gaps[t.trial_id], 5) for t in off)
    assert sorted(gap_on["per_seed"]) == sorted(round(gaps[t.trial_id], 5) for t in on)
    # the reduction is no-dropout gap minus dropout gap (baseline: dropout)
    _check_effect(reduction, {s: gaps[t.trial_id] for s, t in enumerate(on)},
                  {s: gaps[t.trial_id] for s, t in enumerate(off)})

    def to5(t):
        return claimdata.crossing(t.history, "train_acc", 0.95, 0.1)

    _check_effect(acc, dict(enumerate(map(_points, off))), dict(enumerate(map(_points, on))))
    _check_ratio_or_too_few(slower, dict(enumerate(map(to5, off))), dict(enumerate(map(to5, on))),
                            target=2.0)
    # Holm over the rows with a paper direction that have seeds to compare: the gap reduction,
    # the accuracy (now with the paper's direction, "+") and the ratio if it has seeds.
    assert (reduction["expect"], acc["expect"], slower["expect"]) == ("+", "+", "+")
    assert reduction["holm_k"] == acc["holm_k"] == (3 if slower["n"] else 2)
    assert acc["verdict"] in VERDICTS


@pytest.mark.slow
def test_claims_4_5_7_and_3_on_relabelled_real_trials(lenet_run, alex_run):
    lenet, alex = load_run(lenet_run), load_run(alex_run)
    relu = list(_trials(lenet, activation="relu").values())
    tanh = list(_trials(lenet, activation="tanh").values())
    a01 = [_trials(alex)[s] for s in (0, 1)]
    a23 = [_trials(alex)[s] for s in (2, 3)]
    groups = (relu, tanh, a01, a23)

    def pts(ts):
        return dict(enumerate(map(_points, ts)))

    def loss(ts):
        return {s: t.history[-1]["val_loss"] for s, t in enumerate(ts)}

    # Claims 4 and 5 (one binary knob): accuracy up and loss down expected, Holm over both;
    # the accuracy row's target is the paper's error share of the baseline's mean error.
    for number, key, better, worse, share in ((4, "lrn", True, False, 1.4 / 42.1),
                                               (5, "pool", "overlap", "plain", 0.4 / 41.1)):
        run = _summary(_as(relu, **{key: better}) + _as(a01, **{key: worse}))
        acc_row, loss_row = claims.claim_rows(number, [(Path("unused"), run)])
        _check_effect(acc_row, pts(a01), pts(relu), target=_error_share(a01, share))
        _check_effect(loss_row, loss(a01), loss(relu))
        assert (acc_row["expect"], loss_row["expect"]) == ("+", "-")
        assert acc_row["holm_k"] == loss_row["holm_k"] == 2
    # A run without the claim's conditions is refused, naming what it has.
    with pytest.raises(ClaimError, match=r"no finished trials for \[\(True,\), \(False,\)\]"):
        claims.claim_rows(4, [(lenet_run, lenet)])
    # Claim 7: width, depth (conv3,4 and FC6,7), |depth| - |width| per seed; no other rows.
    conds7 = [(128, "none"), (1024, "none"), (128, "3,4"), (128, "6,7")]
    trials = [t for (w, r), g in zip(conds7, groups, strict=True)
              for t in _as(g, fc_width=w, remove_layers=r)]
    rows = claims.claim_rows(7, [(Path("unused"), _summary(trials))])
    assert [r["quantity"] for r in rows] == [
        "val accuracy, FC 1024 - FC 128", "val accuracy, all layers - without conv3,4",
        "val accuracy, all layers - without FC6,7",
        "size of the conv3,4 effect minus that of FC width"]
    width, depth34, depth67, size = rows
    _check_effect(width, pts(relu), pts(tanh), target=_error_share(relu, 1.7 / 41.7))
    _check_effect(depth34, pts(a01), pts(relu), target=_error_share(relu, 4.9 / 40.5))
    _check_effect(depth67, pts(a23), pts(relu), target=_error_share(relu, 4.3 / 40.5))
    w = {s: abs(pts(tanh)[s] - pts(relu)[s]) for s in (0, 1)}
    d = {s: abs(pts(relu)[s] - pts(a01)[s]) for s in (0, 1)}
    _check_effect(size, w, d)
    assert all(r["holm_k"] == 4 for r in rows)
    # Claim 3 on 8 of claim 8's trials in one run directory, whose checkpoints its gap rows
    # read: a level (the unaugmented trials' train - val gap), three arms against one
    # baseline, and the gap reduction by crops + lighting (no-augmentation gap - both's gap).
    by_seed = _trials(alex)
    none, crop, light, both = ([by_seed[s] for s in pair] for pair in ((0, 1), (2, 3), (4, 5),
                                                                       (6, 7)))
    conds = {("none", 0.0): none, ("random", 0.0): crop, ("none", 0.1): light,
             ("random", 0.1): both}
    run = _summary([t for (c, lighting), g in conds.items()
                    for t in _as(g, crop=c, lighting=lighting)])
    rows = claims.claim_rows(3, [(alex_run, run)])
    assert [r["quantity"] for r in rows] == [
        "train - val accuracy gap, no augmentation", "val accuracy, random crops - none",
        "val accuracy, PCA lighting - none", "val accuracy, crops + lighting - none",
        "gap reduction by crops + lighting"]
    gaps = _gaps(alex_run, none + both)
    assert rows[0]["kind"] == "level" and rows[0]["n"] == 2
    assert sorted(rows[0]["per_seed"]) == sorted(round(gaps[t.trial_id], 5) for t in none)
    targets = (None, _error_share(none, 1.0 / 41.7), None)
    for row, arm, target in zip(rows[1:4], (crop, light, both), targets, strict=True):
        _check_effect(row, pts(none), pts(arm), target=target)
    _check_effect(rows[4], {s: gaps[t.trial_id] for s, t in enumerate(both)},
                  {s: gaps[t.trial_id] for s, t in enumerate(none)})
    assert all(r["holm_k"] == 4 and r["expect"] == "+" for r in rows[1:])


@pytest.mark.slow
def test_claim_6_conv1_health_paired_on_real_checkpoints(alex_run):
    alex = load_run(alex_run)
    by_seed = _trials(alex)
    conds = {(11, 4): (0, 1), (7, 2): (2, 3), (11, 2): (4, 0), (7, 4): (1, 2)}
    trials = [t for (k, s), seeds in conds.items()
              for t in _as([by_seed[i] for i in seeds], conv1_kernel=k, conv1_stride=s)]
    rows = claims.claim_rows(6, [(alex_run, _summary(trials))])
    health = {i: conv_health(alex_run, by_seed[i].trial_id) for i in range(5)}
    for i, h in health.items():
        assert 0.0 <= h["dead_fraction"] <= 1.0 and h["aliasing_vs_noise"] > 0, (i, h)

    def of(cond, f):
        return {s: f(i) for s, i in enumerate(conds[cond])}

    acc = {i: _points(by_seed[i]) for i in range(5)}
    _check_effect(rows[0], of((11, 4), acc.get), of((7, 2), acc.get),
                  target=_error_share([by_seed[i] for i in conds[(11, 4)]], 2.1 / 40.5))
    _check_effect(rows[1], of((11, 4), acc.get), of((11, 2), acc.get))
    _check_effect(rows[2], of((11, 4), acc.get), of((7, 4), acc.get))
    dead = {i: 100.0 * h["dead_fraction"] for i, h in health.items()}
    _check_effect(rows[3], of((7, 2), dead.get), of((11, 4), dead.get))
    aliasing = {i: h["aliasing_vs_noise"] for i, h in health.items()}
    _check_effect(rows[4], of((7, 2), aliasing.get), of((11, 4), aliasing.get))


@pytest.mark.slow
def test_claim_10_compares_two_real_families(lenet_run, alex_run):
    lenet, alex = load_run(lenet_run), load_run(alex_run)
    relu = lenet.model_copy(update={"trials": [t for t in lenet.trials
                                               if t.config["activation"] == "relu"]})
    rows = claims.claim_rows(10, [(lenet_run, relu), (alex_run, alex)])
    names = [r["quantity"] for r in rows]
    assert names == ["final val accuracy, lenet5", "seconds per epoch, lenet5",
                     "final val accuracy, alexnet", "seconds per epoch, alexnet",
                     "val accuracy, AlexNet - LeNet-5"]
    for family, run, px in (("lenet5", relu, 32), ("alexnet", alex, 67)):
        trials = sorted(run.trials, key=lambda t: t.config[SEED_KEY])
        acc, secs = rows[names.index(f"final val accuracy, {family}")], rows[
            names.index(f"seconds per epoch, {family}")]
        assert sorted(acc["per_seed"]) == sorted(round(_points(t), 5) for t in trials)
        assert sorted(secs["per_seed"]) == sorted(round(t.history[-1]["epoch_s"], 5)
                                                  for t in trials)
        assert all(s > 0 for s in secs["per_seed"])
        cfg = parse_spec(run.spec).base_config()
        info = describe(family, flops=True, **cfg.model_knobs())
        assert info["input_size"][-1] == px
        assert acc["note"] == (f"{info['params']:,} params, {info['flops'] / 1e6:.1f} MFLOPs "
                               f"per image at {px} px")
    _check_effect(rows[4], {s: _points(t) for s, t in _trials(relu).items()},
                  {s: _points(t) for s, t in _trials(alex).items()})


@pytest.mark.slow
def test_a_trial_without_checkpoints_is_a_claim_error(lenet_run):
    trial = load_run(lenet_run).trials[0].model_copy(update={"trial_id": "no-such-trial"})
    with pytest.raises(ClaimError, match="no-such-trial"):
        checkpoints.train_accuracy(lenet_run, trial)
