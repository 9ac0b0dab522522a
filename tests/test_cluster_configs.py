"""Every file in cluster/ is checked: the launcher configs by Ray's own prepare_config and
validate_config, the KubeRay manifest against the fields KubeRay requires, the set-up script by bash,
and none of them opens the dashboard to the world."""

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
LAUNCHER_CONFIGS = ["aws-gpu.yaml", "local.yaml"]


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def test_every_cluster_file_is_checked_here_and_commented():
    checked = set(LAUNCHER_CONFIGS) | {"kuberay.yaml", "setup-node.sh", "README.md"}
    assert {p.name for p in CLUSTER.iterdir()} == checked
    for name in checked - {"README.md"}:
        assert (CLUSTER / name).read_text().lstrip().startswith("#"), f"{name} opens without a comment"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_validation(name):
    config = load(name)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)  # Ray's JSON schema and its cross-field checks; raises on any problem
    for node_type in prepared.get("available_node_types", {}).values():
        assert all(isinstance(v, int) for v in node_type.get("resources", {}).values())
    # our start commands replaced the provider's defaults (AWS binds the dashboard to 0.0.0.0)
    head = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(prepared)
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in " ".join(prepared["worker_start_ray_commands"])
    assert prepared["file_mounts"]["~/ticketsearch"] == "."  # every node runs the driver's checkout
    assert any("setup-node.sh" in c for c in prepared["setup_commands"])


def test_aws_config_has_a_cpu_head_and_an_autoscaling_gpu_group():
    prepared = prepare_config(load("aws-gpu.yaml"))
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["resources"] == {"CPU": 0}
    (worker,) = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert worker["resources"]["GPU"] >= 1 and worker["min_workers"] < worker["max_workers"]


def test_a_broken_launcher_config_is_caught_by_the_same_validation():
    config = load("aws-gpu.yaml")
    config["available_node_types"]["gpu-worker"]["resources"]["GPU"] = 0.5  # Ray wants integers
    with pytest.raises(Exception, match="0.5"):
        validate_config(prepare_config(config))


def test_kuberay_manifest_has_the_fields_kuberay_requires():
    manifest = load("kuberay.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay's map[string]string
    assert head["rayStartParams"].get("dashboard-host") not in (None, "0.0.0.0")
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["name"] and head_container["image"]
    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        for field in ("groupName", "replicas", "minReplicas", "maxReplicas", "template", "rayStartParams"):
            assert field in group, f"workerGroupSpecs[{group.get('groupName')}] lacks {field}"
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            assert container["name"] and container["image"]
            if int(container["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group["groupName"])
    assert gpu_groups, "no worker group sets nvidia.com/gpu limits"
    # token authentication on every pod
    pods = [head["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env


def test_setup_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(CLUSTER / "setup-node.sh")], check=True)
