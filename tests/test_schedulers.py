"""The Optuna-pruner scheduler decides exactly as Optuna would: fixed learning curves replayed
through it and through a plain Optuna study prune the same trials at the same epochs; its spec
block is validated field by field; it pickles with the Tuner; a real sweep stops trials."""

from __future__ import annotations

import inspect
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from service.config.schedulers import PRUNER_SETTINGS, make_pruner
from service.config.spec import SpecError, parse_spec
from service.tune.plan import describe_scheduler, plan_sweep
from service.tune.schedulers import STUDY_NAME, OptunaPrunerScheduler, PrunedAwareOptunaSearch
from service.tune.search import make_scheduler
from service.tune.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
MAX_EPOCHS = 6

# Eight val_acc curves over six epochs: fast and slow learners, two that peak and fall back
# (patience), two that start late. Run three at a time, the rest queued, as Tune would.
CURVES = [
    [0.40, 0.62, 0.75, 0.81, 0.84, 0.86],
    [0.20, 0.35, 0.50, 0.58, 0.63, 0.66],
    [0.55, 0.70, 0.78, 0.76, 0.74, 0.73],
    [0.10, 0.12, 0.15, 0.16, 0.18, 0.19],
    [0.45, 0.66, 0.79, 0.85, 0.88, 0.90],
    [0.30, 0.28, 0.33, 0.31, 0.30, 0.29],
    [0.10, 0.30, 0.60, 0.80, 0.87, 0.91],
    [0.50, 0.52, 0.49, 0.47, 0.45, 0.44],
]
CONCURRENCY = 3

