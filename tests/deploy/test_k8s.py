"""k8s/: the overlays render, validate against their schemas, and agree with the queue table."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from alphaswarm_orch.broker.keys import running_key
from alphaswarm_orch.broker.redis_queues import queue_keys
from alphaswarm_orch.cli.worker import worker_group
from alphaswarm_orch.control.drain import DRAIN_TIMEOUT_SECONDS
from alphaswarm_orch.queues import HEAVY_QUEUES, LIGHT_QUEUES
from alphaswarm_orch.settings import (
    BROKER_URL,
    LEDGER_URL,
    POSTGRES_URL,
    REDIS_URL,
    RESULT_BACKEND,
    TERRAFORM_ROOT,
    TERRAFORM_WORKSPACES,
)
from alphaswarm_orch.terraform import parse_workspace_list
from tests.deploy.conftest import DEFAULTED_VARIABLES, K8S, OVERLAYS, REPO, load_generator

K8S_VERSION = "1.32"
DATA = Path(__file__).parent / "data"
KEDA_KINDS = {"ScaledObject": "scaledobjects", "TriggerAuthentication": "triggerauthentications"}
SECRET_VARIABLES = {BROKER_URL, RESULT_BACKEND, POSTGRES_URL, LEDGER_URL, REDIS_URL}
"""URLs carry passwords: only ever by reference to the Secret."""

Docs = list[dict[str, Any]]


def of_kind(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def keda_validator(kind: str) -> jsonschema.Validator:
    crd = yaml.safe_load((DATA / f"keda.sh_{KEDA_KINDS[kind]}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def readme_variables() -> set[str]:
    """Variable names in the README's Configuration table (the environment contract)."""
    section = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ")[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


# -- the generated files ---------------------------------------------------------------------


def test_generated_manifests_are_up_to_date_with_the_queue_table() -> None:
    stale = load_generator().stale_files()
    assert stale == [], f"stale generated files {stale}: run `python k8s/generate.py`"


