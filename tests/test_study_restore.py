"""A persistent Optuna study agrees with the searcher state Tune restores after a killed driver
(service/tune/schedulers.py:PrunedAwareOptunaSearch.settle_study): trials asked for after Tune's
last save are FAIL, not RUNNING forever; trials told before the kill are not told twice; a trial
that ended in error and that --resume ran again gets a COMPLETE copy naming the one it retries.

Unit-sized: the searcher's own save/restore (what Tune calls) on an SQLite study, no Ray
cluster. tests/test_driver_kills.py shows the same through real killed drivers."""

from __future__ import annotations

from collections import Counter

import optuna
from ray import tune

from service.tune.schedulers import GHOST_REASON, TUNE_TRIAL_ATTR, PrunedAwareOptunaSearch

SPACE = {"lr": tune.loguniform(1e-3, 0.1)}
DONE = {"val_acc": 0.8, "epoch": 2, "training_iteration": 2}


def searcher(db) -> PrunedAwareOptunaSearch:
    s = PrunedAwareOptunaSearch(
        space=SPACE, metric="val_acc", mode="max", max_epochs=2, study_name="s",
        storage=optuna.storages.RDBStorage(f"sqlite:///{db}"),
        sampler=optuna.samplers.RandomSampler(seed=0))
    return s


def states(db) -> list[tuple[str, str | None]]:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    return [(t.state.name, t.user_attrs.get(TUNE_TRIAL_ATTR)) for t in study.trials]


def test_trials_asked_after_the_last_save_are_failed_and_told_ones_not_told_twice(tmp_path):
    db = tmp_path / "study.db"
    first = searcher(db)
    for i in range(3):
        first.suggest(f"t{i}")
    first.on_trial_complete("t0", DONE)
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last save before the kill
    first.on_trial_complete("t1", DONE)  # told after the save
    first.suggest("t3")  # asked after the save: Tune's saved state never heard of it
    # ... the driver is SIGKILLed here; a new driver restores what Tune saved.
    again = searcher(db)
    again.restore(str(tmp_path / "searcher.pkl"))
    assert states(db) == [("COMPLETE", "t0"), ("COMPLETE", "t1"), ("RUNNING", "t2"),
                          ("FAIL", "t3")]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert study.trials[3].user_attrs["failed_because"] == GHOST_REASON
    # Tune re-queues t1 and t2 (unfinished in its saved state): t1's end is not told again,
    # t2 is told as usual; nothing stays RUNNING and no trial is COMPLETE twice.
    again.on_trial_complete("t1", DONE)
    again.on_trial_complete("t2", DONE)
    assert states(db) == [("COMPLETE", "t0"), ("COMPLETE", "t1"), ("COMPLETE", "t2"),
                          ("FAIL", "t3")]


def test_a_trial_retried_after_an_error_gets_a_complete_copy(tmp_path):
    db = tmp_path / "study.db"
    first = searcher(db)
    config = first.suggest("t0")
    first.on_trial_complete("t0", None, error=True)  # e.g. the disk was full
    first.save(str(tmp_path / "searcher.pkl"))
    again = searcher(db)
    again.restore(str(tmp_path / "searcher.pkl"))
    again.on_trial_complete("t0", DONE)  # --resume ran it again, to its end
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert Counter(t.state.name for t in study.trials) == {"FAIL": 1, "COMPLETE": 1}
    failed, copy = study.trials
    assert copy.params == failed.params == config
    assert copy.value == DONE["val_acc"]
    assert copy.user_attrs == {TUNE_TRIAL_ATTR: "t0", "retry_of": failed.number}
    again.on_trial_complete("t0", DONE)  # told again: still one copy
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials) == 2
