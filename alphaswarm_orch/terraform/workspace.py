"""Resolve an allow-listed workspace safely and check request variables against its declarations."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

from alphaswarm_orch.terraform.config import TerraformConfig, check_allowed
from alphaswarm_orch.terraform.errors import TerraformError, VariableError, WorkspaceRefused

CONFIG_SUFFIXES = (".tf", ".tf.json", ".tfvars", ".tfvars.json", ".hcl")
"""Files whose content is the workspace's configuration (hashed to detect a stale plan)."""


@dataclass(frozen=True)
class Variable:
    """A `variable` block of the workspace's root module."""

    name: str
    type: str | None
    required: bool
    sensitive: bool
    default: Any = None


@dataclass(frozen=True)
class Workspace:
    name: str
    path: Path
    """The real (symlink-resolved) directory, inside the configured root."""


def resolve_workspace(config: TerraformConfig, name: Any) -> Workspace:
    """The allow-listed workspace `name`, refusing paths, metacharacters and root escapes."""
    name = check_allowed(name, config.workspaces)
    root = config.root.resolve()
    candidate = config.root / name
    real = candidate.resolve()
    if real == root or not real.is_relative_to(root):
        raise WorkspaceRefused(
            f"workspace {name!r} resolves to {real}, outside the terraform root {root} "
            "(a symlink escapes the root): refused. Move the workspace under the root."
        )
    if not real.is_dir():
        raise WorkspaceRefused(
            f"workspace {name!r} is allow-listed but {candidate} is not a directory: create it "
            "or remove it from ALPHASWARM_TERRAFORM_WORKSPACES"
        )
    return Workspace(name, real)


def declared_variables(workspace: Workspace) -> dict[str, Variable]:
    """The root module's `variable` blocks, parsed from its .tf / .tf.json files."""
    blocks: list[tuple[Path, str, Mapping[str, Any]]] = []
    for path in sorted(workspace.path.glob("*.tf")):
        try:
            with path.open(encoding="utf-8") as fh:
                parsed = hcl2.load(fh)
        except Exception as exc:  # the parser raises several unrelated types
            raise TerraformError(f"cannot parse {path}: {exc}") from exc
        for entry in parsed.get("variable", []):
            for raw_name, body in entry.items():
                blocks.append((path, _unquote(raw_name), body))
    for path in sorted(workspace.path.glob("*.tf.json")):
        try:
            parsed = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TerraformError(f"cannot parse {path}: {exc}") from exc
        for raw_name, body in (parsed.get("variable") or {}).items():
            blocks.append((path, raw_name, body))
    variables: dict[str, Variable] = {}
    for path, name, body in blocks:
        if name in variables:
            raise TerraformError(f"variable {name!r} is declared twice (again in {path})")
        type_ = body.get("type")
        variables[name] = Variable(
            name=name,
            type=_unquote(type_) if isinstance(type_, str) else None,
            required="default" not in body,
            sensitive=bool(body.get("sensitive", False)),
            default=_literal(body.get("default")),
        )
    return variables


def preset_variables(workspace: Workspace, environ: Mapping[str, str]) -> set[str]:
    """Variables terraform gets without the request: `TF_VAR_<name>` in the environment and
    the workspace's `terraform.tfvars` / `*.auto.tfvars` (and their .json forms)."""
    names = {key[len("TF_VAR_") :] for key in environ if key.startswith("TF_VAR_")}
    candidates = [workspace.path / "terraform.tfvars", workspace.path / "terraform.tfvars.json"]
    candidates += sorted(workspace.path.glob("*.auto.tfvars"))
    candidates += sorted(workspace.path.glob("*.auto.tfvars.json"))
    for path in candidates:
        if not path.is_file():
            continue
        try:
            if path.name.endswith(".json"):
                values = json.loads(path.read_text(encoding="utf-8"))
            else:
                with path.open(encoding="utf-8") as fh:
                    values = hcl2.load(fh)
        except Exception as exc:  # the parser raises several unrelated types
            raise TerraformError(f"cannot parse {path}: {exc}") from exc
        names.update(key for key in values if not key.startswith("__"))
    return names


def check_variables(
    workspace: Workspace,
    declared: Mapping[str, Variable],
    given: Mapping[str, Any],
    preset: Collection[str] = (),
) -> None:
    """Refuse undeclared names, missing required variables and values of the wrong kind.

    `preset` names variables terraform gets elsewhere (see `preset_variables`)."""
    names = ", ".join(sorted(declared)) or "(none)"
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise VariableError(
            f"workspace {workspace.name!r} declares no variable {', '.join(map(repr, unknown))}: "
            f"declared variables are {names}"
        )
    missing = sorted(
        v.name for v in declared.values() if v.required and v.name not in {*given, *preset}
    )
    if missing:
        raise VariableError(
            f"workspace {workspace.name!r} requires variable {', '.join(map(repr, missing))} "
            "(declared without a default, not set by a tfvars file or TF_VAR_): add it to the "
            "request's variables"
        )
    for name, value in given.items():
        problem = _kind_problem(declared[name].type, value)
        if problem:
            shown = "(sensitive)" if declared[name].sensitive else repr(value)
            raise VariableError(
                f"variable {name!r} of workspace {workspace.name!r} is declared "
                f"{declared[name].type} but got {shown}: {problem}"
            )


def config_digest(workspace: Workspace) -> str:
    """A hash of the workspace's configuration files, to refuse a plan whose files changed."""
    digest = hashlib.sha256()
    for path in sorted(workspace.path.rglob("*")):
        relative = path.relative_to(workspace.path)
        if ".terraform" in relative.parts or not path.is_file():
            continue
        if not path.name.endswith(CONFIG_SUFFIXES):
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _kind_problem(declared_type: str | None, value: Any) -> str | None:
    """Check the primitive types here; terraform checks the structure of complex ones."""
    if declared_type == "string" and (
        isinstance(value, bool) or not isinstance(value, str | int | float)
    ):
        return "expected a string"
    if declared_type == "number" and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        return "expected a finite number"
    if declared_type == "bool" and not isinstance(value, bool):
        return "expected true or false"
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"not representable as JSON ({exc})"
    return None


def _literal(value: Any) -> Any:
    """A parsed HCL default as terraform sees it: string leaves unquoted, at any depth (a
    sensitive map's leaves must be known to be redacted)."""
    if isinstance(value, str):
        return _unquote(value)
    if isinstance(value, Mapping):
        return {key: _literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_literal(item) for item in value]
    return value


def _unquote(text: str) -> str:
    """python-hcl2 keeps string literals' quotes (`"name"`); terraform's value has none."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text
