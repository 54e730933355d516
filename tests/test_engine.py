"""The tune engine (`resources.engine: auto` with one worker): every trial runs `fit` in Tune's
own trial actor, reused from trial to trial, ASHA included. A trial that ASHA stops inside
`fit` gives its actor back, and the next trial in that actor trains exactly as in a fresh
process: a reused actor leaves nothing behind."""

from __future__ import annotations

import json

import pytest
from conftest import ASHA, lenet_space

from service.config.spec import parse_spec
from service.rundir import json_lines, trial_dir
from service.training.loop import fit
from service.tune.trial import trial_train_config

# one at a time: 0.05 finishes, 1e-4 falls below ASHA's first rung and is stopped there (inside
# fit), then 0.03 trains in the same actor (as long as ASHA lets it)
SPACE = lenet_space("engine", {"lr": {"type": "grid", "values": [0.05, 0.0001, 0.03]}}, 3,
                    scheduler=ASHA, max_concurrent_trials=1)

@pytest.mark.slow
def test_a_reused_actor_trains_the_next_trial_as_a_fresh_process_would(tmp_path, submit_space):
    pytest.importorskip("ray")
    summary_path = submit_space(SPACE, tmp_path)
    run_dir = summary_path.parent
    trials = {t["config"]["lr"]: t for t in json.loads(summary_path.read_text())["trials"]}
    assert trials[0.05]["status"] == "completed" and trials[0.05]["epochs"] == 3
    assert trials[0.0001]["status"] == "stopped-early" and trials[0.0001]["epochs"] == 1
    rows = {lr: json_lines(trial_dir(run_dir, t["trial_id"]) / "result.json")
            for lr, t in trials.items()}
    # one actor process ran all three, the stopped trial's included
    assert len({row["pid"] for lr in rows for row in rows[lr]}) == 1, rows
    # the last trial, after two others in that actor, matches fit in this fresh process
    spec = parse_spec(SPACE)
    cfg = trial_train_config(spec.base_config().model_dump(mode="json"), {"lr": 0.03})
    fresh: list[dict] = []
    fit(cfg, lambda metrics, _: fresh.append(metrics))
    assert [r["epoch"] for r in rows[0.03]] == list(range(1, trials[0.03]["epochs"] + 1))
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [r[key] for r in rows[0.03]] == pytest.approx(
            [m[key] for m in fresh[:len(rows[0.03])]], rel=1e-6), key
