"""Seed groups (`budget.seeds > 1`) with the optuna-tpe searcher and an early-stopping scheduler:
the Optuna study holds one trial per configuration, PRUNED when any of its seeds was stopped
early, COMPLETE with the mean of the seeds' final values only when every seed ran the full
budget; the group state survives Tune's save and restore."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from service.config.spec import parse_spec
from service.rundir import SEED_KEY

# LeNet-5 on digits at its smallest size (32 px), 2 epochs. Learning rates from 1e-4 (chance
# after an epoch) to 0.2; the seeded TPE start-up draws 0.0065, 0.023, 0.0098 and 0.0063, two
# at a time. At ASHA's one rung (epoch 1, reduction factor 2) a seed below the median of those
# that got there first stops: at least the third configuration's seeds, behind the 0.023 pair.
SEEDED = {
    "name": "seeded",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "float", "low": 1.0e-4, "high": 0.2, "log": True}},
    "budget": {"max_epochs": 2, "num_samples": 4, "seeds": 2},
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 4},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def _groups(trials: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """summary.json's trials grouped by their configuration apart from the seed."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for t in trials:
        config = {k: v for k, v in t["config"].items() if k != SEED_KEY}
        groups.setdefault(tuple(sorted(config.items())), []).append(t)
    return groups


@pytest.mark.slow
def test_seed_groups_stopped_early_are_pruned_in_the_study(tmp_path: Path,
                                                           submit_space) -> None:
    db = tmp_path / "study.db"
    spec = dict(SEEDED, searcher={**SEEDED["searcher"], "storage": f"sqlite:///{db}"})
    summary = json.loads(submit_space(spec, tmp_path, 600).read_text())
    groups = _groups(summary["trials"])
    assert len(summary["trials"]) == 8 and len(groups) == 4, summary["trials"]
    assert all(sorted(t["config"][SEED_KEY] for t in g) == [0, 1] for g in groups.values())
    stopped = [t for t in summary["trials"] if t["status"] == "stopped-early"]
    assert stopped, "ASHA stopped no seed: the sweep does not exercise the bug"

    study = optuna.load_study(storage=f"sqlite:///{db}", study_name="seeded")
    assert len(study.trials) == SEEDED["budget"]["num_samples"]
    seen = set()
    for ot_trial in study.trials:
        key = tuple(sorted(ot_trial.params.items()))
        assert key in groups, (ot_trial.params, list(groups))
        seen.add(key)
        seeds = groups[key]
        if all(t["status"] == "completed" for t in seeds):
            # every seed ran the full budget: the mean of their last epochs' values
            assert ot_trial.state == TrialState.COMPLETE, (ot_trial, seeds)
            finals = [t["final"]["val_acc"] for t in seeds]
            assert ot_trial.value == pytest.approx(sum(finals) / len(finals))
        else:
            assert ot_trial.state == TrialState.PRUNED, (ot_trial, seeds)
            # its learning curve: the seeds' mean at each epoch all of them reached
            last = min(t["epochs"] for t in seeds)
            assert max(ot_trial.intermediate_values) == last
            assert ot_trial.intermediate_values[last] == pytest.approx(
                sum(_value_at(tmp_path, summary, t, last) for t in seeds) / len(seeds))
    assert seen == set(groups)


def _value_at(tmp_path: Path, summary: dict, trial: dict, epoch: int) -> float:
    """A trial's val_acc at `epoch`, from Tune's result.json of the trial."""
    if trial["epochs"] == epoch:
        return trial["final"]["val_acc"]
    (run_dir,) = [d for d in (tmp_path / "results" / summary["name"]).iterdir()
                  if not d.name.startswith(".")]
    (trial_dir,) = run_dir.glob(f"run_trial_{trial['trial_id']}_*")
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return next(r["val_acc"] for r in rows if r.get("epoch") == epoch)


# --- the searcher alone: Tune's own wrappers around it, no Ray cluster ---------------------------

def _searcher(tmp_path: Path):
    from service.tune.search import make_searcher

    return make_searcher(parse_spec(dict(
        SEEDED, budget={**SEEDED["budget"], "max_epochs": 3},
        searcher={**SEEDED["searcher"], "storage": f"sqlite:///{tmp_path / 'study.db'}"})))


