"""service.results: the trial records, the one score that ranks trials for every metric and mode,
summary.json written and read back (old files included), and the layer's import boundary."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray.tune import Result

from service.config.spec import parse_spec
from service.metrics import FIT_METRICS, METRICS
from service.results.records import FAILED, Summary, TrialRecord, rank, score
from service.results.store import ResultsError, read_summary, write_bytes, write_json
from service.tune.plan import plan_sweep
from service.tune.summary import summarize

ROOT = Path(__file__).resolve().parents[1]

SPEC: dict[str, Any] = {
    "name": "records",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    "budget": {"max_epochs": 4, "num_samples": 3},
    "searcher": {"type": "random", "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
}


def history(rng: random.Random, epochs: int, diverge: bool = False) -> list[dict[str, Any]]:
    """Per-epoch results with fit's keys: noisy curves, so extremes fall on any epoch."""
    rows, best = [], -math.inf
    cost = {"params": rng.randint(10_000, 60_000_000), "flops": rng.randint(10**5, 10**9)}
    for epoch in range(1, epochs + 1):
        val_acc = rng.uniform(0.1, 0.99)
        best = max(best, val_acc)
        rows.append({"epoch": epoch, "train_loss": rng.uniform(0.05, 2.5),
                     "train_acc": rng.uniform(0.1, 0.99), "val_loss": rng.uniform(0.05, 2.5),
                     "val_acc": val_acc, "best_val_acc": best, "lr": 0.05 / epoch,
                     "epoch_s": rng.uniform(0.5, 2.0), "images_per_s": rng.uniform(500, 900),
                     **cost, "status": "running"})
    if diverge:
        rows[-1].update(train_loss=math.nan, val_loss=math.nan, status="diverged")
    return rows


def expected_score(status: str, rows: list[dict[str, Any]], metric: str,
                   mode: str) -> float | None:
    """The score worked out from the raw history: best over all epochs, by brute force."""
    if status in ("error", "diverged"):
        return None
    if metric == "best_val_acc":
        metric, mode = "val_acc", "max"
    values = [r[metric] for r in rows if not math.isnan(r[metric])]
    return (max if mode == "max" else min)(values)