PRUNERS = {  # the spec's scheduler block, for each of Optuna's pruners
    "median": {"pruner": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    "percentile": {"pruner": "percentile", "percentile": 40.0, "n_startup_trials": 1},
    "successive-halving": {"pruner": "successive-halving", "min_resource": 1,
                           "reduction_factor": 2},
    "hyperband": {"pruner": "hyperband", "min_resource": 1, "reduction_factor": 2},
    "patient": {"pruner": "patient", "patience": 1,
                "wrapped": {"pruner": "median", "n_startup_trials": 1}},
}
METRICS = {"max": ("val_acc", lambda v: v), "min": ("val_loss", lambda v: -math.log(v))}


def replay(curves: list[list[float]], add, result, complete) -> dict[int, int]:
    """Feed `curves` round-robin, CONCURRENCY trials at a time (a queued trial starts when one
    ends); `result(i, epoch, value)` returns True to prune. Returns {trial: pruned epoch}."""
    queued, running, pruned = list(range(len(curves))), [], {}
    while queued or running:
        while queued and len(running) < CONCURRENCY:
            running.append([queued.pop(0), 0])
            add(running[-1][0])
        for slot in list(running):
            i, k = slot
            if result(i, k + 1, curves[i][k]):
                pruned[i] = k + 1
                running.remove(slot)
                continue
            slot[1] += 1
            if slot[1] == len(curves[i]):
                complete(i, curves[i][-1])
                running.remove(slot)
    return pruned


def scheduler_for(block: dict, mode: str) -> OptunaPrunerScheduler:
    spec = parse_spec(tiny_spec(scheduler={"type": "optuna", **block},
                                budget={"max_epochs": MAX_EPOCHS, "metric": METRICS[mode][0]}))
    sched = make_scheduler(spec)
    assert isinstance(sched, OptunaPrunerScheduler)
    return sched


def through_scheduler(block: dict, mode: str, repickle_at: int | None = None) -> dict[int, int]:
    """The replay through the Tune scheduler, with real (stub) Tune trials; optionally the
    scheduler is pickled and unpickled after `repickle_at` results, as a restore would."""
    metric, transform = METRICS[mode]
    box = {"sched": scheduler_for(block, mode), "results": 0}
    trials = [Trial("run_trial", config={}, trial_id=f"t{i:02d}", stub=True)
              for i in range(len(CURVES))]

    def add(i):
        box["sched"].on_trial_add(None, trials[i])

    def result(i, epoch, value):
        if box["results"] == repickle_at:
            box["sched"] = pickle.loads(pickle.dumps(box["sched"]))
        box["results"] += 1
        res = {metric: transform(value), "epoch": epoch}
        decision = box["sched"].on_trial_result(None, trials[i], res)
        assert decision in (TrialScheduler.STOP, TrialScheduler.CONTINUE)
        if decision == TrialScheduler.STOP:  # Tune then completes the stopped trial
            box["sched"].on_trial_complete(None, trials[i], res)
        return decision == TrialScheduler.STOP

    def complete(i, value):
        box["sched"].on_trial_complete(None, trials[i], {metric: transform(value)})

    pruned = replay(CURVES, add, result, complete)
    sched = box["sched"]
    assert sched.pruned == {trials[i].trial_id: e for i, e in pruned.items()}
    states = [t.state for t in sched.study.trials]
    assert states.count(TrialState.PRUNED) == len(pruned)
    assert states.count(TrialState.COMPLETE) == len(CURVES) - len(pruned)
    return pruned


def through_optuna(block: dict, mode: str) -> dict[int, int]:
    """The same replay through a plain Optuna study with the same pruner."""
    _, transform = METRICS[mode]
    spec = parse_spec(tiny_spec(scheduler={"type": "optuna", **block},
                                budget={"max_epochs": MAX_EPOCHS, "metric": METRICS[mode][0]}))
    study = optuna.create_study(study_name=STUDY_NAME, pruner=make_pruner(spec.scheduler,
                                                                           MAX_EPOCHS),
                                direction="maximize" if mode == "max" else "minimize",
                                sampler=optuna.samplers.RandomSampler())
    ot: dict[int, optuna.trial.Trial] = {}

    def add(i):
        ot[i] = study.ask()

    def result(i, epoch, value):
        ot[i].report(transform(value), step=epoch)
        if ot[i].should_prune():
            study.tell(ot[i], state=TrialState.PRUNED)
            return True
        return False

    def complete(i, value):
        study.tell(ot[i], transform(value))

    return replay(CURVES, add, result, complete)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("name", list(PRUNERS))
def test_decisions_are_optunas(name: str, mode: str) -> None:
    expected = through_optuna(PRUNERS[name], mode)
    assert 0 < len(expected) < len(CURVES), expected  # the curves exercise the pruner
    assert through_scheduler(PRUNERS[name], mode) == expected


@pytest.mark.parametrize("name", list(PRUNERS))
def test_pickled_midway_decides_the_same(name: str) -> None:
    expected = through_optuna(PRUNERS[name], "max")
    for at in (5, 17):
        assert through_scheduler(PRUNERS[name], "max", repickle_at=at) == expected


def test_save_and_restore_keep_the_study(tmp_path: Path) -> None:
    sched = scheduler_for(PRUNERS["median"], "max")
    trial = Trial("run_trial", config={}, trial_id="a", stub=True)
    sched.on_trial_add(None, trial)
    sched.on_trial_result(None, trial, {"val_acc": 0.5, "epoch": 1})
    sched.save(str(tmp_path / "sched.pkl"))
    fresh = scheduler_for(PRUNERS["median"], "max")
    fresh.restore(str(tmp_path / "sched.pkl"))
    assert fresh.study.trials[0].intermediate_values == {1: 0.5}


def test_trials_finished_before_a_restore_are_told_to_the_study() -> None:
    # Tuner.restore re-adds every trial to the scheduler pickled at the start: finished ones
    # arrive TERMINATED with only their last result known.
    sched = scheduler_for(PRUNERS["median"], "max")
    for trial_id, last in (("full", {"val_acc": 0.9, "epoch": MAX_EPOCHS}),
                           ("short", {"val_acc": 0.2, "epoch": 2}), ("none", {})):
        trial = Trial("run_trial", config={}, trial_id=trial_id, stub=True)
        trial.set_status(Trial.TERMINATED)
        trial.update_last_result(dict(last))
        sched.on_trial_add(None, trial)
    full, short, none = sched.study.trials
    assert (full.state, full.value, full.intermediate_values) == (
        TrialState.COMPLETE, 0.9, {MAX_EPOCHS: 0.9})
    assert (short.state, short.intermediate_values) == (TrialState.PRUNED, {2: 0.2})
    assert none.state == TrialState.FAIL


def test_buffered_results_after_a_stop_and_odd_results() -> None:
    sched = scheduler_for({"pruner": "median", "n_startup_trials": 1}, "max")
    a, b = (Trial("run_trial", config={}, trial_id=t, stub=True) for t in "ab")
    sched.on_trial_add(None, a)
    sched.on_trial_result(None, a, {"val_acc": 0.9, "epoch": 1})
    sched.on_trial_complete(None, a, {"val_acc": 0.9, "epoch": 1})
    sched.on_trial_add(None, b)
    assert sched.on_trial_result(None, b, {"epoch": 1}) == TrialScheduler.CONTINUE  # no metric
    assert sched.on_trial_result(None, b, {"val_acc": 0.1, "epoch": 1}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, b, {"val_acc": 0.1, "epoch": 2}) == TrialScheduler.STOP
    sched.on_trial_error(None, b)  # already told PRUNED: stays so
    assert [t.state for t in sched.study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    c = Trial("run_trial", config={}, trial_id="c", stub=True)
    sched.on_trial_add(None, c)
    sched.on_trial_error(None, c)
    assert sched.study.trials[-1].state == TrialState.FAIL


def test_metric_and_mode_from_tune_config() -> None:
    sched = OptunaPrunerScheduler(optuna.pruners.MedianPruner())
    assert sched.set_search_properties("val_loss", "min")
    assert sched.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert sched.set_search_properties("val_loss", "min")  # TuneConfig repeating ours is fine
    assert not sched.set_search_properties("val_acc", None)
    with pytest.raises(ValueError, match="metric and a mode"):
        _ = OptunaPrunerScheduler(optuna.pruners.MedianPruner()).study


def test_searcher_records_early_stopped_trials_as_pruned() -> None:
    from ray import tune

    searcher = PrunedAwareOptunaSearch(
        space={"lr": tune.choice([0.1, 0.01])}, metric="val_acc", mode="max", max_epochs=3,
        sampler=optuna.samplers.RandomSampler(seed=0))
    finals = {"stopped": {"val_acc": 0.3, "epoch": 1, "training_iteration": 1},
              "finished": {"val_acc": 0.9, "epoch": 3, "training_iteration": 3},
              "diverged": {"val_acc": 0.0, "epoch": 1, "training_iteration": 1,
                           "status": "diverged"},
              "late": {"val_acc": 0.4, "epoch": 2, "training_iteration": 2}}
    for trial_id, final in finals.items():
        assert searcher.suggest(trial_id) is not None
        searcher.on_trial_result(trial_id, {**final, "val_acc": 0.2, "training_iteration": 1,
                                            "epoch": 1})
        searcher.on_trial_complete(trial_id, result=final)
    searcher.suggest("failed")
    searcher.on_trial_complete("failed", result=None, error=True)
    trials = searcher._ot_study.trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE,
                                         TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL]
    # the result that made the scheduler stop a trial reaches the study too
    assert trials[0].intermediate_values == {1: 0.2}
    assert trials[3].intermediate_values == {1: 0.2, 2: 0.4}
    assert trials[1].value == 0.9 and trials[2].value == 0.0
    again = pickle.loads(pickle.dumps(searcher))
    assert len(again._ot_study.trials) == 5


def test_sweep_uses_the_pruned_aware_searcher() -> None:
    from service.tune.search import make_searcher

    assert isinstance(make_searcher(parse_spec(TINY)), PrunedAwareOptunaSearch)
    assert make_searcher(parse_spec(TINY))._max_epochs == TINY["budget"]["max_epochs"]


def test_tpe_history_survives_tunes_save_and_restore(tmp_path) -> None:
    # What Tuner.restore does after a killed driver: the searcher pickled with the Tuner gets
    # the state Tune saved with the experiment (save_to_dir / restore_from_dir).
    from service.tune.search import make_searcher, param_space

    spec = parse_spec(dict(TINY, search={"lr": {"type": "float", "low": 1e-4, "high": 0.1,
                                                "log": True},
                                         "dropout": {"type": "float", "low": 0.0,
                                                     "high": 0.5}},
                           searcher={"type": "optuna-tpe", "seed": 3, "n_startup_trials": 3}))

    def fresh():
        s = make_searcher(spec)
        s.set_search_properties("val_acc", "max", param_space(spec))
        return s

    first, pristine = fresh(), None
    pristine = pickle.loads(pickle.dumps(first))  # as tuner.pkl holds it, before any trial
    for i in range(5):
        cfg = first.suggest(f"t{i}")
        score = 1.0 - abs(math.log10(cfg["lr"]) + 1.5) / 3  # best near lr = 0.03
        first.on_trial_complete(f"t{i}", {"val_acc": score, "epoch": 3,
                                          "training_iteration": 3})
    first.save_to_dir(str(tmp_path), session_str="kill")
    pristine.restore_from_dir(str(tmp_path))
    restored = [t.params for t in pristine._ot_study.trials]
    assert restored == [t.params for t in first._ot_study.trials] and len(restored) == 5
    assert [t.value for t in pristine._ot_study.trials] == [
        t.value for t in first._ot_study.trials]
    # TPE continues from the history: the next suggestion is the one the first driver would
    # have made, and it differs from a history-less searcher's.
    assert pristine.suggest("t5") == first.suggest("t5")
    assert fresh().suggest("t0") != first.suggest("t6")


# --- spec ------------------------------------------------------------------------------------

TINY: dict[str, Any] = {  # as in tests/test_submit.py
    "name": "tiny_optuna",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "choice", "values": [0.0001, 0.05]},
               "pool": {"type": "choice", "values": ["max", "avg"]}},
    "budget": {"max_epochs": 2, "num_samples": 3},
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 6},
    "scheduler": {"type": "optuna", "pruner": "median", "n_startup_trials": 2,
                  "n_warmup_steps": 0},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
}


