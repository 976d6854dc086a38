"""The cluster definitions are valid for the tools that read them (no engine needed):
docker-compose.yml for Docker Compose v2, cluster/aws.yaml for Ray's cluster launcher,
cluster/kuberay-rayjob.yaml for Kubernetes and KubeRay's RayJob schema."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from raycluster import (
    COMPOSE_BINARY,
    COMPOSE_FILE,
    REPO,
    compose_services,
    container_argv,
)

CLUSTER = REPO / "cluster"
KUBERNETES_VERSION = "1.37"
RAYJOB_SCHEMA = Path(__file__).parent / "data" / "kuberay-v1.7.0-rayjob.schema.json"


def compose(*args: str, token: str | None = "t0ken",
            file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.run([COMPOSE_BINARY, "-f", file, *args], env=env,
                          capture_output=True, text=True, check=False)


# --- docker-compose.yml -------------------------------------------------------------------

def test_compose_file_is_valid_for_docker_compose_v2():
    assert "v2." in compose("version").stdout
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_validation_catches_a_misspelt_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    healthcheck:", "    healthchek:", 1))
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0 and "healthchek" in result.stderr


def test_compose_refuses_to_start_without_a_token():
    result = compose("config", "--quiet", token=None)
    assert result.returncode != 0
    assert "RAY_AUTH_TOKEN" in result.stderr and "cluster/README.md" in result.stderr


def test_compose_cluster_has_token_auth_and_publishes_only_on_loopback():
    services = compose_services("s3cret")
    assert set(services) == {"ray-head", "ray-worker", "tensorboard"}
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "s3cret"
        assert "disabled" not in json.dumps(services[name]).lower()
    published = {(p["host_ip"], int(p["published"]), p["target"])
                 for s in services.values() for p in s.get("ports", [])}
    assert published == {("127.0.0.1", 8265, 8265), ("127.0.0.1", 10001, 10001),
                         ("127.0.0.1", 6006, 6006)}
    assert "ports" not in services["ray-worker"]  # so `--scale ray-worker=N` cannot clash


def test_compose_services_share_one_volume_and_have_healthchecks():
    services = compose_services()
    for name, service in services.items():
        mounts = [(v["source"], v["target"]) for v in service["volumes"]]
        assert mounts == [("shared", "/shared")], name
        assert service["healthcheck"]["test"][0] == "CMD-SHELL", name
    assert services["tensorboard"]["volumes"][0]["read_only"] is True
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_compose_commands_run_in_containers_with_their_defaults():
    # With none of the per-node variables set (as in a container) the shell fills in the
    # container defaults: the head's compose hostname, fixed ports, no --node-ip-address.
    services = compose_services()
    head = expand(container_argv(services["ray-head"]["command"]))
    worker = expand(container_argv(services["ray-worker"]["command"]))
    tensorboard = expand(container_argv(services["tensorboard"]["command"]))
    assert head.startswith("ray start --head --block") and "--port=6379" in head
    assert "--dashboard-port=8265" in head and "--dashboard-host=0.0.0.0" in head
    assert "--address=ray-head:6379" in worker
    assert "--node-ip-address" not in head + worker and "--temp-dir" not in head + worker
    assert tensorboard == "tensorboard --logdir=/shared/runs --host=0.0.0.0 --port=6006"


def expand(argv: list[str]) -> str:
    """What `sh -c` runs once its variables are expanded (echoed instead of executed)."""
    assert argv[:2] == ["sh", "-c"] and argv[2].startswith("exec ")
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(["sh", "-c", "echo " + argv[2][len("exec "):]], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


# --- cluster/Dockerfile -------------------------------------------------------------------

def test_dockerfile_pins_python_and_the_ray_of_pyproject():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[default]=={ray.__version__}" in deps
    assert f"ray.__version__ == '{ray.__version__}'" in dockerfile
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), path


# --- cluster/aws.yaml: Ray's own checks, as `ray up` runs them before touching the cloud ---

def launcher_config() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_launcher_yaml_passes_rays_validation():
    validate_config(prepare_config(launcher_config()))


def test_launcher_validation_catches_a_misspelt_key():
    config = launcher_config()
    config["max_wrokers"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        validate_config(prepare_config(config))


def test_launcher_uses_token_auth_and_the_pinned_ray():
    config = launcher_config()
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert command == "ray stop" or "RAY_AUTH_MODE=token ray start" in command
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]


# --- cluster/kuberay-rayjob.yaml ----------------------------------------------------------

def kuberay_documents() -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))


def rayjob_validator() -> jsonschema.Validator:
    """KubeRay's RayJob schema, closed the way `kubectl apply` (strict field validation)
    treats a CRD: a field the schema does not list is an error, not silently dropped."""

    def close(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)
        return node

    schema = close(json.loads(RAYJOB_SCHEMA.read_text()))
    return jsonschema.Draft7Validator(schema)


def pod_templates(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"],
            *(group["template"] for group in cluster["workerGroupSpecs"])]


def test_kuberay_manifest_is_well_formed_kubernetes():
    documents = kuberay_documents()
    assert [d["kind"] for d in documents] == ["PersistentVolumeClaim", "RayJob"]
    kubernetes_validate.validate(documents[0], KUBERNETES_VERSION, strict=True)
    for template in pod_templates(documents[1]):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "ray-pod"}, "template": template},
                                     KUBERNETES_VERSION, strict=True)


def test_kuberay_rayjob_matches_kuberays_schema():
    rayjob = kuberay_documents()[1]
    assert rayjob["apiVersion"] == "ray.io/v1"
    rayjob_validator().validate(rayjob)


def test_rayjob_schema_check_catches_a_misspelt_field():
    rayjob = copy.deepcopy(kuberay_documents()[1])
    rayjob["spec"]["shutdownAfterJobFinished"] = rayjob["spec"].pop("shutdownAfterJobFinishes")
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinished"):
        rayjob_validator().validate(rayjob)


def test_rayjob_trains_with_token_auth_on_the_shared_volume():
    pvc, rayjob = kuberay_documents()
    spec = rayjob["spec"]
    assert spec["entrypoint"].startswith("distnet train /opt/distnet/jobs/")
    assert (REPO / "jobs" / spec["entrypoint"].split()[2].rpartition("/")[2]).exists()
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"
    for template in pod_templates(rayjob):
        ray_container = template["spec"]["containers"][0]  # KubeRay configures the first
        assert ray_container["name"].startswith("ray-")
        assert {"name": "shared", "mountPath": "/shared"} in ray_container["volumeMounts"]
        claim = template["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == pvc["metadata"]["name"]
    sidecar = pod_templates(rayjob)[0]["spec"]["containers"][1]
    assert sidecar["command"][:2] == ["tensorboard", "--logdir=/shared/runs"]
