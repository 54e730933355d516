"""A node lost mid-sweep: on a loopback two-node cluster, the second node's Ray processes are
SIGKILLed while a trial trains there in its Tune trial actor (the tune engine). Tune restarts
that trial on the node left (`resources.max_failures`), from its last registered checkpoint;
the sweep finishes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import lenet_space
from raynodes import kill_tree, loopback_cluster, process_tree, ray_list
from test_faults import _trained_epochs, trial_processes
from test_submit import Lines

from service.rundir import json_lines, trial_dir, trial_history

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3

# 64 px LeNet epochs take ~2.7 s on one core, so the kill lands inside a trial. One CPU per
# node: the two trials train on different nodes.
SPACE = lenet_space("nodeloss", {"lr": {"type": "grid", "values": [0.02, 0.01]}}, EPOCHS,
                    image_size=64, max_failures=1, max_concurrent_trials=2)


def _trial_actors(cluster) -> list[dict]:
    return ray_list("actors", cluster.dashboard, cluster.env, "--filter",
                     "class_name=ImplicitFunc")


def _registered(run_dir: Path | None) -> dict[str, list[int]]:
    try:
        return _trained_epochs(run_dir) if run_dir else {}
    except (OSError, ValueError, KeyError):  # a snapshot being written
        return {}


@pytest.mark.slow
def test_a_lost_node_costs_one_epoch_and_the_trial_resumes_on_the_other(tmp_path):
    pytest.importorskip("ray")
    space = tmp_path / "nodeloss.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    with loopback_cluster(tmp_path, cpus=1, gpus=0) as cluster:
        head = cluster.node_ids["head"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.submit", str(space), "--address", cluster.gcs,
             "--results", str(tmp_path / "res"), "--no-report"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(cluster.env, PYTHONUNBUFFERED="1"), start_new_session=True)
        lines = Lines(proc)
        try:
            line = lines.until(lambda s: s.strip().startswith("results: "), 120)
            run_dir = Path(line.split("results: ", 1)[1].strip())
            # Wait until the trial training on node2 has registered an epoch, not its last.
            deadline = time.monotonic() + 240
            while True:
                assert time.monotonic() < deadline, "no epoch registered on node2:\n" + \
                    "".join(lines.seen)
                on2 = trial_processes(cluster.procs["node2"].pid)
                victim = next(iter(on2.values()), None)
                killed_at = _registered(run_dir).get(victim) if victim else None
                if killed_at:
                    assert max(killed_at) < EPOCHS, "the trial on node2 ended before the kill"
                    break
                time.sleep(0.5)
            before = {w["actor_id"] for w in _trial_actors(cluster)}
            kill_tree(process_tree(cluster.procs["node2"].pid))
            out = lines.rest(480)
            code = proc.wait(timeout=60)
        finally:
            kill_tree(process_tree(proc.pid))
        # Every trial actor the sweep started after the kill (the State API keeps finished
        # ones): the restarted trial ran in a new one or in the head's, reused.
        after = [w for w in _trial_actors(cluster) if w["actor_id"] not in before]
    assert code == 0, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["trials"]) == 2
    assert len({t["trial_id"] for t in summary["trials"]}) == 2
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 2, summary["trials"]
    assert all(t["epochs"] == EPOCHS for t in summary["trials"])
    # Whatever ran after the kill ran on the node left.
    assert {w["node_id"] for w in after} <= {head}, after
    registered = _trained_epochs(run_dir)
    for t in summary["trials"]:
        history = [row["epoch"] for row in json_lines(trial_dir(run_dir, t["trial_id"])
                                                      / "result.json")]
        reached = [row["epoch"] for row in trial_history(run_dir, t["trial_id"],
                                                         trial_dir(run_dir, t["trial_id"]))]
        assert reached == list(range(1, EPOCHS + 1)), (reached, history)
        assert history == sorted(history), history
        epochs = registered[t["trial_id"]]
        assert sorted(set(epochs)) == list(range(1, EPOCHS + 1)), epochs
        # No epoch twice, except on the lost node's trial the one in flight at the kill: it
        # resumed from its last registered checkpoint, not from the start.
        twice = len(history) - len(set(history))
        assert twice <= (1 if t["trial_id"] == victim else 0), (t["trial_id"], history)
        if t["trial_id"] == victim:
            assert epochs[:len(killed_at)] == killed_at
            assert epochs[len(killed_at)] == killed_at[-1] + 1, epochs
            print(f"node loss: trial {victim} lost its node after epoch {killed_at[-1]} of "
                  f"{EPOCHS}, resumed on the head at epoch {epochs[len(killed_at)]}; epochs "
                  f"reported {history}, {twice} trained twice")
