"""What can go wrong running terraform, each with a message an operator can act on."""

from __future__ import annotations


class TerraformError(RuntimeError):
    """Base class: a terraform action that was refused or did not complete."""


class TerraformNotFound(TerraformError):
    """The terraform binary is not installed where the runtime looks."""


class WorkspaceRefused(TerraformError, ValueError):
    """A workspace name that is not allow-listed, or whose path is unsafe."""


class VariableError(TerraformError, ValueError):
    """Request variables that do not match the workspace's declared variables."""


class PlanNotFound(TerraformError, LookupError):
    """No saved plan with the requested id."""


class StalePlan(TerraformError):
    """A saved plan that may no longer be applied (state or files changed, or already applied)."""


class StateLocked(TerraformError):
    """Another operation holds the workspace's state lock past the lock timeout."""


class TerraformTimeout(TerraformError):
    """A terraform command ran past its timeout and was interrupted."""


class TerraformCancelled(TerraformError):
    """The run was terminated; terraform was interrupted and has exited."""


class TerraformFailed(TerraformError):
    """terraform exited non-zero; the message carries the (redacted) end of its output."""