def tiny_spec(**changes: Any) -> dict[str, Any]:
    return {**TINY, **changes}


def _asha(brackets: int, seed: int):
    spec = parse_spec(tiny_spec(
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2,
                   "brackets": brackets},
        searcher={"type": "optuna-tpe", "seed": seed},
        budget={"max_epochs": MAX_EPOCHS, "metric": "val_acc"}))
    sched = make_scheduler(spec)
    sched.set_search_properties("val_acc", "max")
    return sched


def test_asha_brackets_are_seeded_and_start_comparing_later() -> None:
    trials = [Trial("run_trial", config={}, trial_id=f"t{i:02d}", stub=True) for i in range(40)]

    def brackets(sched) -> list[int]:
        for t in trials:
            sched.on_trial_add(None, t)
        return [sched._brackets.index(sched._trial_info[t.trial_id]) for t in trials]

    first = brackets(_asha(2, seed=0))
    assert first == brackets(pickle.loads(pickle.dumps(_asha(2, seed=0))))  # seeded
    assert first != brackets(_asha(2, seed=1))
    assert set(first) == {0, 1} and first.count(0) > first.count(1)  # Tune's weights: e vs 1
    assert set(brackets(_asha(1, seed=0))) == {0}

    # A poor trial is stopped at epoch 1 in bracket 0 but not in bracket 1 (first rung: 2).
    sched = _asha(2, seed=0)
    for t in trials:
        sched.on_trial_add(None, t)
    for bracket in (0, 1):
        good, poor = [t for t, b in zip(trials, first, strict=True) if b == bracket][:2]
        assert sched.on_trial_result(None, good, {"epoch": 1, "val_acc": 0.9}) == "CONTINUE"
        want = "STOP" if bracket == 0 else "CONTINUE"
        assert sched.on_trial_result(None, poor, {"epoch": 1, "val_acc": 0.1}) == want


