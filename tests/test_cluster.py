"""Running on a cluster: cluster.yaml against Ray's own schema, the KubeRay manifests, GPU
scheduling with advertised (fake) GPUs, and a loopback multi-node cluster of `ray start` nodes."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from raynodes import RAY, Loopback, loopback_cluster, ray_list

from service.nightly.schedule import summary_path

ROOT = Path(__file__).resolve().parents[1]


# ---- cluster.yaml ----

def cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(config: dict) -> dict:
    """Ray's cluster-launcher checks, offline: defaults filled in, then its JSON schema
    (a private API, see docs/architecture.md, so the tests below pin that it still rejects
    bad input)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_schema():
    config = validate(cluster_config())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    gpus = sorted(t["resources"]["GPU"] for name, t in types.items()
                  if name != config["head_node_type"])
    assert gpus == [1, 4]
    for name, t in types.items():
        if name != config["head_node_type"]:
            assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]


@pytest.mark.parametrize("edit, error", [
    (lambda c: c["available_node_types"]["gpu_1x"].update(max_worker=3), "max_worker"),
    (lambda c: c["available_node_types"]["gpu_1x"].update(min_workers=7), "min_workers"),
    (lambda c: c.update(head_node_type="gpu_8x"), "head_node_type"),
])
def test_rays_schema_check_rejects_a_broken_cluster_yaml(edit, error):
    config = cluster_config()
    edit(config)
    with pytest.raises(Exception, match=error):
        validate(config)


def test_cluster_yaml_keeps_the_dashboard_private_and_token_auth_on():
    config = cluster_config()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "export RAY_AUTH_MODE=token;" in " ".join(cmds)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    text = (ROOT / "cluster.yaml").read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "0.0.0.0" not in code and "RAY_AUTH_MODE=disabled" not in code
    assert "ray dashboard cluster.yaml" in text  # the comments say how to reach it


def test_cluster_yaml_installs_this_project():
    config = cluster_config()
    assert config["file_mounts"]["~/cnn-ablate"] == "."
    setup = " ".join(config["setup_commands"])
    assert "-e ~/cnn-ablate" in setup
    import ray

    assert f"ray[tune,train,default]=={ray.__version__}" in setup


# ---- KubeRay manifests (docs/kuberay) ----

@pytest.mark.parametrize("name, kinds", [
    ("raycluster.yaml", [("ray.io/v1", "RayCluster"), ("networking.k8s.io/v1",
                                                       "NetworkPolicy")]),
    ("rayjob.yaml", [("ray.io/v1", "RayJob")]),
    ("raycronjob.yaml", [("ray.io/v1", "RayCronJob")]),
])
def test_kuberay_manifests_parse(name, kinds):
    docs = kuberay_docs(name)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == kinds
    text = (ROOT / "docs" / "kuberay" / name).read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "RAY_AUTH_MODE" in code or "authOptions" in code
    assert "LoadBalancer" not in code and "NodePort" not in code and "0.0.0.0" not in code


def kuberay_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "docs" / "kuberay" / name).read_text()) if d]


def test_kuberay_raycronjob_runs_exactly_the_rayjob_manifest():
    # One owner: the nightly RayJob's spec is written once more as the RayCronJob's jobTemplate;
    # they must not drift. jobTemplate is a bare RayJobSpec (no metadata/spec wrapper as in a
    # batch/v1 CronJob), so the whole RayJob spec is compared; the RayJob's object metadata
    # (generateName) has no place there: the operator names each night's RayJob itself.
    (rayjob,), (cron,) = kuberay_docs("rayjob.yaml"), kuberay_docs("raycronjob.yaml")
    assert cron["spec"]["jobTemplate"] == rayjob["spec"]


