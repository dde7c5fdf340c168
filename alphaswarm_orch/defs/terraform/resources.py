"""The TerraformRuntime's configuration as a Dagster resource (read at launch, not at load)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from alphaswarm_orch.settings import TERRAFORM_ROOT, TERRAFORM_WORKSPACES, Settings
from alphaswarm_orch.terraform import TerraformConfig, TerraformRuntime, parse_workspace_list


class TerraformResource(dg.ConfigurableResource):
    """Allow-listed workspaces under one root; saved plans on the shared storage dir."""

    root: str = Field(description="Directory holding one sub-directory per workspace.")
    workspaces: str = Field(
        description="Comma-separated allow-list of workspace names (directories under root)."
    )
    state_dir: str = Field(
        description="Saved plans and terraform data dirs; shared by every terraform worker."
    )
    binary: str = "terraform"
    timeout_seconds: float = Field(default=3600.0, gt=0, description="Per terraform command.")
    lock_timeout_seconds: int = Field(default=60, ge=0, description="terraform -lock-timeout.")
    grace_seconds: float = Field(default=30.0, gt=0, description="SIGINT to SIGKILL delay.")

    def config(self) -> TerraformConfig:
        return TerraformConfig(
            root=Path(self.root),
            workspaces=parse_workspace_list(self.workspaces),
            state_dir=Path(self.state_dir),
            binary=self.binary,
            timeout_seconds=self.timeout_seconds,
            lock_timeout_seconds=self.lock_timeout_seconds,
            grace_seconds=self.grace_seconds,
        )

    def runtime(self, on_line: Callable[[str], None]) -> TerraformRuntime:
        return TerraformRuntime(self.config(), on_line=on_line)


def terraform_resource(settings: Settings) -> TerraformResource:
    """The resource every terraform job and the request sensor use: root and allow-list from
    the environment of the process that runs them (the terraform worker).

    They stay `dg.EnvVar`s (Settings reads the same names): Dagster resolves them when a run
    is created and when its step starts, so a process that never runs terraform (the webserver)
    needs neither, and a run cannot be created without them."""
    return TerraformResource(
        root=dg.EnvVar(TERRAFORM_ROOT),
        workspaces=dg.EnvVar(TERRAFORM_WORKSPACES),
        state_dir=str(settings.storage_dir / "terraform"),
    )
