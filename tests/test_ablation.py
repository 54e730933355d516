"""Ablation studies: the `ablation:` block's checks, the study's statistics (results.ablation)
and whole studies run through `python -m service.submit` on the embedded Ray."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from test_submit import interrupted

from service.config.base import SpecError
from service.config.spec import parse_spec
from service.results import paired
from service.results.ablation import expected_best, factorial_contrasts, study
from service.rundir import JOURNAL

ROOT = Path(__file__).resolve().parents[1]

# LeNet-5 on digits at 32 px; lr 0.05 learns in an epoch, lr 0.00005 (1000x smaller) does not.
STUDY = {
    "name": "study",
    "data": {"dataset": "digits", "image_size": 32},
    "model": {"family": "lenet5"},
    "train": {"optimizer": "sgd", "momentum": 0.9, "lr": 0.05, "batch_size": 64,
              "num_threads": 1},
    "ablation": {"baseline": {"pool": "max"},
                 "arms": {"tiny_lr": {"lr": 0.00005}, "avg_pool": {"pool": "avg"}},
                 "seeds": 4},
    "budget": {"max_epochs": 2},
}


def _with(**ablation) -> dict:
    return {**STUDY, "ablation": {**STUDY["ablation"], **ablation}}


def _problems(space: dict) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_spec(space, "s.yaml")
    return err.value.problems


def test_cells_are_the_baseline_then_each_arm_or_every_combination() -> None:
    one = parse_spec(STUDY).ablation.cells()
    assert one == {"baseline": {"pool": "max"}, "tiny_lr": {"pool": "max", "lr": 0.00005},
                   "avg_pool": {"pool": "avg"}}
    three = parse_spec(_with(design="factorial", arms={
        "a": {"lr": 0.01}, "b": {"pool": "avg"}, "c": {"activation": "tanh"}})).ablation.cells()
    assert list(three) == ["baseline", "a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    assert three["a+c"] == {"pool": "max", "lr": 0.01, "activation": "tanh"}


@pytest.mark.parametrize("space, line", [
    (_with(arms={"x": {"lrnn": True}}), "s.yaml: ablation.arms.x.lrnn: <key> → unknown key"),
    (_with(arms={"x": {"pool": "max"}}), "s.yaml: ablation.arms.x: {'pool': 'max'} → changes "
                                         "nothing"),
    (_with(arms={"x": {}}), "s.yaml: ablation.arms.x: '{}' → an arm changes at least one"),
    (_with(arms={"x": {"image_size": 16}}), "s.yaml: ablation.arms.x: {'image_size': 16} → not "
                                            "a valid configuration"),
    ({**STUDY, "search": {"dropout": {"type": "choice", "values": [0.0, 0.5]}}},
     "s.yaml: ablation: <block> → a study has either search:"),
    (_with(seeds=1), "s.yaml: ablation.seeds: 1 → paired statistics need at least 2 seeds"),
    ({**STUDY, "scheduler": {"type": "asha"}}, "s.yaml: scheduler.type: 'asha' → the compared "
                                               "runs all train budget.max_epochs"),
    ({**STUDY, "budget": {"max_epochs": 2, "seeds": 3}}, "s.yaml: budget.seeds: 3 → an "
                                                          "ablation's seeds are ablation.seeds"),
    (_with(design="factorial", arms={"a": {"pool": "avg"}, "b": {"pool": "max", "lr": 0.1}}),
     "s.yaml: ablation.arms.b: <pool> → arm a changes pool too"),
    (_with(tune={"space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}, "trials": 2}),
     "s.yaml: ablation.tune.space.lr: <key> → arm tiny_lr sets it too"),
    (_with(tune={"space": {"lr": {"type": "flot", "low": 0.01, "high": 0.1}}, "trials": 2}),
     "s.yaml: ablation.tune.space.lr.type: 'flot' → type must be one of"),
    (_with(baseline={"lr": 0.1}), "s.yaml: ablation.baseline.lr: <key> → also fixed in train.lr"),
    (_with(arms={"baseline": {"lr": 0.1}}), "s.yaml: ablation.arms: "),
    # sequential seeds: a schedule that can look; futility only with one; one-at-a-time only
    (_with(seeds={"start": 8, "max": 4, "step": 2}),
     "s.yaml: ablation.seeds.start: 8 → at most ablation.seeds.max (4)"),
    (_with(seeds={"start": 4, "max": 8, "step": 0}),
     "s.yaml: ablation.seeds.step: 0 → Input should be greater than or equal to 1"),
    (_with(seeds={"start": 4, "max": 8}), "s.yaml: ablation.seeds.step: <missing> → required"),
    (_with(min_effect=0.01), "s.yaml: ablation.min_effect: 0.01 → futility needs sequential"),
    (_with(design="factorial", seeds={"start": 4, "max": 8, "step": 2}),
     "s.yaml: ablation.seeds: <start, max, step> → a factorial design trains every cell"),
])
def test_each_problem_is_one_line_naming_its_field(space: dict, line: str) -> None:
    problems = _problems(space)
    assert any(p.startswith(line) for p in problems), problems


def test_sequential_seeds_look_at_start_then_every_step_and_at_max() -> None:
    abl = parse_spec(_with(seeds={"start": 4, "max": 14, "step": 4}, min_effect=0.02)).ablation
    assert abl.sequential and abl.max_seeds == 14 and abl.min_effect == 0.02
    assert abl.seeds.looks() == (4, 8, 12, 14)
    fixed = parse_spec(STUDY).ablation
    assert not fixed.sequential and fixed.max_seeds == 4


def test_an_arm_with_a_seed_without_value_stops_not_resolved_and_the_others_are_tested() -> None:
    """A look at which a seed of an arm (or of the baseline) failed or diverged: that arm stops
    `not resolved` naming the seed; an arm whose seeds all have values is tested as usual."""
    from service.tune.looks import look_records

    abl = parse_spec(_with(seeds={"start": 4, "max": 8, "step": 4})).ablation
    base = {0: 0.90, 1: 0.91, 2: 0.92, 3: 0.90}
    values = {"baseline": base,
              "tiny_lr": {0: 0.10, 1: 0.11, 2: None, 3: 0.10},  # seed 2 diverged
              "avg_pool": {s: v - 0.30 + 0.001 * s for s, v in base.items()}}
    records = look_records(abl, "max", values, ["tiny_lr", "avg_pool"], (4,), {})
    assert [r["arm"] for r in records] == ["tiny_lr", "avg_pool"]
    gap, tested = records
    assert gap["decision"] == "not resolved" and gap["n"] == 4 and gap["effect"] is None
    assert "seed(s) [2] have no value" in gap["reason"]
    assert tested["decision"] == "hurts" and tested["effect"] < 0, tested
    values["baseline"] = {**base, 3: None}  # a baseline seed without value: both arms stop
    both = look_records(abl, "max", values, ["tiny_lr", "avg_pool"], (4,), {})
    assert [r["decision"] for r in both] == ["not resolved", "not resolved"]
    assert "seed(s) [3] have no value" in both[1]["reason"]


def test_a_scheduler_is_allowed_for_tuning_trials_only() -> None:
    tuned = {**STUDY, "scheduler": {"type": "asha"}, "ablation": {
        **STUDY["ablation"], "arms": {"avg_pool": {"pool": "avg"}},
        "tune": {"space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}, "trials": 3}}}
    assert parse_spec(tuned).ablation.tune.trials == 3


@pytest.mark.slow  # seconds in a subprocess
def test_submit_refuses_a_bad_study_before_ray_with_exit_2(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump(_with(arms={"x": {"lrnn": True}, "y": {"pool": "max"}})))
    code = ("import sys; from service.submit import main; rc = main(sys.argv[1:]); "
            "print('RAY' if 'ray' in sys.modules else 'NO_RAY'); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(space)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "NO_RAY" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"{space}: ablation.arms.x.lrnn")
    assert lines[1].startswith(f"{space}: ablation.arms.y")


def test_expected_best_is_the_mean_best_over_every_subset_of_k() -> None:
    values = [0.61, 0.93, 0.88, 0.42, 0.93, 0.77]
    for mode, pick in (("max", max), ("min", min)):
        curve = expected_best(values, mode)
        brute = [np.mean([pick(c) for c in itertools.combinations(values, k)])
                 for k in range(1, len(values) + 1)]
        assert curve == pytest.approx(brute, rel=1e-12)
    assert expected_best(values)[0] == pytest.approx(np.mean(values))
    assert expected_best(values)[-1] == max(values)


def test_factorial_contrasts_recover_main_effects_and_the_interaction() -> None:
    # v = 0.9 + a*(-0.02) + b*(-0.05) + a*b*(+0.03) + seed noise shared by every cell.
    noise = {0: 0.004, 1: -0.011, 2: 0.007}
    model = {"baseline": (0, 0), "a": (1, 0), "b": (0, 1), "a+b": (1, 1)}
    values = {cell: {s: 0.9 - 0.02 * a - 0.05 * b + 0.03 * a * b + e for s, e in noise.items()}
              for cell, (a, b) in model.items()}
    out = factorial_contrasts(values, ["a", "b"])
    # Main effect of a: mean with a minus mean without, over b's two levels.
    assert out["a"] == pytest.approx({s: -0.02 + 0.03 / 2 for s in noise})
    assert out["b"] == pytest.approx({s: -0.05 + 0.03 / 2 for s in noise})
    assert out["a×b"] == pytest.approx({s: 0.03 for s in noise})


def test_a_study_pairs_by_seed_and_says_why_an_arm_could_not_be_tested() -> None:
    base = {0: 0.91, 1: 0.90, 2: 0.93, 3: 0.92}
    values = {"baseline": base, "worse": {0: 0.85, 1: 0.86, 2: 0.88, 3: 0.84},
              "broken": {0: 0.9, 1: None, 2: None, 3: None}}
    out = study(name="s", run_id="r", metric="val_acc", mode="max", alpha=0.05,
                design="one-at-a-time", epochs=3, seeds=[0, 1, 2, 3],
                cells={"baseline": {}, "worse": {"lr": 1e-4}, "broken": {"lr": 9.0}},
                changes={"worse": {"lr": 1e-4}, "broken": {"lr": 9.0}}, values=values,
                excluded=[{"arm": "broken", "seed": 1, "status": "diverged", "why": "nan"}])
    worse, broken = out["arms"]
    alone = paired.compare("worse", base, values["worse"], "max", 0.05)
    assert worse["effect"] == pytest.approx(alone.effect) and worse["p"] == alone.p
    assert worse["p_adjusted"] == alone.p  # the untestable arm is not in Holm's family
    assert worse["verdict"] == "hurts" and worse["changes"] == {"lr": 1e-4}
    assert broken["verdict"] == "not resolved" and broken["n"] == 1
    assert broken["effect"] is None and "only 1 seed(s)" in broken["reason"]
    assert out["scale"] == 100.0 and out["unit"] == " pts"
    json.dumps(out, allow_nan=False)  # ablation.json is strict JSON


def _run(space: Path, results: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.submit", str(space), "--results",
                           str(results), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_1000x_too_small_learning_rate_hurts_at_four_seeds(tmp_path: Path) -> None:
    spec = _with(arms={"tiny_lr": {"lr": 0.00005}})
    space = tmp_path / "study.yaml"
    space.write_text(yaml.safe_dump(spec))
    proc = _run(space, tmp_path / "res")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = [d for d in (tmp_path / "res" / "study").iterdir() if d.is_dir()
                  and not d.name.startswith(".")]
    study_ = json.loads((run_dir / "ablation.json").read_text())
    (arm,) = study_["arms"]
    assert arm["name"] == "tiny_lr" and arm["n"] == 4 and arm["verdict"] == "hurts"
    assert arm["p_adjusted"] < 0.05 and arm["ci_high"] < 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["trials"]) == 8
    assert {t["status"] for t in summary["trials"]} == {"completed"}
    assert all(t["epochs"] == 2 for t in summary["trials"])  # no run was cut short
    # Seed i of the arm is paired with seed i of the baseline: the values are the runs'.
    finals = {(t["config"]["arm"], t["config"]["__trial_index__"]): t["final"]["val_acc"]
              for t in summary["trials"]}
    for row in arm["per_seed"]:
        assert row["baseline"] == finals[("baseline", row["seed"])]
        assert row["arm"] == finals[("tiny_lr", row["seed"])]
    assert "tiny_lr: hurts — " in proc.stdout
    # The study's report, written at the end, shows the arm with its verdict.
    report = (run_dir / "report.html").read_text()
    assert "tiny_lr: hurts — " in report


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_equal_tuning_per_cell_and_resume_after_an_interrupt(tmp_path: Path) -> None:
    """Every cell gets the same tuning trials; a study interrupted after its first tuning phase
    resumes without re-running that phase and ends with the tuned values compared."""
    spec = {**STUDY, "name": "tuned", "searcher": {"n_startup_trials": 2},
            "scheduler": {"type": "asha", "grace_period": 1},
            "budget": {"max_epochs": 1},
            "ablation": {"arms": {"avg_pool": {"pool": "avg"}}, "seeds": 2,
                         "tune": {"space": {"lr": {"type": "float", "low": 0.01, "high": 0.1,
                                                   "log": True}}, "trials": 2}}}
    space = tmp_path / "tuned.yaml"
    space.write_text(yaml.safe_dump(spec))
    results = tmp_path / "res"
    # the baseline's tuning has finished when the next cell's starts
    interrupted(space, results, lambda s: s.startswith("tuning avg_pool:"))
    (run_dir,) = [d for d in (results / "tuned").iterdir() if not d.name.startswith(".")]
    first = (run_dir / "tuning" / "baseline" / "summary.json").read_bytes()

    again = _run(space, results, "--resume", run_dir.name, "--no-report")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "tuning baseline:" not in again.stdout  # finished phases are read back
    assert (run_dir / "tuning" / "baseline" / "summary.json").read_bytes() == first
    study_ = json.loads((run_dir / "ablation.json").read_text())
    tuning = study_["tuning"]
    assert tuning["trials"] == 2 and set(tuning["arms"]) == {"baseline", "avg_pool"}
    for cell, t in tuning["arms"].items():
        summary = json.loads((run_dir / "tuning" / cell / "summary.json").read_text())
        assert len(summary["trials"]) == 2  # the same budget for every cell
        assert len(t["expected_best"]) == len(t["values"]) <= 2
        assert t["expected_best"][-1] == max(t["values"])
    compared = json.loads((run_dir / "summary.json").read_text())["trials"]
    assert len(compared) == 4 and all(t["epochs"] == 1 for t in compared)
    assert study_["baseline"]["tuned"] == tuning["arms"]["baseline"]["best"]
    assert study_["arms"][0]["tuned"] == tuning["arms"]["avg_pool"]["best"]
    assert study_["arms"][0]["settings"]["lr"] == tuning["arms"]["avg_pool"]["best"]["lr"]
    # Each cell's Optuna study is kept beside its tuning trials (Optuna's journal file), its
    # trials all finished after the resume, and the run's end says how to open each one.
    for cell in ("baseline", "avg_pool"):
        journal = run_dir / "tuning" / cell / JOURNAL
        (study,) = optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(
            str(journal))), include_best_trial=False)
        states = [t.state.name for t in optuna.load_study(
            study_name=study.study_name, storage=JournalStorage(JournalFileBackend(
                str(journal)))).trials]
        assert len(states) == 2 and "RUNNING" not in states, (cell, states)
        assert f"Optuna dashboard: optuna-dashboard {journal}" in again.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_sequential_seeds_stop_a_decided_arm_and_resume_at_the_next_look(tmp_path: Path) -> None:
    """seeds {start: 4, max: 8, step: 4}: the 1000x too small learning rate is decided `hurts`
    at the first look and trains no more seeds; avg_pool, no effect worth a verdict at 4 seeds,
    runs to 8 (the shipped searchspaces/sequential.yaml, the README's example). The study is
    interrupted once look 1 has been tested; --resume reads look 1 back and trains only look 2's
    runs: no seed twice."""
    spec = yaml.safe_load((ROOT / "searchspaces" / "sequential.yaml").read_text())
    assert parse_spec(spec).ablation == parse_spec(_with(seeds={"start": 4, "max": 8,
                                                                "step": 4})).ablation
    space = tmp_path / "seq.yaml"
    space.write_text(yaml.safe_dump({**spec, "name": "seq"}))
    results = tmp_path / "res"
    _, first = interrupted(space, results, lambda s: s.startswith("  still running:"))
    assert "look 1 (n = 4): tiny_lr: effect -" in first and "hurts: |t| = " in first, first
    assert "  still running: avg_pool\n" in first, first
    (run_dir,) = [d for d in (results / "seq").iterdir() if not d.name.startswith(".")]
    look1 = (run_dir / "looks" / "1" / "summary.json").read_bytes()

    again = _run(space, results, "--resume", run_dir.name, "--no-report")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (run_dir / "looks" / "1" / "summary.json").read_bytes() == look1  # read back
    look2 = json.loads((run_dir / "looks" / "2" / "summary.json").read_text())["trials"]
    assert sorted((t["config"]["arm"], t["config"]["__trial_index__"]) for t in look2) == sorted(
        (cell, s) for cell in ("baseline", "avg_pool") for s in range(4, 8))
    trials = json.loads((run_dir / "summary.json").read_text())["trials"]
    pairs = [(t["config"]["arm"], t["config"]["__trial_index__"]) for t in trials]
    assert len(pairs) == len(set(pairs)) == 4 * 3 + 4 * 2  # every look's runs, none twice
    study_ = json.loads((run_dir / "ablation.json").read_text())
    arms = {a["name"]: a for a in study_["arms"]}
    assert arms["tiny_lr"]["verdict"] == "hurts" and arms["tiny_lr"]["look"] == 1
    assert arms["tiny_lr"]["n"] == 4 and arms["tiny_lr"]["rci_high"] < 0
    assert arms["avg_pool"]["n"] == 8 and arms["avg_pool"]["look"] == 2
    assert arms["avg_pool"]["decision"] in ("helps", "hurts", "not resolved")
    looks = study_["sequential"]["looks"]
    by = {(r["look"], r["arm"]): r for r in looks}
    assert sorted(by) == [(1, "avg_pool"), (1, "tiny_lr"), (2, "avg_pool")]
    assert by[1, "tiny_lr"]["n"] == by[1, "avg_pool"]["n"] == 4 and by[2, "avg_pool"]["n"] == 8
    tiny = by[1, "tiny_lr"]
    assert tiny["statistic"] < -tiny["boundary"] < 0  # past its boundary, downwards
    assert by[1, "avg_pool"]["decision"] == "continue"
    assert "look 2 (n = 8): avg_pool: " in again.stdout and "look 1 (n = 4)" in again.stdout


def test_seed_i_gives_every_arm_the_same_split_order_and_initial_weights() -> None:
    """What pairing rests on: two cells of one seed differ only by the arm's change."""
    import torch

    from service.rundir import SEED_KEY
    from service.training.loop import _Loop
    from service.tune.trial import trial_train_config, with_arm

    spec = parse_spec(STUDY)
    base = spec.base_config().model_dump(mode="json")
    arms = spec.ablation.cells()

    def loop(cell: str, seed: int) -> _Loop:
        return _Loop(trial_train_config(base, with_arm({"arm": cell, SEED_KEY: seed}, arms)))

    first = {}
    for cell, seed in (("baseline", 2), ("avg_pool", 2), ("baseline", 3)):
        run = loop(cell, seed)
        x, y = next(iter(run.train_loader))
        first[cell, seed] = (run.model.state_dict(), run.data.val.indices, x, y, run.cfg)
    (w0, val0, x0, y0, cfg0), (w1, val1, x1, y1, cfg1) = first["baseline", 2], first["avg_pool", 2]
    assert cfg0.knobs["pool"] == "max" and cfg1.knobs["pool"] == "avg" and cfg0.seed == cfg1.seed
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # pooling has no weights: same init
    assert torch.equal(val0, val1) and torch.equal(y0, y1) and torch.equal(x0, x1)
    w2, val2, _, y2, _ = first["baseline", 3]  # another seed: another split, order and init
    assert not any(torch.equal(w0[k], w2[k]) for k in w0 if w0[k].dtype.is_floating_point
                   and w0[k].numel() > 1 and w0[k].std() > 0)
    assert not torch.equal(val0, val2) and not torch.equal(y0, y2)


def test_resume_latest_finds_a_study_killed_between_its_summary_and_ablation_json(tmp_path):
    from service.tune.runtime import find_run

    def run(name: str, spec: dict, *files: str) -> None:
        d = tmp_path / "s" / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"spec": spec}))
        for f in files:
            (d / f).write_text("{}")

    run("2026-01-01_00-00-00", {"ablation": {"arms": {"a": {}}}})  # no ablation.json yet
    run("2026-01-01_00-00-01", {"ablation": {"arms": {"a": {}}}}, "ablation.json")
    run("2026-01-01_00-00-02", {"search": {}})  # a finished sweep
    assert find_run(str(tmp_path), "s", "latest") == "2026-01-01_00-00-00"


