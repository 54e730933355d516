"""A persistent Optuna study: a later sweep with the same storage continues the same study."""

from __future__ import annotations

import os
import uuid

import optuna
import pytest

from service.config.spec import SpecError, parse_spec
from service.tune.search import make_searcher, tune_param_space


def space(storage: str | None, **searcher) -> dict:
    return {"name": "nightly", "model": {"family": "lenet5"},
            "search": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
            "budget": {"max_epochs": 2, "num_samples": 3},
            "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 2,
                         **({"storage": storage} if storage else {}), **searcher}}


def run_trials(spec, prefix: str, n: int) -> list[float]:
    """Drive the sweep's own searcher as Tune does: suggest, then complete with a score."""
    searcher = make_searcher(spec)
    assert searcher.set_search_properties("val_acc", "max", tune_param_space(spec))
    lrs = []
    for i in range(n):
        config = searcher.suggest(f"{prefix}{i}")
        lrs.append(config["lr"])
        # a score that rewards lr near 0.03, so TPE has something to learn
        score = 1.0 - abs(config["lr"] - 0.03)
        searcher.on_trial_complete(f"{prefix}{i}", {"val_acc": score, "epoch": 2,
                                                    "training_iteration": 2})
    return lrs


POSTGRES_URL = os.environ.get("CNN_ABLATE_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A fresh study location: a SQLite file, or a uniquely named study on a real PostgreSQL
    server (`.ci/run` installs and starts one and exports CNN_ABLATE_POSTGRES_URL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/studies.db", "nightly"
        return
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set CNN_ABLATE_POSTGRES_URL (.ci/run starts one)")
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    yield POSTGRES_URL, name
    optuna.delete_study(study_name=name, storage=POSTGRES_URL)


def test_second_sweep_continues_the_study(storage_url):
    url, name = storage_url
    spec = parse_spec(space(url, study_name=name))
    first = run_trials(spec, "a", 3)
    second = run_trials(spec, "b", 2)
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Same seed, no history, would repeat the first sweep's opening suggestion; with the
    # stored trials TPE is past its start-up phase and proposes something else.
    assert second[0] != first[0]
    fresh = run_trials(parse_spec(space(None)), "c", 1)
    assert fresh[0] == first[0]


def test_study_name_defaults_to_the_spec_name_and_can_be_set(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    run_trials(parse_spec(space(url, study_name="zf-vs-alex")), "a", 1)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["zf-vs-alex"]


@pytest.mark.parametrize("searcher, needle", [
    ({"storage": "studies.db"}, "searcher.storage"),
    ({"type": "random", "storage": "sqlite:///s.db"}, "optuna-tpe"),
    ({"study_name": ""}, "searcher.study_name"),
])
def test_bad_storage_settings_are_refused(searcher, needle):
    bad = space(None)
    bad["searcher"].update(searcher)
    with pytest.raises(SpecError, match=needle):
        parse_spec(bad)


def test_summary_never_records_a_storage_password():
    from service.redact import redact_url
    from service.tune.summary import redacted_spec

    url = "postgresql://cnn:s3cret@db.internal:5432/studies"
    assert redact_url(url) == "postgresql://cnn:***@db.internal:5432/studies"
    assert redact_url("sqlite:///studies.db") == "sqlite:///studies.db"
    dump = redacted_spec(parse_spec(space(url)))
    assert "s3cret" not in str(dump)
    assert dump["searcher"]["storage"] == "postgresql://cnn:***@db.internal:5432/studies"
