"""Terraform fixtures: the real binary, built-in-only workspaces copied under a temporary root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from alphaswarm_orch.terraform import TerraformConfig, TerraformRuntime

WORKSPACES = Path(__file__).parent / "workspaces"
ALLOWED = ("basic", "slow", "escape", "missing", "secrets")


@pytest.fixture
def terraform_bin() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("terraform not found on PATH")
    return found


@pytest.fixture
def tf_root(tmp_path: Path) -> Path:
    """A root with the fixture workspaces, plus `escape`: an allow-listed symlink that leaves
    the root, and `missing`: allow-listed but absent."""
    root = tmp_path / "root"
    shutil.copytree(WORKSPACES, root)
    outside = tmp_path / "outside"
    shutil.copytree(WORKSPACES / "basic", outside)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture
def tf_config(tf_root: Path, tmp_path: Path) -> TerraformConfig:
    return TerraformConfig(
        root=tf_root,
        workspaces=ALLOWED,
        state_dir=tmp_path / "tfstate",
        lock_timeout_seconds=0,
        grace_seconds=20,
        poll_seconds=0.2,
    )


@pytest.fixture
def tf_env(terraform_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment terraform runs with: no CLI config, nothing to download."""
    rc = tmp_path / "terraformrc"
    rc.write_text("")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(rc))
    return dict(os.environ)


class Log(list):
    """Collects the runtime's (redacted) output lines."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def runtime(
    tf_config: TerraformConfig, tf_env: dict[str, str], log: Log
) -> Iterator[TerraformRuntime]:
    yield TerraformRuntime(tf_config, environ=tf_env, on_line=log)
