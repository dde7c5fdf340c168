"""TerraformRuntime: plan / apply / destroy of allow-listed workspaces with the terraform CLI.

Used by the jobs in `alphaswarm_orch.defs.terraform`; nothing here imports Dagster, so the
runtime can be driven (and tested) on its own.
"""

from alphaswarm_orch.terraform.config import TerraformConfig, parse_workspace_list
from alphaswarm_orch.terraform.errors import (
    PlanNotFound,
    StalePlan,
    StateLocked,
    TerraformCancelled,
    TerraformError,
    TerraformFailed,
    TerraformNotFound,
    TerraformTimeout,
    VariableError,
    WorkspaceRefused,
)
from alphaswarm_orch.terraform.runtime import ApplyResult, PlanSummary, SavedPlan, TerraformRuntime

__all__ = [
    "ApplyResult",
    "PlanNotFound",
    "PlanSummary",
    "SavedPlan",
    "StalePlan",
    "StateLocked",
    "TerraformCancelled",
    "TerraformConfig",
    "TerraformError",
    "TerraformFailed",
    "TerraformNotFound",
    "TerraformRuntime",
    "TerraformTimeout",
    "VariableError",
    "WorkspaceRefused",
    "parse_workspace_list",
]
