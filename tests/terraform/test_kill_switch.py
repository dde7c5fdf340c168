"""Apply and destroy refuse to run while the kill switch is set, and each refusal is recorded."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.settings import Settings
from tests.support.switches import write_switch
from tests.terraform.conftest import ALLOWED

pytestmark = pytest.mark.integration


def _failure(result: dg.ExecuteInProcessResult, op: str) -> str:
    data = result.failure_data_for_node(op)
    assert data is not None and data.error is not None
    return data.error.message


def test_apply_and_destroy_are_refused_while_the_kill_switch_is_set(
    tf_env: dict[str, str],
    tf_root: Path,
    tmp_path: Path,
    redis_urls: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ALPHASWARM_BROKER_URL", "ALPHASWARM_POSTGRES_URL", "ALPHASWARM_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "ALPHASWARM_STORAGE_DIR": str(tmp_path / "storage"),
        "ALPHASWARM_REDIS_URL": redis_urls[0],
        "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex}",
        "ALPHASWARM_TERRAFORM_ROOT": str(tf_root),
        "ALPHASWARM_TERRAFORM_WORKSPACES": ",".join(ALLOWED),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    workspace = {"workspace": "basic", "variables": {"name": "svc"}}

    plan = defs.resolve_job_def("terraform_plan_job").execute_in_process(
        run_config={"ops": {"terraform_plan": {"config": workspace}}}, instance=instance
    )
    apply_config = {"ops": {"terraform_apply": {"config": {"plan_id": plan.run_id}}}}
    switch = KillSwitch.from_settings(settings)
    switch.engage("incident 42", queue="terraform")
    try:
        apply = defs.resolve_job_def("terraform_apply_job").execute_in_process(
            run_config=apply_config, instance=instance, raise_on_error=False
        )
        destroy = defs.resolve_job_def("terraform_destroy_job").execute_in_process(
            run_config={"ops": {"terraform_destroy": {"config": workspace}}},
            instance=instance,
            raise_on_error=False,
        )
        # Fail closed: the switch written as a stream (any non-string type) refuses too.
        write_switch(switch.client, switch.key_for("terraform"), "stream")
        streamed = defs.resolve_job_def("terraform_apply_job").execute_in_process(
            run_config=apply_config, instance=instance, raise_on_error=False
        )
    finally:
        switch.clear(queue="terraform")
        switch.client.close()

    assert not apply.success and not destroy.success and not streamed.success
    assert "(key of type stream exists): terraform apply refused" in _failure(
        streamed, "terraform_apply"
    )
    assert "incident 42): terraform apply refused" in _failure(apply, "terraform_apply")
    assert "incident 42): terraform destroy refused" in _failure(destroy, "terraform_destroy")
    assert not (tf_root / "basic" / "terraform.tfstate").exists()
    engine = sa.create_engine(settings.ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ledger_refusals).order_by(ledger_refusals.c.id)).all()
    engine.dispose()
    assert [(r.source, r.queue, r.run_id) for r in rows] == [
        ("terraform_apply", "terraform", apply.run_id),
        ("terraform_destroy", "terraform", destroy.run_id),
        ("terraform_apply", "terraform", streamed.run_id),
    ]
    assert all("incident 42" in r.reason for r in rows[:2])

    # The refused plan was not consumed: once the switch is cleared it applies.
    again = defs.resolve_job_def("terraform_apply_job").execute_in_process(
        run_config=apply_config, instance=instance
    )
    assert again.success
    assert (tf_root / "basic" / "terraform.tfstate").exists()