def test_pruner_settings_are_optunas_parameter_names() -> None:
    classes = {"median": optuna.pruners.MedianPruner,
               "percentile": optuna.pruners.PercentilePruner,
               "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner,
               "patient": optuna.pruners.PatientPruner}
    assert set(classes) == set(PRUNER_SETTINGS)
    for name, cls in classes.items():
        params = set(inspect.signature(cls).parameters)
        names = {"wrapped_pruner" if k == "wrapped" else k for k in PRUNER_SETTINGS[name]}
        assert names == params, name


@pytest.mark.parametrize("name", list(PRUNERS))
def test_make_pruner_passes_the_settings(name: str) -> None:
    spec = parse_spec(tiny_spec(scheduler={"type": "optuna", **PRUNERS[name]}))
    pruner = make_pruner(spec.scheduler, spec.budget.max_epochs)
    assert type(pruner).__name__.lower().startswith(name.replace("-", "")[:6])
    if name == "hyperband":
        assert pruner._max_resource == spec.budget.max_epochs  # defaults to the budget
    if name == "median":
        assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (2, 1)
    if name == "patient":
        assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)
        assert pruner._patience == 1
    again = parse_spec(spec.model_dump(mode="json"))
    assert again == spec and again.model_dump() == spec.model_dump()
    text = describe_scheduler(spec)
    assert text.startswith(f"optuna (pruner={name}") and "None" not in text