# Field names of RayCronJob's spec and of RayJobSpec (its jobTemplate), from KubeRay v1.7.0's CRD
# helm-chart/kuberay-operator/crds/ray.io_raycronjobs.yaml (= ray-operator/config/crd/bases/;
# v1.6.x has no timeZone). No concurrency policy, starting deadline or history limits exist.
RAYCRONJOB_SPEC_KEYS = {"schedule", "timeZone", "suspend", "jobTemplate"}
RAYCRONJOB_REQUIRED = {"schedule", "jobTemplate"}
RAYJOB_SPEC_KEYS = {
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
    "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy",
    "metadata", "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML",
    "shutdownAfterJobFinishes", "submissionMode", "submitterConfig", "submitterPodTemplate",
    "suspend", "ttlSecondsAfterFinished"}
CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]  # minute hour day month weekday


def is_cron(expr: str) -> bool:
    """A standard 5-field cron expression, numeric: *, N, N-M, each with an optional /STEP."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    for field, (low, high) in zip(fields, CRON_FIELDS, strict=True):
        for part in field.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/([1-9]\d*))?", part)
            if not m:
                return False
            first, last = m[2], m[3] or m[2]
            if first is not None and not low <= int(first) <= int(last) <= high:
                return False
    return True


def test_kuberay_raycronjob_uses_only_crd_fields_and_a_valid_schedule():
    (cron,) = kuberay_docs("raycronjob.yaml")
    spec = cron["spec"]
    assert RAYCRONJOB_REQUIRED <= set(spec) <= RAYCRONJOB_SPEC_KEYS
    assert set(spec["jobTemplate"]) <= RAYJOB_SPEC_KEYS
    assert set(kuberay_docs("rayjob.yaml")[0]["spec"]) <= RAYJOB_SPEC_KEYS
    assert is_cron(spec["schedule"]) and "TZ" not in spec["schedule"]  # TZ=: use timeZone
    assert (spec["schedule"], spec["timeZone"]) == ("0 2 * * *", "Etc/UTC")  # 02:00 UTC
    assert len(cron["metadata"]["name"]) <= 36  # the operator's limit (RayJob name + suffix)
    assert spec["jobTemplate"]["backoffLimit"] == 0
    assert spec["jobTemplate"]["activeDeadlineSeconds"] == 6 * 3600
    for good in ["0 2 * * *", "*/15 0-6 1,15 * 1-5", "30 23 31 12 7"]:
        assert is_cron(good), good
    for bad in ["0 2 * *", "60 2 * * *", "0 24 * * *", "0 2 0 * *", "0 2 * * * *", "@daily",
                "0 5-2 * * *", "0 */0 * * *"]:
        assert not is_cron(bad), bad


def test_kuberay_networkpolicy_admits_the_nightly_submitter():
    # In K8sJobMode the RayJob's submitter pod calls the head's job API; the head's NetworkPolicy
    # must select it by the labels of submitterPodTemplate (the operator adds only its own).
    policy = kuberay_docs("raycluster.yaml")[1]
    selectors = [rule["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"][0]["from"]
                 if "podSelector" in rule]
    labels = kuberay_docs("rayjob.yaml")[0]["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert any(sel.items() <= labels.items() for sel in selectors)


def test_raycluster_has_a_cpu_head_and_gpu_worker_groups():
    cluster = next(yaml.safe_load_all((ROOT / "docs/kuberay/raycluster.yaml").read_text()))
    spec = cluster["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    gpus = sorted(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                      ["nvidia.com/gpu"]) for g in spec["workerGroupSpecs"])
    assert gpus == [1, 4]
    for g in spec["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["maxReplicas"]
    assert re.fullmatch(r"2\.\d+\.\d+", spec["rayVersion"])


# ---- a loopback cluster: two `ray start` nodes with advertised (fake) GPUs ----

LOOPBACK = {
    "name": "loopback",
    "data": {"dataset": "digits"},
    "model": {"family": "lenet5"},
    "train": {"batch_size": 64, "num_threads": 1},
    "search": {"lr": {"type": "choice", "values": [0.05, 0.02]}},
    "budget": {"max_epochs": 1, "num_samples": 1},
    "searcher": {"type": "grid", "seed": 0},
    "scheduler": {"type": "none"},
    # Half a GPU per worker: a fraction, and more GPU than this machine has (none). Each node
    # has one CPU, so the two concurrent trials must land on different nodes.
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.5,
                  "backend": "gloo", "max_concurrent_trials": 2},
}


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    """A two-node loopback cluster, one CPU and one advertised GPU per node."""
    with loopback_cluster(tmp_path_factory.mktemp("loopback")) as cluster:
        yield cluster


def _trial_actors(cluster: Loopback) -> list[dict]:
    """The cluster's Tune trial actors (each one trial's worker on the tune engine), alive or
    finished (from the State API)."""
    return ray_list("actors", cluster.dashboard, cluster.env, "--filter",
                     "class_name=ImplicitFunc")


def bundle_request(required: dict[str, float]) -> dict[str, float]:
    """What an actor in a placement group asked for: Ray names each resource once per group
    (CPU_group_<pg id>) and once per bundle (CPU_group_<index>_<pg id>); keep the former and
    drop Ray's own `bundle` marker."""
    out = {}
    for key, amount in required.items():
        m = re.fullmatch(r"([A-Za-z]+)_group_([0-9a-f]+)", key)
        if (m or "_group_" not in key) and key.split("_")[0] != "bundle":
            out[m[1] if m else key] = amount
    return out


