"""Secrets stay out of what the runtime logs and stores, with the real terraform binary:
multi-line secrets from the environment, sensitive defaults that are not strings, and the
files terraform writes (state, plans, data dirs) readable by their owner only."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from alphaswarm_orch.terraform import TerraformConfig, TerraformRuntime
from alphaswarm_orch.terraform.redact import REDACTED
from tests.terraform.conftest import Log

pytestmark = pytest.mark.integration


def _pem() -> str:
    body = [base64.b64encode(os.urandom(48)).decode() for _ in range(4)]
    return "\n".join(["-----BEGIN PRIVATE KEY-----", *body, "-----END PRIVATE KEY-----"])


def test_multi_line_secrets_in_the_environment_are_redacted_line_by_line(
    tf_config: TerraformConfig, tf_env: dict[str, str], log: Log
) -> None:
    # TF_VAR_tls_key is no declared variable and its name says nothing: its PEM content does.
    pem = _pem()
    deploy_secret = "first-line-of-the-deploy-secret\nsecond-line-of-the-deploy-secret"
    env = {**tf_env, "TF_VAR_tls_key": pem, "DEPLOY_SECRET": deploy_secret}
    runtime = TerraformRuntime(tf_config, environ=env, on_line=log)
    saved = runtime.plan("secrets", {}, plan_id="p")
    runtime.apply("p")

    printed = [line for line in log if "terraform_data.prints (local-exec):" in line]
    secret_lines = pem.splitlines() + deploy_secret.splitlines()
    assert len([line for line in printed if line.endswith(REDACTED)]) >= len(secret_lines), (
        log.text()
    )
    stored = "\n".join(
        path.read_text(errors="replace")
        for path in saved.plan_file.parent.iterdir()
        if path.is_file() and path.name != "plan.tfplan"
    )
    for line in secret_lines:
        assert line not in log.text(), line
        assert line not in stored, line


def test_sensitive_defaults_of_any_type_never_reach_the_plan_json_or_the_output(
    runtime: TerraformRuntime, log: Log
) -> None:
    # api_keys is set by the request, so its default is in the configuration section only.
    saved = runtime.plan("secrets", {"api_keys": ["list-request-secret"]}, plan_id="p")
    stored = saved.json_file.read_text()
    output = json.dumps(saved.plan_json())  # what terraform_plan_job returns as its output
    secrets = ("map-default-secret", "list-default-secret", "list-request-secret", "4242424242")
    for secret in secrets:
        assert secret not in stored, secret
        assert secret not in output, secret
        assert secret not in log.text(), secret
    variables = saved.plan_json()["configuration"]["root_module"]["variables"]
    assert {name: spec["default"] for name, spec in variables.items()} == {
        "db_passwords": REDACTED,
        "api_keys": REDACTED,
        "pin": REDACTED,
    }

    result = runtime.apply("p")
    assert result.outputs == {"pin": "(sensitive)"}
    assert "4242424242" not in log.text()


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0


def test_state_plans_and_data_dirs_are_private(
    runtime: TerraformRuntime, tf_config: TerraformConfig, tf_root: Path
) -> None:
    runtime.plan("basic", {"name": "svc", "replicas": 2}, plan_id="p")
    runtime.apply("p")
    runtime.plan("basic", {"name": "svc", "replicas": 1}, plan_id="q")
    runtime.apply("q")  # a second apply also writes terraform.tfstate.backup

    state_files = sorted((tf_root / "basic").glob("terraform.tfstate*"))
    assert [p.name for p in state_files] == ["terraform.tfstate", "terraform.tfstate.backup"]
    written = [
        path
        for path in [*state_files, tf_config.plans_dir, *tf_config.plans_dir.rglob("*")]
        if not path.is_symlink()
    ]
    assert any(path.name == "plan.tfplan" for path in written)
    assert any("tfdata" in path.parts for path in written)
    modes = {str(path): oct(stat.S_IMODE(path.lstat().st_mode)) for path in written}
    assert all(_private(path) for path in written), modes
    assert _private(tf_config.plugin_cache_dir)
