"""Several objectives (`budget.metric: [val_acc, flops]`): the spec's rules, the Pareto front and
its hypervolume, and a real sweep whose front equals a brute-force filter of its trials and
Optuna's own `study.best_trials`, its study opened by optuna-dashboard's real server."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import joined_env

from service.config.base import SpecError
from service.config.spec import parse_spec
from service.results.pareto import dominates, hypervolume, non_dominated, pareto_of
from service.results.records import TrialRecord
from service.results.store import read_summary
from service.rundir import JOURNAL
from service.tune.runtime import free_port

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "pareto-tiny",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    # the input size sets the FLOPs; lr moves the accuracy
    "search": {"image_size": {"type": "choice", "values": [32, 40]},
               "lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True}},
    "budget": {"max_epochs": 2, "num_samples": 4, "metric": ["val_acc", "flops"]},
    "searcher": {"type": "optuna-tpe", "seed": 0, "n_startup_trials": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def spec_with(**budget_and_more):
    doc = json.loads(json.dumps(TINY))
    for key, value in budget_and_more.items():
        block, _, field = key.partition("__")
        if field:
            doc.setdefault(block, {})[field] = value
        else:
            doc[block] = value
    return doc


def problems(doc) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    return err.value.problems


# --- the spec ------------------------------------------------------------------------------


def test_several_objectives_default_to_no_scheduler_and_their_own_directions():
    spec = parse_spec(spec_with())
    assert spec.scheduler.type == "none"
    assert spec.budget.objectives == [("val_acc", "max"), ("flops", "min")]
    assert spec.budget.primary == ("val_acc", "max") and spec.budget.multi_objective
    again = parse_spec(json.loads(json.dumps(spec.model_dump(mode="json"))))
    assert again.budget.objectives == spec.budget.objectives  # a dumped spec reloads the same


@pytest.mark.parametrize("change, path, needle", [
    ({"scheduler": {"type": "asha"}}, "scheduler.type", "Pareto front"),
    ({"budget__mode": ["max", "max"]}, "budget.mode", "flops improves towards min"),
    ({"budget__mode": "max"}, "budget.mode", "one mode per metric"),
    ({"budget__metric": ["val_acc"]}, "budget.metric", "two or more objectives"),
    ({"budget__metric": ["val_acc", "val_acc"]}, "budget.metric", "listed twice"),
    ({"budget__metric": ["val_acc", "watts"]}, "budget.metric", "unknown metric 'watts'"),
    ({"budget__seeds": 2}, "budget.seeds", "one trial per configuration"),
])
def test_what_several_objectives_cannot_combine_with_is_refused_by_path(change, path, needle):
    found = problems(spec_with(**change))
    assert any(p.startswith(f"<spec>: {path}:") and needle in p for p in found), found


def test_an_ablation_compares_on_one_metric():
    doc = spec_with(search={}, ablation={"baseline": {"pool": "max"}, "arms": {"avg": {
        "pool": "avg"}}, "seeds": 2})
    found = problems(doc)
    assert any(p.startswith("<spec>: budget.metric:") and "an ablation" in p for p in found), found


def test_nsga2_is_selectable_and_both_samplers_take_several_objectives():
    from service.tune.search import make_sampler, make_searcher

    spec = parse_spec(spec_with(searcher={"type": "optuna-nsga2", "seed": 1,
                                          "population_size": 4}))
    sampler = make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    searcher = make_searcher(spec)
    assert searcher.metric == ["val_acc", "flops"] and searcher.mode == ["max", "min"]
    assert isinstance(make_sampler(parse_spec(spec_with())), optuna.samplers.TPESampler)


# --- the front -----------------------------------------------------------------------------


def brute_front(values: dict[str, list[float]], modes: list[str]) -> set[str]:
    """Non-dominated by the definition, written out for two objectives."""
    def better_or_equal(x, y, mode):
        return x >= y if mode == "max" else x <= y

    front = set()
    for k, v in values.items():
        beaten = any(all(better_or_equal(w[i], v[i], modes[i]) for i in range(len(v)))
                     and w != v for j, w in values.items() if j != k)
        if not beaten:
            front.add(k)
    return front


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_equals_the_definition(seed):
    rng = random.Random(seed)
    values = {f"t{i}": [rng.choice([0.9, 0.95, rng.random()]),
                        rng.choice([1e6, rng.random() * 1e7])] for i in range(30)}
    assert set(non_dominated(values, ["max", "min"])) == brute_front(values, ["max", "min"])
    assert dominates([0.9, 1.0], [0.8, 1.0], ["max", "min"])
    assert not dominates([0.9, 1.0], [0.9, 1.0], ["max", "min"])  # equal: neither dominates


def test_hypervolume_of_two_objectives_is_the_staircase_area():
    # Accuracy up, FLOPs down; reference: the worst of each.
    points = [[0.9, 4.0], [0.8, 2.0], [0.95, 8.0]]
    reference = [0.5, 10.0]
    # Sorted by FLOPs: the area dominated is a union of rectangles, summed by hand.
    area = (0.8 - 0.5) * (10 - 2) + (0.9 - 0.8) * (10 - 4) + (0.95 - 0.9) * (10 - 8)
    assert hypervolume(points, ["max", "min"], reference) == pytest.approx(area)
    # A dominated point adds nothing; a point outside the reference box is left out.
    assert hypervolume(points + [[0.7, 5.0], [0.99, 11.0]], ["max", "min"],
                       reference) == pytest.approx(area)


def record(tid: str, status: str, val_acc: float, flops: int) -> TrialRecord:
    rows = [{"epoch": e, "val_acc": val_acc, "flops": flops, "params": 1000,
             "status": "running"} for e in (1, 2)]
    return TrialRecord.from_history(tid, {"lr": 0.01}, status, rows[:1 if status ==
                                                                      "stopped-early" else 2])


def test_a_trial_stopped_early_failed_or_diverged_is_never_on_the_front():
    trials = [record("done", "completed", 0.90, 2_000),
              record("cheap", "completed", 0.80, 1_000),
              # would dominate both, but it was cut at epoch 1 (or never finished)
              record("cut", "stopped-early", 0.99, 500),
              record("nan", "diverged", 0.99, 500)]
    pareto = pareto_of(trials, [("val_acc", "max"), ("flops", "min")])
    assert pareto.trials == ["done", "cheap"]  # best first on the first objective
    assert set(pareto.values) == {"done", "cheap"}
    # The reference: the worst of each objective, a tenth of its range further.
    assert pareto.reference == pytest.approx([0.79, 2_100])
    # Two boxes up to it, minus their overlap.
    boxes = (0.90 - 0.79) * (2_100 - 2_000) + (0.80 - 0.79) * (2_100 - 1_000)
    assert pareto.hypervolume == pytest.approx(boxes - (0.80 - 0.79) * (2_100 - 2_000))


# --- a real sweep --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pareto_run(tmp_path_factory, shared_ray):
    tmp = tmp_path_factory.mktemp("pareto")
    space = tmp / "pareto-tiny.yaml"
    space.write_text(yaml.safe_dump(TINY))
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(tmp / "results"), "--no-report"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=joined_env(shared_ray))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = Path(proc.stdout.strip().splitlines()[-1])
    assert summary.name == "summary.json", proc.stdout
    return summary.parent, proc.stdout


@pytest.mark.slow
def test_the_reported_front_is_the_non_dominated_trials_and_optunas_best_trials(pareto_run):
    run_dir, stdout = pareto_run
    summary = read_summary(run_dir)
    assert summary.pareto is not None and len(summary.trials) == 4
    assert {t.status for t in summary.trials} == {"completed"}
    modes = ["max", "min"]
    values = {t.trial_id: [t.final["val_acc"], t.final["flops"]] for t in summary.trials}
    assert summary.pareto.values == values
    assert set(summary.pareto.trials) == brute_front(values, modes)
    # Optuna's study, kept in the run directory, holds the same trials and the same front.
    study = optuna.load_study(study_name="pareto-tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted(t.values for t in study.trials) == sorted(values.values())
    assert sorted(t.values for t in study.best_trials) == sorted(
        values[tid] for tid in summary.pareto.trials)
    # The input size sets the cost the front trades against.
    assert len({v[1] for v in values.values()}) == len({t.config["image_size"]
                                                       for t in summary.trials})
    # The end of the run says how to open the study, and where Ray's dashboard was.
    assert f"Optuna dashboard: optuna-dashboard {run_dir / JOURNAL}" in stdout
    assert "Ray dashboard (the cluster's): http://127.0.0.1:" in stdout
    assert "Pareto front (max val_acc and min flops): " in stdout


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.mark.slow
def test_optuna_dashboard_opens_the_sweeps_study(pareto_run):
    run_dir, _ = pareto_run
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), str(run_dir / JOURNAL), "--host",
         "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)  # its own process group, ours to stop
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.2)
        assert [s["study_name"] for s in studies] == ["pareto-tiny"]
        assert len(studies[0]["directions"]) == 2
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        assert [t["state"] for t in detail["trials"]] == ["Complete"] * 4
        summary = read_summary(run_dir)
        assert sorted(t["values"] for t in detail["trials"]) == sorted(
            summary.pareto.values.values())
        assert sorted(t["number"] for t in detail["best_trials"]) == sorted(
            t["number"] for t in detail["trials"] if t["values"] in [
                summary.pareto.values[tid] for tid in summary.pareto.trials])
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_combinations_of_objectives_are_all_accepted():
    for pair in itertools.combinations(["val_acc", "val_loss", "params", "flops",
                                        "images_per_s"], 2):
        spec = parse_spec(spec_with(budget__metric=list(pair)))
        assert [m for m, _ in spec.budget.objectives] == list(pair)