def random_trials(seed: int) -> list[tuple[TrialRecord, list[dict[str, Any]]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(8):
        epochs = rng.randint(1, 4)
        status = "completed" if epochs == 4 else "stopped-early"
        out.append((status, history(rng, epochs)))
    out.append(("diverged", history(rng, 3, diverge=True)))
    out.append(("error", history(rng, 2)))
    return [(TrialRecord.from_history(f"t{i}", {"lr": 0.01 * (i + 1)}, status, rows,
                                      "boom" if status == "error" else None), rows)
            for i, (status, rows) in enumerate(out)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("metric", METRICS)
def test_score_ranks_trials_by_their_history_for_every_metric_and_mode(tmp_path, seed, metric,
                                                                          mode):
    trials = random_trials(seed)
    want = {t.trial_id: expected_score(t.status, rows, metric, mode) for t, rows in trials}
    for t, _ in trials:
        expected = want[t.trial_id]
        got = score(t, metric, mode)
        assert got is None if expected is None else got == pytest.approx(expected)
    # Scored trials first, best first; every failed one after them.
    ranked = rank([t for t, _ in trials], metric, mode)
    got = [want[t.trial_id] for t in ranked]
    scored = [v for v in got if v is not None]
    assert scored == sorted(scored, reverse=mode == "max")
    assert got[len(scored):] == [None] * (len(got) - len(scored))
    assert {t.status for t in ranked[len(scored):]} <= set(FAILED)
    # The summary's best is the top score, and it survives summary.json unchanged.
    spec = {**SPEC, "budget": {**SPEC["budget"], "metric": metric, "mode": mode}}
    summary = Summary.ranked([t for t, _ in trials], name="s", spec=spec)
    top = (max if mode == "max" else min)(scored)
    assert summary.best is not None and want[summary.best.trial_id] == top
    write_json(tmp_path / "summary.json", summary)
    back = read_summary(tmp_path)
    assert [t.trial_id for t in back.trials] == [t.trial_id for t in summary.trials]
    assert back.best.trial_id == summary.best.trial_id
    assert [back.score(t) for t in back.trials] == [summary.score(t) for t in summary.trials]


def tune_result(trial_id: str, rows: list[dict[str, Any]], lr: float) -> Result:
    """A Tune Result as the ResultGrid holds one: the last result (with Tune's own keys) and the
    per-epoch metrics dataframe."""
    tune_rows = [{**r, "training_iteration": r["epoch"], "trial_id": trial_id,
                  "timestamp": 1_800_000_000 + r["epoch"], "checkpoint_path": f"/ck/{r['epoch']}",
                  "done": r is rows[-1]} for r in rows]
    return Result(metrics=tune_rows[-1], checkpoint=None, error=None,
                  path=f"/runs/x/run_trial_{trial_id}_0_lr={lr}_2026",
                  metrics_dataframe=pd.DataFrame(tune_rows))


def curve(train_acc: list[float], val_acc: list[float], val_loss: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 1.0 - a, "train_acc": a, "val_loss": loss,
             "val_acc": v, "best_val_acc": max(val_acc[:e + 1]), "lr": 0.05,
             "epoch_s": 1.0, "images_per_s": 800.0, "params": 61_000, "flops": 420_000,
             "status": "completed" if e + 1 == len(train_acc) else "running"}
            for e, (a, v, loss) in enumerate(zip(train_acc, val_acc, val_loss, strict=True))]


def test_summarize_ranks_by_the_sweeps_metric_over_all_epochs():
    # "b" has the best val_acc and comes first; "a" reached the best train_acc (0.99, at epoch
    # 2) though "c" ends higher (0.97 > 0.95). With train_acc every trial used to get the same
    # sort key (the summary kept no train_acc), so best was whichever came first.
    results = [
        tune_result("b", curve([0.6, 0.8, 0.9], [0.90, 0.95, 0.94], [0.40, 0.30, 0.35]), 0.03),
        tune_result("a", curve([0.9, 0.99, 0.95], [0.70, 0.80, 0.78], [0.90, 0.20, 0.60]), 0.05),
        tune_result("c", curve([0.7, 0.9, 0.97], [0.60, 0.70, 0.75], [0.80, 0.70, 0.65]), 0.01),
    ]
    by_metric = {}
    for metric in ("train_acc", "val_acc", "val_loss", "train_loss"):
        spec = parse_spec({**SPEC, "budget": {"max_epochs": 3, "metric": metric}})
        plan = plan_sweep(spec, "/tmp/r", {"CPU": 2}, "run")
        summary = summarize(spec, plan, results, 1.0, ["lr"])
        by_metric[metric] = [t.trial_id for t in summary.trials]
        assert summary.best.trial_id == by_metric[metric][0]
    assert by_metric["train_acc"] == ["a", "c", "b"]  # 0.99, 0.97, 0.9: scope all, not last
    assert by_metric["val_acc"] == ["b", "a", "c"]
    assert by_metric["val_loss"] == ["a", "b", "c"]  # lowest reached: 0.20, 0.30, 0.65
    assert by_metric["train_loss"] == ["a", "c", "b"]  # 1 - highest train_acc
    a = next(t for t in summary.trials if t.trial_id == "a")
    # final keeps what fit reported, not Tune's bookkeeping; the old keys are all still there.
    assert set(a.final) == set(FIT_METRICS)
    assert a.final["train_acc"] == 0.95 and a.highest["train_acc"] == 0.99
    assert a.best_val_acc == 0.80 and a.status == "completed" and a.epochs == 3
    dumped = json.loads(summary.model_dump_json())
    assert {"trial_id", "config", "status", "epochs", "best_val_acc", "final",
            "error"} <= set(dumped["trials"][0])
    assert {"name", "spec", "plan", "searched", "trials", "best", "wall_s", "ray_version",
            "torch_version"} <= set(dumped)


@pytest.mark.slow
def test_summarize_a_real_sweep_by_train_acc(alexnet_run):
    from ray.tune import ResultGrid
    from ray.tune.analysis import ExperimentAnalysis

    from service.rundir import trial_dir, trial_history

    spec = parse_spec({**json.loads((alexnet_run / "summary.json").read_text())["spec"],
                       "budget": {"max_epochs": 3, "num_samples": 1, "metric": "train_acc"}})
    grid = ResultGrid(ExperimentAnalysis(str(alexnet_run)))
    summary = summarize(spec, plan_sweep(spec, "/tmp/r", {"CPU": 2}, "run"), grid, 1.0,
                        list(spec.search))
    reached = {t.trial_id: max(h["train_acc"] for h in trial_history(
        alexnet_run, t.trial_id, trial_dir(alexnet_run, t.trial_id))) for t in summary.trials}
    assert summary.best.trial_id == max(reached, key=reached.get)
    assert [reached[t.trial_id] for t in summary.trials] == sorted(reached.values(),
                                                                   reverse=True)


def test_final_keeps_every_number_fit_reports():
    from service.config.train import TrainConfig
    from service.training.loop import fit

    reports: list[dict[str, Any]] = []
    fit(TrainConfig(model="lenet5", epochs=2, num_threads=1), lambda m, _: reports.append(m))
    record = TrialRecord.from_history("t", {}, "completed", reports)
    numbers = {k for k, v in reports[-1].items() if isinstance(v, int | float)}
    assert set(record.final) == numbers and set(FIT_METRICS) == numbers
    for metric in METRICS:
        reached = max(r[metric] for r in reports)
        assert score(record, metric, "max") == pytest.approx(reached)


# An old summary.json (trimmed from a real AlexNet sweep written before the records existed):
# final held only val_acc, val_loss and train_loss; no lowest/highest.
OLD_TRIAL = {"trial_id": "cbd5b_00003", "config": {"conv1_kernel": 7, "conv1_stride": 2},
             "status": "completed", "epochs": 3, "best_val_acc": 0.8500000238418579,
             "final": {"val_acc": 0.8500000238418579, "val_loss": 0.5245572328567505,
                       "train_loss": 1.1544584035873413}, "error": None}
OLD = {
    "name": "alexnet-tiny",
    "spec": {**SPEC, "name": "alexnet-tiny",
             "budget": {"max_epochs": 3, "num_samples": 1, "metric": "val_acc", "mode": "max",
                        "seeds": 1, "time_budget_s": None}},
    "plan": {"name": "alexnet-tiny", "trials": 4, "metric": "val_acc", "mode": "max"},
    "searched": ["conv1_kernel", "conv1_stride"],
    "trials": [OLD_TRIAL,
               {"trial_id": "cbd5b_00002", "config": {"conv1_kernel": 11, "conv1_stride": 2},
                "status": "stopped-early", "epochs": 1, "best_val_acc": 0.7611111402511597,
                "final": {"val_acc": 0.7611111402511597, "val_loss": 0.8827,
                          "train_loss": 1.4592}, "error": None, "stopped_at": 1},
               {"trial_id": "cbd5b_00001", "config": {"conv1_kernel": 7, "conv1_stride": 4},
                "status": "diverged", "epochs": 2, "best_val_acc": 0.57,
                "final": {"val_acc": 0.1, "val_loss": math.nan, "train_loss": math.nan},
                "error": None}],
    "best": OLD_TRIAL,
    "wall_s": 48.61, "ray_version": "2.60.0", "torch_version": "2.14.1",
}


def test_an_old_summary_still_loads_and_scores(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(OLD))  # NaN as Python's json writes it
    summary = read_summary(tmp_path)
    assert summary.best is summary.trials[0]  # one record, as the file meant
    assert [summary.score(t) for t in summary.trials] == [0.8500000238418579,
                                                         0.7611111402511597, None]
    stopped = summary.trials[1]
    assert stopped.stopped_at == 1 and stopped.lowest is None
    # Without extremes: val_acc max is best_val_acc, any other metric its last value.
    assert score(stopped, "val_loss", "min") == 0.8827
    assert score(stopped, "train_acc", "max") is None  # never recorded
    # Written again it keeps the old shape: no new keys, NaN as null.
    again = json.loads(summary.model_dump_json())
    assert again["trials"][1] == OLD["trials"][1] and again["best"] == OLD_TRIAL
    assert again["trials"][2]["final"]["val_loss"] is None
    assert set(again) == set(OLD)


def test_read_summary_errors_are_one_line_naming_the_file(tmp_path):
    bodies = {"empty": None, "garbled": '{"name": ', "other": json.dumps({"trials": 3}),
              "status": json.dumps({**OLD, "trials": [{**OLD_TRIAL, "status": "lost"}]})}
    for name, body in bodies.items():
        (tmp_path / name).mkdir()
        if body is not None:
            (tmp_path / name / "summary.json").write_text(body)
    for name, needle in [("missing", "no such run directory"), ("empty", "no summary.json"),
                         ("garbled", "unreadable summary"), ("other", "not a sweep summary"),
                         ("status", "trials.0.status")]:
        with pytest.raises(ResultsError) as info:
            read_summary(tmp_path / name)
        message = str(info.value)
        assert needle in message and str(tmp_path / name) in message, message
        assert "\n" not in message


def test_writes_are_atomic_and_strict_json(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})  # creates the directory
    with pytest.raises(ValueError):
        write_json(target, {"a": math.nan})  # a bare mapping must be NaN-free
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left
    record = TrialRecord.from_history("t", {}, "diverged", [{"epoch": 1, "val_loss": math.inf,
                                                             "train_loss": math.nan}])
    write_json(target, record)
    assert json.loads(target.read_text(), parse_constant=pytest.fail)["final"] == {
        "epoch": 1, "val_loss": None, "train_loss": None}
    write_bytes(target.with_suffix(".png").as_uri(), b"png")  # a URI goes through pyarrow
    assert target.with_suffix(".png").read_bytes() == b"png"


@pytest.mark.slow  # seconds in a subprocess
def test_the_results_layer_imports_neither_torch_nor_ray():
    code = ("import sys, service.results.records, service.results.store, "
            "service.results.stats; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'pandas'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
