"""Fixtures for the deployment checks: rendered Kustomize overlays and the tools' paths."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from alphaswarm_orch.settings import (
    INGESTION_CONFIG,
    LEDGER_URL,
    POSTGRES_POOL_SIZE,
    TERRAFORM_ROOT,
    TERRAFORM_WORKSPACES,
    VISIBILITY_TIMEOUT,
    WORKER_INCLUDE,
    WORKFLOWS_DIR,
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DOCKER = REPO / "docker"
OVERLAYS = ("dev", "prod")


def find_tool(name: str) -> str | None:
    """`name` from this interpreter's venv (where the `deploy` extra installs it), else PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def load_generator() -> ModuleType:
    """k8s/generate.py as a module (it is a script beside the manifests, not a package)."""
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kustomize(path: Path) -> str:
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found on PATH")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    """`kubectl kustomize k8s/overlays/<name>` output per overlay."""
    return {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The rendered objects per overlay."""
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in rendered_text.items()
    }


DEFAULTED_VARIABLES = {
    LEDGER_URL,
    INGESTION_CONFIG,
    POSTGRES_POOL_SIZE,
    VISIBILITY_TIMEOUT,
    WORKFLOWS_DIR,
    WORKER_INCLUDE,
    TERRAFORM_ROOT,
    TERRAFORM_WORKSPACES,
}
"""README Configuration variables a deployment leaves unset everywhere by default (their
defaults are right: the ledger shares the Postgres, the image's own connections file and
workflow specs, Celery's visibility timeout, every task module, one pooled instance
connection per process), or sets only on the services
that need them (the terraform root and allow-list)."""