def _chain(searcher, max_concurrent: int = 8):
    """The searcher wrapped as Tune wraps it (ConcurrencyLimiter, then SearchGenerator)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.search_generator import SearchGenerator

    from service.tune.search import param_space

    limiter = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    generator = SearchGenerator(limiter)
    assert generator.set_search_properties("val_acc", "max", param_space(parse_spec(SEEDED)))
    return generator, limiter


def _run(limiter, trial_id: str, accs: list[float], stop: bool = False, **end: Any) -> dict:
    """Report one val_acc per epoch; the last one (the one a scheduler stopped on when `stop`)
    comes only with the completion, as Tune hands it over."""
    config = limiter.suggest(trial_id)
    shown = accs[:-1] if stop else accs
    for epoch, acc in enumerate(shown, start=1):
        limiter.on_trial_result(trial_id, {"val_acc": acc, "epoch": epoch,
                                           "training_iteration": epoch})
    if end.get("error"):
        limiter.on_trial_complete(trial_id, result=None, error=True)
    elif accs:
        limiter.on_trial_complete(trial_id, result={"val_acc": accs[-1], "epoch": len(accs),
                                                    "training_iteration": len(accs), **end})
    return config


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="seeded")


def test_each_group_is_one_study_trial_by_its_outcome(tmp_path: Path) -> None:
    _, limiter = _chain(_searcher(tmp_path))
    a0 = _run(limiter, "a0", [0.5, 0.8, 0.9])
    a1 = _run(limiter, "a1", [0.4, 0.7, 0.8])
    assert a0[SEED_KEY] == 0 and a1 == {**a0, SEED_KEY: 1}
    _run(limiter, "b0", [0.3, 0.6, 0.92])
    _run(limiter, "b1", [0.2, 0.64], stop=True)  # stopped by the scheduler at epoch 2
    _run(limiter, "c0", [0.1, 0.2, 0.3], status="diverged")  # no early stop, but diverged
    _run(limiter, "c1", [0.5, 0.6, 0.7])
    _run(limiter, "d0", [], error=True)  # failed before its first epoch
    _run(limiter, "d1", [], error=True)
    _run(limiter, "e0", [0.5, 0.6, 0.7])
    _run(limiter, "e1", [], error=True)
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED]
    a, b, c, _, e = trials
    assert a.value == pytest.approx(0.85)  # the mean of the seeds' last epochs
    assert a.intermediate_values == pytest.approx({1: 0.45, 2: 0.75, 3: 0.85})
    # the group got as far as its shortest seed: the mean of both where both reported
    assert b.intermediate_values == pytest.approx({1: 0.25, 2: 0.62})
    assert c.intermediate_values == pytest.approx({1: 0.3, 2: 0.4, 3: 0.5})
    assert e.intermediate_values == pytest.approx({1: 0.5, 2: 0.6, 3: 0.7})


def test_half_finished_groups_survive_tunes_save_and_restore(tmp_path: Path) -> None:
    # What Tuner.restore does after a killed driver: the searcher pickled in tuner.pkl before
    # the sweep started is wrapped again and gets the state Tune saved with the experiment.
    searcher = _searcher(tmp_path)
    pristine, _ = _chain(pickle.loads(pickle.dumps(searcher)))
    generator, limiter = _chain(searcher)
    _run(limiter, "a0", [0.5, 0.8, 0.9])
    _run(limiter, "a1", [0.4, 0.7, 0.8])
    _run(limiter, "b0", [0.3, 0.6, 0.9])
    config_b = limiter.suggest("b1")
    limiter.on_trial_result("b1", {"val_acc": 0.2, "epoch": 1, "training_iteration": 1})
    generator.save_to_dir(str(tmp_path), session_str="kill")
    # reported after Tune's last save, then the driver is killed: the restored one never sees it
    limiter.on_trial_result("b1", {"val_acc": 0.5, "epoch": 2, "training_iteration": 2})

    pristine.restore_from_dir(str(tmp_path))
    limiter = pristine.searcher  # b1 resumes from its epoch-2 checkpoint
    limiter.on_trial_complete("b1", result={"val_acc": 0.7, "epoch": 3,
                                            "training_iteration": 1})
    assert config_b[SEED_KEY] == 1
    c0 = _run(limiter, "c0", [0.5, 0.6, 0.7])
    assert c0[SEED_KEY] == 0 and {k: v for k, v in c0.items() if k != SEED_KEY} != {
        k: v for k, v in config_b.items() if k != SEED_KEY}
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.RUNNING]
    assert trials[1].value == pytest.approx(0.8)
    # epoch 1 from before the save; epoch 2 known from b0 alone
    assert trials[1].intermediate_values == pytest.approx({1: 0.25, 2: 0.6, 3: 0.8})
