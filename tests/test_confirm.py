"""Explore, then confirm: `python -m service.submit --confirm RUN_DIR` turns a finished sweep
into an ablation study of its best configuration (service.config.confirm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import lenet_space, run_main
from test_submit import interrupted

from service import submit
from service.config.confirm import confirmation, other_values
from service.config.spec import SpecError, parse_spec
from service.results.records import Summary, TrialRecord
from service.results.store import write_json
from service.rundir import ARM_KEY, SEED_KEY

ROOT = Path(__file__).resolve().parents[1]
SWEEP = lenet_space("sweep", {"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
                              "pool": {"type": "choice", "values": ["max", "avg", "trainable"]}},
                    1, image_size=32, train_subset=256, searcher={"type": "random", "seed": 0},
                    num_samples=4)


def test_the_baseline_is_the_best_and_each_knob_switches_to_its_other_values() -> None:
    spec = parse_spec(SWEEP).model_dump(mode="json")
    doc = confirmation(spec, {"lr": 0.0123456, "pool": "avg", SEED_KEY: 0}, ["lr", "pool"])
    abl = parse_spec(doc).ablation  # a valid study as it is
    assert abl.baseline == {"lr": 0.0123, "pool": "avg"}  # a float at 3 significant digits
    # every other choice; a range's other half, at its (log) middle: sqrt(1e-4 * sqrt(1e-5))
    assert abl.arms == {"lr_0.000562": {"lr": 0.000562}, "pool_max": {"pool": "max"},
                        "pool_trainable": {"pool": "trainable"}}
    assert other_values({"type": "float", "low": 0.0, "high": 1.0}, 0.2) == [0.75]
    assert other_values({"type": "int", "low": 1, "high": 9}, 8) == [3]
    assert abl.sequential and abl.seeds.looks() == (4, 8, 12, 16)
    assert doc["name"] == "sweep-confirm" and "search" not in doc
    # the sweep trained trial seed train.seed (one seed): the study starts past it
    assert doc["train"]["seed"] == spec["train"].get("seed", 0) + 1 == 1
    assert parse_spec(doc).scheduler.type == "none"  # every compared run the full budget


@pytest.mark.parametrize(("block", "extra", "line"), [
    ({"seeds": {"start": 8, "max": 4, "step": 2}}, {},
     "confirm.seeds.start: 8 → at most confirm.seeds.max (4)"),
    ({"seeds": {"start": 2, "max": 4, "step": 0}}, {}, "confirm.seeds.step: 0 →"),
    ({"seeds": {"start": "x", "max": 4, "step": 2}}, {}, "confirm.seeds.start: 'x' →"),
    ({"seeds": 1}, {}, "confirm.seeds: 1 → paired statistics need at least 2 seeds"),
    ({"seeds": 4, "min_effect": 0.01}, {}, "confirm.min_effect: 0.01 → futility needs"),
    ({"baseline": {"no_such_knob": 1}}, {}, "confirm.baseline.no_such_knob:"),
    ({"baseline": {"pool": "median"}}, {}, "confirm.baseline.pool: 'median' →"),
    ({"arms": {"wide": {"pool": "median"}}}, {}, "confirm.arms.wide.pool: 'median' →"),
    ({"arms": {"nothing": {}}}, {}, "confirm.arms.nothing: '{}' → an arm changes at least one"),
    ({}, {"budget": {"max_epochs": 1, "num_samples": 4, "metric": ["val_acc", "flops"]}},
     "confirm: <block> → a Pareto sweep has no single best configuration"),
])
def test_a_bad_confirm_block_is_refused_naming_its_field(block, extra, line) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**SWEEP, **extra, "confirm": block}, source="s.yaml")
    assert any(p.startswith(f"s.yaml: {line}") for p in err.value.problems), err.value.problems


def test_the_plan_says_what_confirm_will_run_and_no_confirm_drops_it(tmp_path, capsys) -> None:
    space = tmp_path / "sweep.yaml"
    space.write_text(yaml.safe_dump({**SWEEP, "confirm": {
        "baseline": {"pool": "max"}, "arms": {"avg": {"pool": "avg"}},
        "seeds": {"start": 3, "max": 6, "step": 3}}}))
    proc = run_main(submit.main, [str(space), "--dry-run"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert ("  then confirms the best configuration with pool=max against avg pool=avg, on 3 to 6 "
            "(looks at 3, 6) seeds the sweep did not train\n") in proc.stdout
    proc = run_main(submit.main, [str(space), "--dry-run", "--no-confirm"], capsys)
    assert proc.returncode == 0 and "confirms" not in proc.stdout, proc


def test_a_sweep_with_failed_trials_is_confirmed_if_it_has_a_best_and_says_why_if_not(
        capsys) -> None:
    from service.cli import Exit
    from service.tune.runner import Outcome

    spec = parse_spec({**SWEEP, "confirm": {}})
    done = TrialRecord(trial_id="t0", config={"lr": 0.01, "pool": "max"}, status="completed",
                       epochs=1, best_val_acc=0.9, final={"val_acc": 0.9})
    diverged = TrialRecord(trial_id="t1", config={"lr": 0.1, "pool": "avg"}, status="diverged",
                           epochs=1)

    def outcome(trials: list[TrialRecord], code: int) -> Outcome:
        return Outcome(code, "run", Summary.ranked(trials, name="sweep", spec={},
                                                  searched=["lr", "pool"]))

    assert submit.confirms(spec, outcome([done, diverged], Exit.TRIALS_FAILED))
    assert not submit.confirms(spec.model_copy(update={"confirm": None}),
                               outcome([done], Exit.OK))
    assert capsys.readouterr().err == ""
    assert not submit.confirms(spec, outcome([diverged], Exit.TRIALS_FAILED))
    assert capsys.readouterr().err == ("confirm: not run: no trial of the sweep has a score, so "
                                       "there is no best configuration to confirm\n")


def _finished(run_dir: Path, spec: dict, trials: list[TrialRecord]) -> Path:
    run_dir.mkdir(parents=True)
    write_json(run_dir / "summary.json", Summary.ranked(trials, name=spec["name"], spec=spec,
                                                         searched=list(spec.get("search", {}))))
    return run_dir


def test_confirm_refuses_a_directory_that_holds_no_finished_sweep(tmp_path, capsys) -> None:
    proc = run_main(submit.main, ["--confirm", str(tmp_path), "--dry-run"], capsys)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"--confirm: '{tmp_path}' → no finished sweep here")
    study = parse_spec({**{k: v for k, v in SWEEP.items() if k not in ("search", "searcher")},
                        "scheduler": {"type": "none"}, "budget": {"max_epochs": 1},
                        "ablation": {"arms": {"avg": {"pool": "avg"}}}}).model_dump(mode="json")
    run = _finished(tmp_path / "abl", study, [])
    proc = run_main(submit.main, ["--confirm", str(run), "--dry-run"], capsys)
    assert proc.returncode == 2 and "an ablation study's run" in proc.stderr
    diverged = TrialRecord(trial_id="t0", config={"lr": 0.1, "pool": "max"}, status="diverged",
                           epochs=1)
    run = _finished(tmp_path / "sweep", parse_spec(SWEEP).model_dump(mode="json"), [diverged])
    proc = run_main(submit.main, ["--confirm", str(run), "--dry-run"], capsys)
    assert proc.returncode == 2 and "no best configuration to confirm" in proc.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("on_shared_ray")
def test_a_sweep_with_confirm_ends_with_its_confirmation_on_seeds_it_did_not_train(
        tmp_path, capsys) -> None:
    """One command: the sweep, then its confirmation, whose baseline is the sweep's best
    trial's settings, whose arms are its searched knobs, and whose trial seeds are none of the
    sweep's, on the sweep's Ray. Interrupted after the confirmation's first look, `--confirm
    RUN_DIR --resume` reads that look back and trains only the next; `--confirm RUN_DIR` plans
    the same study for the finished sweep."""
    space = tmp_path / "sweep.yaml"
    space.write_text(yaml.safe_dump({**SWEEP, "confirm": {}}))
    _, first = interrupted(space, tmp_path / "res", lambda s: s.startswith("  still running:"))
    assert first.count("Ray dashboard") == 1, first  # one Ray (joined or started) for both
    (run_dir,) = [d for d in (tmp_path / "res" / "sweep").iterdir() if not d.name.startswith(".")]
    (confirm_dir,) = [d for d in (tmp_path / "res" / "sweep-confirm").iterdir()
                      if not d.name.startswith(".")]
    assert f"confirming the best configuration of {run_dir}" in first
    assert "look 1 (n = 4): " in first and "look 2 (n = 8)" not in first, first
    hint = (f"Continue with: python -m service.submit --confirm {run_dir} --resume "
            f"{confirm_dir.name}")
    assert hint in first, first
    look1 = (confirm_dir / "looks" / "1" / "summary.json").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "service.submit", "--confirm", str(run_dir),
                           "--resume", confirm_dir.name, "--no-report"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == str(confirm_dir / "summary.json")
    assert (confirm_dir / "looks" / "1" / "summary.json").read_bytes() == look1
    assert "look 1: " not in proc.stdout and "look 2: " in proc.stdout, proc.stdout
    runs = [(t["config"][ARM_KEY], t["config"][SEED_KEY]) for t in
            json.loads((confirm_dir / "summary.json").read_text())["trials"]]
    assert len(runs) == len(set(runs)) > 16  # no (cell, seed) twice; look 1 had 16
    best = json.loads((run_dir / "summary.json").read_text())["best"]["config"]
    study = json.loads((confirm_dir / "ablation.json").read_text())
    baseline = {"lr": float(f"{best['lr']:.3g}"), "pool": best["pool"]}
    assert study["baseline"]["settings"] == baseline
    changed = {k for arm in study["arms"] for k in arm["changes"]}
    assert changed == {"lr", "pool"} and len(study["arms"]) == 3  # lr's other half, 2 pools
    assert study["sequential"]["schedule"] == {"start": 4, "max": 16, "step": 4}

    def seeds(path: Path) -> set[int]:
        s = json.loads(path.read_text())
        base = parse_spec(s["spec"]).base_config().seed
        return {base + int(t["config"].get(SEED_KEY, 0)) for t in s["trials"]}

    swept, confirmed = seeds(run_dir / "summary.json"), seeds(confirm_dir / "summary.json")
    assert swept == {0} and confirmed and not swept & confirmed
    trials = json.loads((confirm_dir / "summary.json").read_text())["trials"]
    assert {t["config"][ARM_KEY] for t in trials} == {"baseline",
                                                      *(a["name"] for a in study["arms"])}
    again = run_main(submit.main, ["--confirm", str(run_dir), "--dry-run"], capsys)
    assert again.returncode == 0, again.stderr
    shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in baseline.items())
    assert f"  baseline {shown}; arms: " in again.stdout + again.stderr, again