def test_tuning_picks_the_best_full_budget_trial_and_none_when_nothing_has_a_value() -> None:
    from service.results.records import Summary, TrialRecord
    from service.tune.ablation import best_settings

    def trial(i: str, lr: float, status: str, accs: list[float]) -> TrialRecord:
        rows = [{"epoch": e + 1, "val_acc": a} for e, a in enumerate(accs)]
        return TrialRecord.from_history(i, {"lr": lr}, status, rows)

    runs = [trial("a", 0.01, "completed", [0.5, 0.8]), trial("b", 0.05, "completed", [0.6, 0.9]),
            trial("c", 0.3, "stopped-early", [0.95])]  # higher, but cut short: not eligible
    summary = Summary.ranked(runs, name="t", spec={"budget": {"max_epochs": 2}},
                             searched=["lr"])
    assert best_settings(summary, ["lr"]) == {"lr": 0.05}
    broken = Summary.ranked([trial("d", 9.0, "diverged", [])], name="t",
                            spec={"budget": {"max_epochs": 2}}, searched=["lr"])
    assert best_settings(broken, ["lr"]) is None


def test_a_ctrl_c_between_phases_is_raised_and_remembered() -> None:
    """A Ctrl-C that Ray or Tune swallow while a phase starts still stops the study before its
    next phase: the handler raises KeyboardInterrupt as Python's does and keeps a flag."""
    from service.tune.sweep import ctrl_c_between_phases, ctrl_c_pressed

    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_between_phases():
        assert not ctrl_c_pressed()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert ctrl_c_pressed()
    assert signal.getsignal(signal.SIGINT) is before
    with ctrl_c_between_phases():  # a new study starts with no Ctrl-C remembered
        assert not ctrl_c_pressed()
