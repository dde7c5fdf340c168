"""The runtime's configuration: which workspaces exist, where plans live, how long to wait."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_orch.terraform.errors import WorkspaceRefused

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""A workspace is named by one directory under the root; nothing else is a name."""

SHELL_METACHARACTERS = frozenset(";&|$`\\\"'<>(){}[]*?!~#%=\n\r\t ")


@dataclass(frozen=True)
class TerraformConfig:
    """Allow-listed workspaces under one root, the plan store and the time limits."""

    root: Path
    """Directory holding one sub-directory per workspace."""
    workspaces: tuple[str, ...]
    """The allow-list: names of directories directly under `root`."""
    state_dir: Path
    """Saved plans and per-plan terraform data dirs; shared by every terraform worker."""
    binary: str = "terraform"
    timeout_seconds: float = 3600.0
    """Longest any single terraform command may run before it is interrupted."""
    lock_timeout_seconds: int = 60
    """Passed as `-lock-timeout`: how long to wait for another operation's state lock."""
    grace_seconds: float = 30.0
    """After SIGINT, how long terraform may take to stop cleanly before SIGKILL."""
    poll_seconds: float = 1.0
    """How often a running command checks for cancellation."""

    def __post_init__(self) -> None:
        for name in self.workspaces:
            check_name(name, what="allow-listed workspace")
        for field in ("timeout_seconds", "grace_seconds", "poll_seconds"):
            if getattr(self, field) <= 0:
                raise ValueError(f"terraform {field} must be positive, got {getattr(self, field)}")
        if self.lock_timeout_seconds < 0:
            raise ValueError(
                f"terraform lock_timeout_seconds must be >= 0, got {self.lock_timeout_seconds}"
            )

    @property
    def plans_dir(self) -> Path:
        return self.state_dir / "plans"

    @property
    def plugin_cache_dir(self) -> Path:
        return self.state_dir / "plugin-cache"


def parse_workspace_list(value: str) -> tuple[str, ...]:
    """`network, data` -> ('network', 'data'), each checked as a workspace name."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for name in names:
        check_name(name, what="allow-listed workspace")
    return names


def check_allowed(name: object, workspaces: tuple[str, ...]) -> str:
    """Return `name` if it is a plain name on the allow-list; refuse it naming what is allowed."""
    name = check_name(name)
    if name not in workspaces:
        allowed = ", ".join(workspaces) or "(none configured)"
        raise WorkspaceRefused(
            f"workspace {name!r} is not allow-listed: allowed workspaces are {allowed}. "
            "Add it to ALPHASWARM_TERRAFORM_WORKSPACES to manage it here."
        )
    return name


def check_name(name: object, *, what: str = "workspace") -> str:
    """Return `name` if it is a plain workspace name; refuse paths and shell syntax by name."""
    if not isinstance(name, str) or not name:
        raise WorkspaceRefused(f"{what} must be a non-empty name, got {name!r}")
    bad = sorted({c for c in name if c in SHELL_METACHARACTERS})
    if bad:
        raise WorkspaceRefused(
            f"{what} {name!r} contains shell metacharacters {''.join(bad)!r}: name a workspace "
            "by its allow-listed name (letters, digits, '-', '_')"
        )
    if ".." in name.split("/") or name.startswith(("/", "~")) or "/" in name:
        raise WorkspaceRefused(
            f"{what} {name!r} is a path: name a workspace by its allow-listed name, "
            "not a path (no '/', no '..')"
        )
    if not NAME_PATTERN.match(name):
        raise WorkspaceRefused(
            f"{what} {name!r} is not a valid name: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name
