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

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config
from raycluster import (
    COMPOSE_BINARY,
    COMPOSE_FILE,
    REPO,
    compose_services,
    container_argv,
)

import distnet

CLUSTER = REPO / "cluster"
KUBERNETES_VERSION = "1.37"
RAYJOB_SCHEMA = Path(__file__).parent / "data" / "kuberay-v1.7.0-rayjob.schema.json"
# The one image all three clusters run: cluster/Dockerfile built FROM Ray's own image.
IMAGE = f"distnet:{distnet.__version__}"
BASE_IMAGE = f"rayproject/ray:{ray.__version__}-py311-cpu"


def compose(
    *args: str, token: str | None = "t0ken", file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.run(
        [COMPOSE_BINARY, "-f", file, *args], env=env, capture_output=True, text=True, check=False
    )


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
    published = {
        (p["host_ip"], int(p["published"]), p["target"])
        for s in services.values()
        for p in s.get("ports", [])
    }
    assert published == {
        ("127.0.0.1", 8265, 8265),
        ("127.0.0.1", 10001, 10001),
        ("127.0.0.1", 6006, 6006),
    }
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
    return subprocess.run(
        ["sh", "-c", "echo " + argv[2][len("exec ") :]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# --- cluster/Dockerfile (parsed by BuildKit's own parser; nothing is built here) ---------

INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def dockerfile_commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(CLUSTER / "Dockerfile")))


def test_dockerfile_builds_on_rays_own_image_of_the_pinned_ray():
    commands = dockerfile_commands()
    assert {c.cmd for c in commands} <= INSTRUCTIONS
    assert [c.value for c in commands if c.cmd == "FROM"] == [(BASE_IMAGE,)]
    # The package allows Ray patch releases, the image installs exactly its base's Ray.
    requirements = [Requirement(dep) for dep in project()["dependencies"]]
    assert next(r for r in requirements if r.name == "ray").specifier.contains(ray.__version__)
    install = next(c.value[0] for c in commands if c.cmd == "RUN" and "pip install ." in c.value[0])
    assert f'"ray[default]=={ray.__version__}"' in install
    assert f"ray.__version__ == '{ray.__version__}'" in install
    assert [c.value for c in commands if c.cmd == "USER"][-1] == ("ray",)  # not root


def test_dockerfile_copies_what_the_build_needs_and_the_dockerignore_lets_it_through():
    copied = [path for c in dockerfile_commands() if c.cmd == "COPY" for path in c.value[:-1]]
    allowed = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    for path in copied:
        assert (REPO / path).exists(), path
        assert f"!{path}" in allowed or f"!{path}/" in allowed, path
    for needed in [project()["readme"], *project().get("license-files", []), "distnet"]:
        assert needed in copied, f"pip install . needs {needed}"


def test_one_image_tag_for_compose_kuberay_and_ray_up():
    assert compose_services()["ray-head"]["image"] == IMAGE
    assert {s["image"] for s in compose_services().values()} == {IMAGE}
    kuberay = {
        c["image"] for t in pod_templates(kuberay_documents()[1]) for c in t["spec"]["containers"]
    }
    assert kuberay == {IMAGE}
    assert launcher_config()["docker"]["image"].endswith("/" + IMAGE)  # from your registry
    # Each file's build instructions tag what the file runs.
    for name in ("Dockerfile", "aws.yaml", "kuberay-rayjob.yaml"):
        assert f"docker build -f cluster/Dockerfile -t {IMAGE} ." in (CLUSTER / name).read_text()


def test_kuberay_names_its_image_in_one_place():
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text()
    images = re.findall(r"^\s*image: (.*)$", text, re.MULTILINE)
    assert len(images) == 3 and images[0].startswith(f"&image {IMAGE}")
    assert images[1:] == ["*image", "*image"]


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


def test_launcher_uses_token_auth():
    config = launcher_config()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert command == "ray stop" or "RAY_AUTH_MODE=token ray start" in command
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]


def test_every_launcher_node_has_an_instance_profile_for_the_s3_data():
    # Ray's launcher gives the head a default profile and the workers none at all; the
    # workers read their own shards of s3:// data and pull the image.
    for name, node_type in launcher_config()["available_node_types"].items():
        profile = node_type["node_config"]["IamInstanceProfile"]
        assert re.fullmatch(
            r"arn:aws:iam::\w+:instance-profile/distnet-(head|worker)", profile["Arn"]
        ), name
    registry = launcher_config()["docker"]["image"].partition("/")[0]
    assert any(
        registry in command and "docker login" in command
        for command in launcher_config()["initialization_commands"]
    )


# --- cluster/kuberay-rayjob.yaml ----------------------------------------------------------


def kuberay_documents() -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))


def rayjob_validator() -> jsonschema.Validator:
    """KubeRay's RayJob schema, closed the way `kubectl apply` (strict field validation)
    treats a CRD: a field the schema does not list is an error, not silently dropped."""

    def close(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
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
    return [
        cluster["headGroupSpec"]["template"],
        *(group["template"] for group in cluster["workerGroupSpecs"]),
    ]


def test_kuberay_manifest_is_well_formed_kubernetes():
    documents = kuberay_documents()
    assert [d["kind"] for d in documents] == ["PersistentVolumeClaim", "RayJob"]
    kubernetes_validate.validate(documents[0], KUBERNETES_VERSION, strict=True)
    for template in pod_templates(documents[1]):
        kubernetes_validate.validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "ray-pod"},
                "template": template,
            },
            KUBERNETES_VERSION,
            strict=True,
        )


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


def test_kuberay_volume_claim_names_an_rwx_storage_class():
    pvc = kuberay_documents()[0]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]
    # Explicit: the clusters' default classes (block disks) never bind ReadWriteMany, and
    # the placeholder is no valid class name, so the API server refuses it until it is set.
    cls = pvc["storageClassName"]
    assert cls not in {"", "gp2", "gp3", "standard-rwo", "managed-csi", "default"}
    assert not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", cls)
    header = (CLUSTER / "kuberay-rayjob.yaml").read_text().partition("apiVersion")[0]
    assert "storageClassName" in header  # among the values to set before `kubectl apply`


def test_kuberay_gradient_workers_fit_on_the_worker_pods_not_the_head():
    rayjob = kuberay_documents()[1]
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    job = tomllib.loads(
        (REPO / "jobs" / rayjob["spec"]["entrypoint"].split()[2].rpartition("/")[2]).read_text()
    )["train"]
    worker_cpus = sum(
        group["replicas"] * float(group["rayStartParams"]["num-cpus"])
        for group in cluster["workerGroupSpecs"]
    )
    assert worker_cpus >= job["workers"] * job.get("worker_cpus", 1)
    for group in cluster["workerGroupSpecs"]:
        limit = group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        assert float(group["rayStartParams"]["num-cpus"]) <= float(limit)