def test_the_staleness_check_notices_an_edited_or_extra_file(tmp_path: Path) -> None:
    generator = load_generator()
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    assert generator.stale_files(root) == []
    hft = root / "base/workers/hft.yaml"
    hft.write_text(hft.read_text().replace("- '1'", "- '4'"))
    (root / "base/workers/backtest.yaml").write_text("# a worker for a heavy queue\n")
    assert generator.stale_files(root) == [
        Path("base/workers/hft.yaml"),
        Path("base/workers/backtest.yaml"),
    ]


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_schema(
    rendered: dict[str, Docs], overlay: str
) -> None:
    core = [doc for doc in rendered[overlay] if doc["kind"] not in KEDA_KINDS]
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= {
        doc["kind"] for doc in core
    }
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_schema_rejects_a_misspelt_field(rendered: dict[str, Docs]) -> None:
    deployment = copy.deepcopy(of_kind(rendered["dev"], "Deployment")["worker-hft"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 600
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_validate_against_the_keda_crds(
    rendered: dict[str, Docs], overlay: str
) -> None:
    keda = [doc for doc in rendered[overlay] if doc["kind"] in KEDA_KINDS]
    assert {doc["kind"] for doc in keda} == set(KEDA_KINDS)
    for doc in keda:
        errors = [e.message for e in keda_validator(doc["kind"]).iter_errors(doc)]
        assert errors == [], f"{doc['kind']} {doc['metadata']['name']}: {errors}"


def test_keda_schema_rejects_a_bad_scaled_object(rendered: dict[str, Docs]) -> None:
    scaled = copy.deepcopy(of_kind(rendered["dev"], "ScaledObject")["worker-default"])
    scaled["spec"]["minReplicaCount"] = "zero"
    del scaled["spec"]["scaleTargetRef"]["name"]
    assert len(list(keda_validator("ScaledObject").iter_errors(scaled))) == 2


# -- the queue table -------------------------------------------------------------------------


def worker_objects(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: doc
        for name, doc in of_kind(docs, kind).items()
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_deployments_and_scaled_objects_equal_the_light_queue_table(
    rendered: dict[str, Docs], rendered_text: dict[str, str], overlay: str
) -> None:
    docs = rendered[overlay]
    expected = {f"worker-{name}" for name in LIGHT_QUEUES}
    deployments = worker_objects(docs, "Deployment")
    scaled = worker_objects(docs, "ScaledObject")
    assert set(deployments) == expected
    assert set(scaled) == expected
    for name, queue in LIGHT_QUEUES.items():
        (container,) = containers(deployments[f"worker-{name}"])
        assert container["command"] == ["alphaswarm-orch", "worker"]
        assert container["args"] == ["--queues", name, "--concurrency", str(queue.concurrency)]
    for heavy in HEAVY_QUEUES:
        assert not re.search(rf"\b{heavy}\b", rendered_text[overlay]), heavy


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_min_replicas_follow_the_table_and_the_prod_minimum(
    rendered: dict[str, Docs], overlay: str
) -> None:
    scaled = worker_objects(rendered[overlay], "ScaledObject")
    for name, queue in LIGHT_QUEUES.items():
        expected = queue.min_replicas
        if overlay == "prod":
            expected = max(expected, queue.prod_min_replicas)
        spec = scaled[f"worker-{name}"]["spec"]
        assert spec["minReplicaCount"] == expected, name
        assert spec["maxReplicaCount"] >= max(expected, 1)
        if spec["minReplicaCount"] == 0:
            assert queue.scale_to_zero, name
    assert scaled["worker-default"]["spec"]["minReplicaCount"] == (1 if overlay == "prod" else 0)


def test_triggers_watch_every_priority_list_of_their_queue(rendered: dict[str, Docs]) -> None:
    generator = load_generator()
    docs = rendered["prod"]
    auths = of_kind(docs, "TriggerAuthentication")
    for name in LIGHT_QUEUES:
        scaled = worker_objects(docs, "ScaledObject")[f"worker-{name}"]["spec"]
        assert scaled["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"worker-{name}",
        }
        triggers = scaled["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        lists = [t["metadata"]["listName"] for t in triggers]
        # Queued (every priority list) and running steps: a pool busy with sessions counts.
        assert lists == [*queue_keys(name, generator.priority_steps()), running_key(name)]
        assert lists[0] == name and f"{name}\x06\x163" in lists
        assert {t["authenticationRef"]["name"] for t in triggers} <= set(auths)
        # replicas = ceil(sum over the lists / concurrency), not the longest list.
        modifiers = scaled["advanced"]["scalingModifiers"]
        assert sorted(modifiers["formula"].split(" + ")) == sorted(t["name"] for t in triggers)
        assert modifiers["target"] == str(LIGHT_QUEUES[name].concurrency)
        assert modifiers["metricType"] == "AverageValue"
        assert scaled["maxReplicaCount"] == LIGHT_QUEUES[name].max_replicas
    for auth in auths.values():
        assert set(auth["spec"]) == {"secretTargetRef"}
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {
            "address",
            "password",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hft_is_pinned_guaranteed_and_single_threaded(
    rendered: dict[str, Docs], overlay: str
) -> None:
    deployments = worker_objects(rendered[overlay], "Deployment")
    hft = LIGHT_QUEUES["hft"]
    pod = deployments["worker-hft"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"alphaswarm.io/node-pool": hft.pinned_node_pool}
    assert {
        "key": "alphaswarm.io/node-pool",
        "operator": "Equal",
        "value": hft.pinned_node_pool,
        "effect": "NoSchedule",
    } in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["args"][-2:] == ["--concurrency", "1"]
    resources = container["resources"]
    assert resources["requests"] == resources["limits"], "Guaranteed QoS"
    assert re.fullmatch(r"[1-9][0-9]*", resources["limits"]["cpu"]), "whole CPUs"
    for name, deployment in deployments.items():
        if name != "worker-hft":
            assert "nodeSelector" not in deployment["spec"]["template"]["spec"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_owns_the_hpa_and_every_deployment_has_a_pdb(
    rendered: dict[str, Docs], overlay: str
) -> None:
    docs = rendered[overlay]
    scaled_targets = [
        s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject").values()
    ]
    hpas = of_kind(docs, "HorizontalPodAutoscaler").values()
    hpa_targets = [h["spec"]["scaleTargetRef"]["name"] for h in hpas]
    assert len(scaled_targets) == len(set(scaled_targets))
    assert not set(scaled_targets) & set(hpa_targets)
    pdbs = list(of_kind(docs, "PodDisruptionBudget").values())
    for name, deployment in of_kind(docs, "Deployment").items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            pdb
            for pdb in pdbs
            if pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert len(matching) == 1, name
        assert matching[0]["spec"]["maxUnavailable"] == 1
        assert matching[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        if name.startswith("worker-"):
            assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"


# -- pods ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_probed_and_sized(rendered: dict[str, Docs], overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert {"readinessProbe", "livenessProbe"} <= set(container), name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] in empty_dirs, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_drain_expose_metrics_and_probe_health(
    rendered: dict[str, Docs], overlay: str
) -> None:
    for name, deployment in worker_objects(rendered[overlay], "Deployment").items():
        template = deployment["spec"]["template"]
        pod = template["spec"]
        assert pod["terminationGracePeriodSeconds"] == 600, name
        (container,) = pod["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == [
            "alphaswarm-orch",
            "worker",
            "drain",
        ]
        assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert template["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9100",
            "prometheus.io/path": "/metrics",
        }
        storage = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/var/lib/alphaswarm" in storage, name


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_contract_with_secrets_only_by_reference(
    rendered: dict[str, Docs], overlay: str
) -> None:
    docs = rendered[overlay]
    assert "Secret" not in {doc["kind"] for doc in docs}, "no literal Secret in the repo"
    config_maps = of_kind(docs, "ConfigMap")
    (env_map,) = [cm for name, cm in config_maps.items() if name.startswith("alphaswarm-orch-env")]
    plain = set(env_map["data"])
    assert not plain & SECRET_VARIABLES
    assert not [v for v in env_map["data"].values() if "://" in v]
    assert plain | SECRET_VARIABLES == readme_variables() - (DEFAULTED_VARIABLES - SECRET_VARIABLES)
    for name, deployment in of_kind(docs, "Deployment").items():
        for container in containers(deployment):
            sources = container["envFrom"]
            assert {"configMapRef": {"name": env_map["metadata"]["name"]}} in sources, name
            assert {"secretRef": {"name": "alphaswarm-orch"}} in sources, name
            for entry in container.get("env", []):
                assert entry["name"] not in SECRET_VARIABLES or "value" not in entry, name


def test_dagster_config_maps_match_the_repo_and_the_code_server(rendered: dict[str, Docs]) -> None:
    docs = rendered["prod"]
    config_maps = of_kind(docs, "ConfigMap")

    def data(prefix: str, key: str) -> Any:
        (cm,) = [cm for name, cm in config_maps.items() if name.startswith(prefix)]
        return yaml.safe_load(cm["data"][key])

    instance = data("alphaswarm-dagster-instance", "dagster.yaml")
    assert instance == yaml.safe_load((REPO / "dagster.yaml").read_text())
    (location,) = data("alphaswarm-dagster-workspace", "workspace.yaml")["load_from"]
    grpc = location["grpc_server"]
    service = of_kind(docs, "Service")[grpc["host"]]
    assert [p["port"] for p in service["spec"]["ports"]] == [grpc["port"]]
    code_server = of_kind(docs, "Deployment")["alphaswarm-code-server"]
    assert service["spec"]["selector"].items() <= (
        code_server["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = containers(code_server)
    args = container["args"]
    assert args[:3] == ["dagster", "code-server", "start"]
    assert args[args.index("--module-name") + 1] == "alphaswarm_orch.definitions"
    assert args[args.index("--location-name") + 1] == grpc["location_name"]
    assert args[args.index("--port") + 1] == str(grpc["port"])
    for name in ("alphaswarm-webserver", "alphaswarm-daemon"):
        (container,) = containers(of_kind(docs, "Deployment")[name])
        assert "/opt/dagster/workspace/workspace.yaml" in container["args"], name


def test_the_prestop_command_exists_and_drains_within_the_grace_period(
    rendered: dict[str, Docs],
) -> None:
    deployment = worker_objects(rendered["prod"], "Deployment")["worker-default"]
    (container,) = containers(deployment)
    program, group, *argv = container["lifecycle"]["preStop"]["exec"]["command"]
    assert (program, group) == ("alphaswarm-orch", worker_group.name)
    result = CliRunner().invoke(worker_group, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert DRAIN_TIMEOUT_SECONDS < grace


# -- terraform -------------------------------------------------------------------------------

TERRAFORM_READERS = {"worker-terraform", "alphaswarm-code-server", "alphaswarm-daemon"}
"""The terraform worker, the code server (terraform_request_sensor) and the daemon (runs)."""
TERRAFORM_CREDENTIALS = {
    "secretRef": {"name": "alphaswarm-orch-terraform-credentials", "optional": True}
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_terraform_worker_runs_terraform_on_the_mounted_root_and_allow_list(
    rendered: dict[str, Docs], overlay: str
) -> None:
    docs = rendered[overlay]
    (config,) = [
        cm
        for name, cm in of_kind(docs, "ConfigMap").items()
        if name.startswith("alphaswarm-orch-terraform")
    ]
    root = config["data"][TERRAFORM_ROOT]
    assert parse_workspace_list(config["data"][TERRAFORM_WORKSPACES]), f"{overlay}: nothing allowed"
    deployments = of_kind(docs, "Deployment")
    for name, deployment in deployments.items():
        (container,) = containers(deployment)
        maps = {s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s}
        assert (config["metadata"]["name"] in maps) == (name in TERRAFORM_READERS), name
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        runs_terraform = "orch-worker-terraform" in container["image"]
        assert (root in mounted) == runs_terraform == (name == "worker-terraform"), name

    pod = deployments["worker-terraform"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image, tag = container["image"].rsplit(":", 1)
    assert image == "alphaswarm/orch-worker-terraform"
    (default,) = containers(deployments["worker-default"])
    assert tag == default["image"].rsplit(":", 1)[1], "released with the other workers"
    assert TERRAFORM_CREDENTIALS in container["envFrom"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[root]]
    claim = of_kind(docs, "PersistentVolumeClaim")[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "shared by every replica"
    # The image has the mount point, owned by the service user, and is a Dockerfile target.
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert f"--chown=10001:10001 {root} {root}" in dockerfile
    assert "FROM worker AS worker-terraform" in dockerfile
