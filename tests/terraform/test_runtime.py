"""TerraformRuntime with the real terraform binary on built-in-only workspaces."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from alphaswarm_orch.terraform import (
    PlanNotFound,
    StalePlan,
    TerraformConfig,
    TerraformRuntime,
    VariableError,
    WorkspaceRefused,
)
from alphaswarm_orch.terraform.redact import REDACTED
from tests.terraform.conftest import Log

pytestmark = pytest.mark.integration

SECRET = "s3cret-token-value-123"


def _state(root: Path, workspace: str) -> dict:
    return json.loads((root / workspace / "terraform.tfstate").read_text())


def _addresses(state: dict) -> set[str]:
    found = set()
    for res in state["resources"]:
        for inst in res["instances"]:
            index = inst.get("index_key")
            suffix = f"[{index}]" if index is not None else ""
            found.add(f"{res['type']}.{res['name']}{suffix}")
    return found


def test_plan_apply_changes_state_then_destroy(
    runtime: TerraformRuntime, tf_root: Path, log: Log
) -> None:
    assert not (tf_root / "basic" / "terraform.tfstate").exists()

    saved = runtime.plan(
        "basic", {"name": "svc", "replicas": 2, "api_token": SECRET}, plan_id="plan-1"
    )
    assert (saved.summary.add, saved.summary.change, saved.summary.destroy) == (3, 0, 0)
    assert saved.plan_file.is_file()
    plan = saved.plan_json()
    assert plan["variables"]["name"]["value"] == "svc"
    assert {c["address"] for c in plan["resource_changes"]} == {
        "terraform_data.service[0]",
        "terraform_data.service[1]",
        "terraform_data.credential",
    }
    # Planning changes nothing.
    assert not (tf_root / "basic" / "terraform.tfstate").exists()

    result = runtime.apply("plan-1", applied_by="run-a")
    assert result.outputs == {"names": ["svc-0", "svc-1"], "token": "(sensitive)"}
    state = _state(tf_root, "basic")
    assert _addresses(state) == {
        "terraform_data.service[0]",
        "terraform_data.service[1]",
        "terraform_data.credential",
    }
    assert result.state_serial == state["serial"]
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in log.text()

    destroyed = runtime.destroy("basic", {"name": "svc", "replicas": 2}, plan_id="destroy-1")
    assert (destroyed.summary.add, destroyed.summary.destroy) == (0, 3)
    assert _state(tf_root, "basic")["resources"] == []


def test_sensitive_values_never_leave_the_runtime(
    tf_config: TerraformConfig, tf_env: dict[str, str], log: Log, terraform_bin: str
) -> None:
    env = tf_env
    runtime = TerraformRuntime(tf_config, environ=env, on_line=log)
    saved = runtime.plan("basic", {"name": "svc", "api_token": SECRET}, plan_id="p")
    runtime.apply("p")

    stored = saved.json_file.read_text()
    assert SECRET not in stored
    plan = json.loads(stored)
    assert plan["variables"]["api_token"]["value"] == REDACTED
    assert plan["planned_values"]["outputs"]["token"]["value"] == REDACTED
    # The raw plan does hold it: that is what the redaction is for.
    raw = subprocess.run(
        [terraform_bin, "show", "-json", str(saved.plan_file)],
        cwd=saved.plan_file.parents[3] / "root" / "basic",
        env={**env, "TF_DATA_DIR": str(saved.plan_file.parent / "tfdata")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert SECRET in raw.stdout
    assert SECRET not in log.text()
    for path in saved.plan_file.parent.iterdir():
        if path.is_file() and path.name != "plan.tfplan":
            assert SECRET not in path.read_text(errors="replace"), path


def test_sensitive_variable_from_tf_var_is_redacted(
    tf_config: TerraformConfig, tf_env: dict[str, str], tf_root: Path, log: Log
) -> None:
    (tf_root / "basic" / "echo.tf").write_text(
        'resource "terraform_data" "echo" {\n'
        '  provisioner "local-exec" {\n'
        '    command = "echo api token is $TF_VAR_api_token"\n'
        "  }\n"
        "}\n"
    )
    env = {**tf_env, "TF_VAR_api_token": "tf-var-secret-value"}
    runtime = TerraformRuntime(tf_config, environ=env, on_line=log)
    saved = runtime.plan("basic", {"name": "svc"}, plan_id="p")
    runtime.apply("p")
    assert f"api token is {REDACTED}" in log.text()
    assert "tf-var-secret-value" not in log.text() + saved.json_file.read_text()


def test_env_credentials_are_redacted_from_provisioner_output(
    tf_config: TerraformConfig, tf_env: dict[str, str], log: Log, tf_root: Path
) -> None:
    (tf_root / "basic" / "echo.tf").write_text(
        'resource "terraform_data" "echo" {\n'
        '  provisioner "local-exec" {\n'
        '    command = "echo token is $GITHUB_TOKEN"\n'
        "  }\n"
        "}\n"
    )
    env = {**tf_env, "GITHUB_TOKEN": "ghp_example_credential"}
    runtime = TerraformRuntime(tf_config, environ=env, on_line=log)
    runtime.plan("basic", {"name": "svc"}, plan_id="p")
    runtime.apply("p")
    assert f"token is {REDACTED}" in log.text()
    assert "ghp_example_credential" not in log.text()


def test_stale_plan_is_refused(runtime: TerraformRuntime, tf_root: Path) -> None:
    runtime.plan("basic", {"name": "a"}, plan_id="first")
    runtime.plan("basic", {"name": "b"}, plan_id="second")
    runtime.apply("first")
    serial = _state(tf_root, "basic")["serial"]

    with pytest.raises(StalePlan, match="state of workspace 'basic' changed"):
        runtime.apply("second")
    with pytest.raises(StalePlan, match="already applied"):
        runtime.apply("first")
    assert _state(tf_root, "basic")["serial"] == serial

    runtime.plan("basic", {"name": "c"}, plan_id="third")
    (tf_root / "basic" / "extra.tf").write_text('resource "terraform_data" "extra" {}\n')
    with pytest.raises(StalePlan, match="files of workspace 'basic' changed"):
        runtime.apply("third")
    assert _state(tf_root, "basic")["serial"] == serial


def test_unknown_or_foreign_plan_is_refused(runtime: TerraformRuntime, tf_root: Path) -> None:
    with pytest.raises(PlanNotFound, match="no saved plan with id 'nope'"):
        runtime.apply("nope")
    with pytest.raises(PlanNotFound, match="is not a plan id"):
        runtime.apply("../basic")
    runtime.plan("basic", {"name": "svc"}, plan_id="p")
    with pytest.raises(WorkspaceRefused, match="made for workspace 'basic', not 'slow'"):
        runtime.apply("p", workspace="slow")
    assert not (tf_root / "basic" / "terraform.tfstate").exists()
    runtime.apply("p", workspace="basic")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "requires variable 'name'"),
        ({"name": "x", "nmae": "y"}, "declares no variable 'nmae': declared variables are"),
        ({"name": "x", "replicas": "two"}, "'replicas' .* declared number but got 'two'"),
        ({"name": ["x"]}, "'name' .* declared string"),
        ({"name": "x", "api_token": 42.5e400}, r"declared string but got \(sensitive\)"),
    ],
)
def test_variables_are_checked_against_declarations(
    runtime: TerraformRuntime, variables: dict, message: str
) -> None:
    with pytest.raises(VariableError, match=message):
        runtime.plan("basic", variables, plan_id="p")
    assert not (runtime.config.plans_dir / "p").exists()


def test_required_variables_may_come_from_tf_var_or_tfvars(
    tf_config: TerraformConfig, tf_env: dict[str, str], tf_root: Path
) -> None:
    from_env = TerraformRuntime(tf_config, environ={**tf_env, "TF_VAR_name": "from-env"})
    plan = from_env.plan("basic", {}, plan_id="env").plan_json()
    assert plan["variables"]["name"]["value"] == "from-env"

    (tf_root / "basic" / "terraform.tfvars").write_text('name = "from-file"\n')
    runtime = TerraformRuntime(tf_config, environ=tf_env)
    plan = runtime.plan("basic", {}, plan_id="file").plan_json()
    assert plan["variables"]["name"]["value"] == "from-file"
