"""Only allow-listed workspaces inside the root are ever handed to terraform."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaswarm_orch.terraform import (
    TerraformConfig,
    WorkspaceRefused,
    parse_workspace_list,
)
from alphaswarm_orch.terraform.workspace import declared_variables, resolve_workspace


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("..", "is a path"),
        ("../outside", "is a path"),
        ("basic/../slow", "is a path"),
        ("/etc", "is a path"),
        ("basic;rm -rf ~", "shell metacharacters"),
        ("basic$(id)", "shell metacharacters"),
        ("`id`", "shell metacharacters"),
        ("basic && true", "shell metacharacters"),
        ("a|b", "shell metacharacters"),
        ("", "non-empty name"),
        (None, "non-empty name"),
        (".hidden", "not a valid name"),
        ("other", "'other' is not allow-listed: allowed workspaces are basic, slow, escape"),
        ("escape", "outside the terraform root"),
        ("missing", "is not a directory"),
    ],
)
def test_unsafe_or_unknown_workspaces_are_refused(
    tf_config: TerraformConfig, name: object, message: str
) -> None:
    with pytest.raises(WorkspaceRefused, match=message.replace("(", r"\(").replace("$", r"\$")):
        resolve_workspace(tf_config, name)


def test_allow_listed_workspace_resolves_inside_the_root(
    tf_config: TerraformConfig, tf_root: Path
) -> None:
    ws = resolve_workspace(tf_config, "basic")
    assert ws.path == (tf_root / "basic").resolve()


def test_symlink_inside_the_root_is_followed(tf_root: Path, tmp_path: Path) -> None:
    (tf_root / "alias").symlink_to(tf_root / "basic", target_is_directory=True)
    config = TerraformConfig(root=tf_root, workspaces=("alias",), state_dir=tmp_path / "s")
    assert resolve_workspace(config, "alias").path == (tf_root / "basic").resolve()


def test_allow_list_itself_is_validated() -> None:
    assert parse_workspace_list(" network, data ,network,") == ("network", "data")
    with pytest.raises(WorkspaceRefused, match=r"allow-listed workspace '\.\.' is a path"):
        parse_workspace_list("network,..")
    with pytest.raises(WorkspaceRefused, match="shell metacharacters"):
        TerraformConfig(root=Path("/tmp"), workspaces=("a;b",), state_dir=Path("/tmp/s"))


def test_declared_variables_are_parsed_from_hcl(tf_config: TerraformConfig) -> None:
    declared = declared_variables(resolve_workspace(tf_config, "basic"))
    assert {n: (v.type, v.required, v.sensitive) for n, v in declared.items()} == {
        "name": ("string", True, False),
        "replicas": ("number", False, False),
        "api_token": ("string", False, True),
    }
    assert declared["api_token"].default == "default-token-value"
