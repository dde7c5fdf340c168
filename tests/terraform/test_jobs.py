"""The terraform jobs on a real Celery worker consuming `terraform`, on a Postgres instance."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from alphaswarm_orch.tags import WORKLOAD_TAG
from alphaswarm_orch.terraform import TerraformConfig, TerraformRuntime
from tests.support.runs import (
    execute_job_argv,
    mirrored_run,
    step_outcomes,
    step_workers,
    wait_for,
)
from tests.terraform.conftest import ALLOWED

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def tf_job_env(orch_env: dict[str, str], tf_env: dict[str, str], tf_root: Path) -> dict[str, str]:
    """orch_env (shared with start_worker) plus the terraform root, allow-list and CLI config."""
    orch_env.update(
        {
            "ALPHASWARM_TERRAFORM_ROOT": str(tf_root),
            "ALPHASWARM_TERRAFORM_WORKSPACES": ",".join(ALLOWED),
            "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex}",
            "TF_CLI_CONFIG_FILE": tf_env["TF_CLI_CONFIG_FILE"],
        }
    )
    return orch_env


def _execute(env: dict[str, str], job: str, op: str, config: dict, tmp_path: Path) -> list[str]:
    path = tmp_path / f"{job}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"ops": {op: {"config": config}}}))
    return execute_job_argv(job, "-c", str(path))


def _run(instance: dg.DagsterInstance, job: str) -> dg.DagsterRun:
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name=job))
    return run


def _output_metadata(instance: dg.DagsterInstance, run_id: str) -> dict:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        data = record.dagster_event.event_specific_data
        return {k: v.value for k, v in data.metadata.items()}
    raise AssertionError(f"run {run_id} has no step output")


def test_plan_then_apply_run_on_a_terraform_worker(
    tf_job_env: dict[str, str],
    start_worker,
    instance: dg.DagsterInstance,
    tf_root: Path,
    tmp_path: Path,
) -> None:
    worker = start_worker("terraform", "w-terraform")
    env = tf_job_env

    plan = subprocess.run(
        _execute(
            env,
            "terraform_plan_job",
            "terraform_plan",
            {"workspace": "basic", "variables": {"name": "svc", "replicas": 2}},
            tmp_path,
        ),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    plan_run = _run(instance, "terraform_plan_job")
    assert plan_run.tags[WORKLOAD_TAG] == "terraform"
    assert step_workers(instance, plan_run.run_id) == {"terraform_plan": worker.node}
    planned = _output_metadata(instance, plan_run.run_id)
    assert (planned["add"], planned["change"], planned["destroy"]) == (3, 0, 0)
    assert planned["plan_id"] == plan_run.run_id
    assert not (tf_root / "basic" / "terraform.tfstate").exists()

    apply = subprocess.run(
        _execute(
            env, "terraform_apply_job", "terraform_apply", {"plan_id": plan_run.run_id}, tmp_path
        ),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert apply.returncode == 0, apply.stdout[-3000:] + apply.stderr[-3000:]
    apply_run = _run(instance, "terraform_apply_job")
    assert apply_run.status == dg.DagsterRunStatus.SUCCESS
    assert apply_run.tags[WORKLOAD_TAG] == "terraform"
    assert step_workers(instance, apply_run.run_id) == {"terraform_apply": worker.node}
    applied = _output_metadata(instance, apply_run.run_id)
    assert applied["outputs"] == {"names": ["svc-0", "svc-1"], "token": "(sensitive)"}
    state = json.loads((tf_root / "basic" / "terraform.tfstate").read_text())
    assert len(state["resources"]) == 2  # service (count 2) and credential
    assert applied["state_serial"] == state["serial"]
    messages = [r.user_message for r in instance.all_logs(apply_run.run_id)]
    assert any("Apply complete! Resources: 3 added" in m for m in messages)
    assert not any("default-token-value" in m for m in messages)
    for run in (plan_run, apply_run):
        ledger = mirrored_run(env, instance, run.run_id)
        assert (ledger["workload_kind"], ledger["status"]) == ("terraform", "success")


def test_run_termination_is_forwarded_to_terraform_on_the_worker(
    tf_job_env: dict[str, str],
    start_worker,
    instance: dg.DagsterInstance,
    tf_root: Path,
    tmp_path: Path,
) -> None:
    start_worker("terraform", "w-terraform-term")
    env = tf_job_env
    config = TerraformConfig(
        root=tf_root,
        workspaces=ALLOWED,
        state_dir=Path(env["ALPHASWARM_STORAGE_DIR"]) / "terraform",
        lock_timeout_seconds=0,
    )
    runtime = TerraformRuntime(config, environ=env)
    gate = tmp_path / "gate"
    runtime.plan("slow", {"gate": str(gate)}, plan_id="slow-plan")

    process = subprocess.Popen(
        _execute(env, "terraform_apply_job", "terraform_apply", {"plan_id": "slow-plan"}, tmp_path),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: Path(f"{gate}.started").exists(), 180, "terraform to reach the provisioner"
        )
        run = _run(instance, "terraform_apply_job")
        instance.run_launcher.terminate(run.run_id)  # marks it CANCELING, as the UI does
        assert process.wait(timeout=180) != 0
    finally:
        process.kill()
        process.wait()

    run = instance.get_run_by_id(run.run_id)
    assert run is not None and run.is_finished
    assert step_outcomes(instance, run.run_id) == {"terraform_apply": "FAILURE"}
    # Forwarded by whichever notices first: the executor interrupting the step, or the step
    # seeing its run CANCELING; either way terraform itself received SIGINT.
    messages = "\n".join(r.user_message for r in instance.all_logs(run.run_id))
    assert "sending SIGINT to terraform" in messages
    assert "Interrupt received." in messages
    assert not Path(f"{gate}.release").exists()
    state = json.loads((tf_root / "slow" / "terraform.tfstate").read_text())
    assert {r["name"]: r["instances"][0].get("status") for r in state["resources"]} == {
        "first": None,
        "slow": "tainted",
    }
    # Unlocked: planning again takes the lock at once.
    assert runtime.plan("slow", {"gate": str(gate)}, plan_id="after").summary.add == 1