def _check_sweep(summary_path: Path) -> dict:
    summary = json.loads(summary_path.read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"], summary
    assert all(t["best_val_acc"] > 0.1 for t in summary["trials"])  # trained, on CPU
    return summary


@pytest.mark.slow
def test_sweep_on_two_ray_start_nodes_with_fake_gpus(loopback, tmp_path):
    """`service.submit --address` on a cluster whose GPUs exist only in Ray's accounting: the
    trials ask for {CPU: 1, GPU: 0.5} per worker, get bundles on both nodes, and train on CPU
    because CUDA is absent."""
    import torch

    assert not torch.cuda.is_available()  # the fallback is what this test is about
    space = tmp_path / "loopback.yaml"
    space.write_text(yaml.safe_dump(LOOPBACK))
    earlier = {w["actor_id"] for w in _trial_actors(loopback)}
    proc = subprocess.run([sys.executable, "-m", "service.submit", str(space), "--address",
                           loopback.gcs, "--results", str(tmp_path / "res"), "-q",
                           "--no-report"], cwd=ROOT, env=loopback.env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The summary's path is submit's last line, but Ray's own warnings (raylet worker start-up)
    # can reach stdout after it on a cluster; see service.schedule.summary_path.
    _check_sweep(summary_path(proc.stdout))
    workers = [w for w in _trial_actors(loopback) if w["actor_id"] not in earlier]
    assert len(workers) == 2
    asked = [bundle_request(w["required_resources"]) for w in workers]
    assert asked == [{"CPU": 1.0, "GPU": 0.5}] * 2, [w["required_resources"] for w in workers]
    assert {w["node_id"] for w in workers} == set(loopback.node_ids.values())


@pytest.mark.slow
def test_ray_job_submit_runs_a_sweep_with_token_auth(loopback, tmp_path):
    """`ray job submit --working-dir . -- python -m service.submit …` against the loopback
    cluster's job API; without the token the API refuses the same request."""
    space = tmp_path / "loopback.yaml"
    space.write_text(yaml.safe_dump({**LOOPBACK, "name": "loopback-job"}))
    req = urllib.request.Request(f"{loopback.dashboard}/api/jobs/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code in (401, 403)
    proc = subprocess.run([str(RAY), "job", "submit", "--address", loopback.dashboard,
                           "--working-dir", ".", "--", sys.executable, "-m", "service.submit",
                           str(space), "--address", "auto", "--results", str(tmp_path / "res"),
                           "-q", "--no-report"], cwd=ROOT, env=loopback.env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    summaries = list((tmp_path / "res" / "loopback-job").glob("*/summary.json"))
    assert len(summaries) == 1
    _check_sweep(summaries[0])