@pytest.mark.parametrize(("block", "path", "value", "why"), [
    ({"pruner": "median", "percentile": 30}, "scheduler.percentile", "30",
     "pruner median does not take percentile; it takes n_startup_trials"),
    ({"pruner": "hyperband", "patience": 2}, "scheduler.patience", "2",
     "pruner hyperband does not take patience"),
    ({"pruner": "percentile"}, "scheduler.percentile", "<missing>", "required"),
    ({"pruner": "patient"}, "scheduler.patience", "<missing>", "required"),
    ({"pruner": "medain"}, "scheduler.pruner", "'medain'", "'median'"),
    ({"pruner": "median", "n_startup_trails": 1}, "scheduler.n_startup_trails", "1",
     "did you mean 'n_startup_trials'"),
    ({"pruner": "patient", "patience": 1, "wrapped": {"pruner": "median", "patience": 1}},
     "scheduler.wrapped.patience", "1", "pruner median does not take patience"),
    ({"pruner": "patient", "patience": 1, "wrapped": {"pruner": "patient", "patience": 1}},
     "scheduler.wrapped", "{'pruner': 'patient'", "patient wraps median"),
    ({"pruner": "hyperband", "min_resource": "auto"}, "scheduler.min_resource", "'auto'",
     "no 'auto'"),
    ({"pruner": "hyperband", "min_resource": 3}, "scheduler.min_resource", "3",
     "at most budget.max_epochs (2)"),
    ({"pruner": "hyperband", "min_resource": 2, "max_resource": 1},
     "scheduler.min_resource", "2", "at most max_resource (1)"),
    ({"pruner": "successive-halving", "bootstrap_count": 2}, "scheduler", "<pruner",
     "Optuna refuses it: bootstrap_count > 0 and min_resource == 'auto'"),
    ({"pruner": "percentile", "percentile": 120}, "scheduler.percentile", "120",
     "less than or equal to 100"),
])
def test_bad_pruner_settings_name_the_field(block: dict, path: str, value: str,
                                             why: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny_spec(scheduler={"type": "optuna", **block}))
    hits = [p for p in info.value.problems if p.startswith(f"<spec>: {path}: {value}")]
    assert len(hits) == 1 and why in hits[0], info.value.problems


def test_hyperband_searchspace_uses_the_budget_as_max_resource() -> None:
    from service.config.spec import load_spec

    spec = load_spec(ROOT / "searchspaces" / "lenet5_hyperband_pruner.yaml")
    sched = make_scheduler(spec)
    assert isinstance(sched._pruner, optuna.pruners.HyperbandPruner)
    assert sched._pruner._max_resource == spec.budget.max_epochs


def test_summary_marks_stopped_trials_with_their_epoch() -> None:
    spec = parse_spec(TINY)
    results = [SimpleNamespace(metrics={"trial_id": tid, "epoch": epoch, "val_acc": acc},
                               metrics_dataframe=None, config={"lr": 0.05}, error=None,
                               path=f"/x/run_trial_{tid}")
               for tid, epoch, acc in (("a", 3, 0.9), ("b", 1, 0.1))]
    summary = summarize(spec, plan_sweep(spec, "/tmp/r", {"CPU": 2}, "run"), results, 1.0, [])
    by_id = {t.trial_id: t.model_dump() for t in summary.trials}
    assert by_id["b"]["status"] == "stopped-early" and by_id["b"]["stopped_at"] == 1
    assert by_id["a"]["status"] == "completed" and "stopped_at" not in by_id["a"]


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_sweep_with_the_median_pruner_stops_a_slow_trial(tmp_path: Path) -> None:
    # One trial at a time; the seeded TPE start-up draws lr 0.05, 0.05, then 1e-4 (choices are
    # drawn by index: [1e-4, 0.05] puts the fast rate first). The first two complete; the third
    # sits at chance after one epoch, below their median, so Optuna's pruner stops it there.
    space = tmp_path / "tiny_optuna.yaml"
    space.write_text(yaml.safe_dump(TINY))
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(tmp_path / "res"), "--no-report"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "optuna (pruner=median, n_startup_trials=2, n_warmup_steps=0)" in proc.stdout
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    trials = summary["trials"]
    assert len(trials) == TINY["budget"]["num_samples"]
    for t in trials:
        assert t["status"] in ("completed", "stopped-early")
        assert ("stopped_at" in t) == (t["status"] == "stopped-early")
    stopped = [t for t in trials if t["status"] == "stopped-early"]
    assert [(t["config"]["lr"], t["stopped_at"], t["epochs"]) for t in stopped] == [
        (0.0001, 1, 1)], trials
    assert summary["best"]["config"]["lr"] == 0.05
