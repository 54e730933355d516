"""Running on a cluster: cluster.yaml against Ray's own schema, the KubeRay manifests, GPU
scheduling with advertised (fake) GPUs, and a loopback multi-node cluster of `ray start` nodes."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


# ---- cluster.yaml ----

def cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(config: dict) -> dict:
    """Ray's cluster-launcher checks, offline: defaults filled in, then its JSON schema
    (ray-notes #6/#15: private API, so the tests below pin that it still rejects bad input)."""
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
    ("cronjob.yaml", [("batch/v1", "CronJob")]),
])
def test_kuberay_manifests_parse(name, kinds):
    docs = [d for d in yaml.safe_load_all((ROOT / "docs" / "kuberay" / name).read_text()) if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == kinds
    text = (ROOT / "docs" / "kuberay" / name).read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "RAY_AUTH_MODE" in code or "authOptions" in code
    assert "LoadBalancer" not in code and "NodePort" not in code and "0.0.0.0" not in code


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
