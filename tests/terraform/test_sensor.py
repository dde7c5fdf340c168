"""terraform_request_sensor on the real request stream (Redis) and the real jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.keys import (
    dead_letter_stream,
    request_hold_key,
    request_ids,
    request_stream,
)
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.defs.terraform.sensors import terraform_request_sensor
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.requests import TerraformRequest, append_request
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, WORKLOAD_TAG
from tests.support.settings import settings_resources
from tests.terraform.conftest import ALLOWED

pytestmark = pytest.mark.integration


@pytest.fixture
def sensor_env(
    redis_urls: tuple[str, str], tf_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """Redis for requests and the kill switch, an allow-list, an embedded SQLite ledger."""
    for name in ("ALPHASWARM_BROKER_URL", "ALPHASWARM_POSTGRES_URL", "ALPHASWARM_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALPHASWARM_REDIS_URL", redis_urls[0])
    monkeypatch.setenv("ALPHASWARM_KILL_SWITCH_KEY", f"test:kill:{uuid.uuid4().hex}")
    monkeypatch.setenv("ALPHASWARM_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("ALPHASWARM_TERRAFORM_ROOT", str(tf_root))
    monkeypatch.setenv("ALPHASWARM_TERRAFORM_WORKSPACES", ",".join(ALLOWED))
    client = redis.Redis.from_url(redis_urls[0])
    streams = [
        f("terraform") for f in (request_stream, dead_letter_stream, request_ids, request_hold_key)
    ]
    client.delete(*streams)
    yield client
    client.delete(*streams)
    client.close()


def _request(request_id: str, action: str, workspace: str = "basic", **fields) -> TerraformRequest:
    return TerraformRequest(
        schema_version=1,
        type="terraform.action",
        request_id=request_id,
        actor="ops-bot",
        workspace=workspace,
        action=action,
        **fields,
    )


def _evaluate(cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(
        cursor=cursor, instance=dg.DagsterInstance.ephemeral(), resources=settings_resources()
    )
    return terraform_request_sensor(context)


def test_requests_become_runs_and_bad_ones_are_dead_lettered(
    sensor_env: redis.Redis, tf_env: dict[str, str]
) -> None:
    client = sensor_env
    append_request(client, _request("r-plan", "plan", variables={"name": "svc"}))
    append_request(client, _request("r-apply", "apply", plan_id="run-123"))
    append_request(client, _request("r-plan", "plan", variables={"name": "again"}))
    append_request(client, _request("r-prod", "plan", workspace="prod"))
    append_request(client, _request("r-vars", "apply", plan_id="run-1", variables={"name": "x"}))
    last = append_request(client, _request("r-destroy", "destroy", variables={"name": "svc"}))

    result = _evaluate()
    assert isinstance(result, dg.SensorResult)
    assert result.cursor == last
    by_key = {r.run_key: r for r in result.run_requests}
    assert list(by_key) == ["r-plan", "r-apply", "r-destroy"]
    assert by_key["r-plan"].job_name == "terraform_plan_job"
    assert by_key["r-plan"].run_config == {
        "ops": {"terraform_plan": {"config": {"workspace": "basic", "variables": {"name": "svc"}}}}
    }
    assert by_key["r-apply"].job_name == "terraform_apply_job"
    assert by_key["r-apply"].run_config == {
        "ops": {"terraform_apply": {"config": {"plan_id": "run-123", "workspace": "basic"}}}
    }
    assert by_key["r-destroy"].job_name == "terraform_destroy_job"
    assert by_key["r-plan"].tags == {
        WORKLOAD_TAG: "terraform",
        ACTOR_TAG: "ops-bot",
        REQUEST_ID_TAG: "r-plan",
    }

    dead = {
        fields[b"source_id"].decode(): fields[b"reason"].decode()
        for _id, fields in client.xrange(dead_letter_stream("terraform"))
    }
    assert len(dead) == 3
    reasons = sorted(dead.values())
    assert reasons[0].startswith("an apply takes no variables")
    # The same request id with other variables is refused, not silently dropped.
    assert reasons[1].startswith("request id 'r-plan' was already used by entry")
    assert "different content" in reasons[1]
    assert reasons[2].startswith("workspace 'prod' is not allow-listed")

    again = _evaluate(result.cursor)
    assert isinstance(again, dg.SensorResult) and again.run_requests == []

    # The launched run config is what the job accepts: run the plan request for real.
    plan = by_key["r-plan"]
    defs = build_definitions(Settings.from_env())
    run = defs.resolve_job_def(plan.job_name).execute_in_process(
        run_config=plan.run_config, tags=plan.tags, instance=dg.DagsterInstance.ephemeral()
    )
    assert run.success
    assert run.output_for_node("terraform_plan")["summary"] == {
        "add": 2,
        "change": 0,
        "destroy": 0,
    }


def test_requests_wait_while_the_kill_switch_is_set(sensor_env: redis.Redis) -> None:
    client = sensor_env
    append_request(client, _request("r-1", "plan", variables={"name": "svc"}))
    settings = Settings.from_env()
    switch = KillSwitch(client, settings.kill_switch_key)
    switch.engage("change freeze")
    try:
        skipped = _evaluate()
        # The hold names the switch, for the daemon's listener to wake the sensor on clearing.
        assert client.get(request_hold_key("terraform")) == settings.kill_switch_key.encode()
    finally:
        switch.clear()
    assert isinstance(skipped, dg.SkipReason)
    assert "change freeze" in (skipped.skip_message or "")
    engine = sa.create_engine(settings.ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ledger_refusals)).all()
    engine.dispose()
    assert [(r.source, r.queue) for r in rows] == [("terraform_request_sensor", "terraform")]

    resumed = _evaluate()
    assert isinstance(resumed, dg.SensorResult)
    assert [r.run_key for r in resumed.run_requests] == ["r-1"]
    assert client.get(request_hold_key("terraform")) is None


def test_sensor_skips_until_workspaces_are_allow_listed(
    sensor_env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALPHASWARM_TERRAFORM_WORKSPACES")
    append_request(sensor_env, _request("r-1", "plan"))
    skipped = _evaluate()
    assert isinstance(skipped, dg.SkipReason)
    assert "set ALPHASWARM_TERRAFORM_WORKSPACES" in (skipped.skip_message or "")
    assert sensor_env.xlen(dead_letter_stream("terraform")) == 0


SECRET = "hunter2-s3cret"


def _raw(request_id: str, tail: str = "") -> str:
    """A plan request's JSON as written by hand, `tail` spliced in before the closing brace."""
    head = json.dumps(
        {
            "schema_version": 1,
            "type": "terraform.action",
            "request_id": request_id,
            "actor": "ops-bot",
            "workspace": "basic",
            "action": "plan",
        }
    )
    return head[:-1] + tail + "}"


def test_unlaunchable_requests_are_dead_lettered_and_dead_letters_keep_no_variable_values(
    sensor_env: redis.Redis,
) -> None:
    client = sensor_env
    stream = request_stream("terraform")
    entries = {
        "null": _raw("r-null", ', "variables": {"name": null}'),
        "nul": _raw("r-nul", ', "variables": {"name": "a\\u0000b"}'),
        "dup": _raw("r-dup", f', "variables": {{"password": "{SECRET}"}}, "variables": {{}}'),
        "broken": _raw("r-broken", f', "variables": {{"password": "{SECRET}"')[:-1],
    }
    ids = {k: client.xadd(stream, {"payload": v}).decode() for k, v in entries.items()}
    ids["prod"] = append_request(
        client, _request("r-prod", "plan", workspace="prod", variables={"password": SECRET})
    )
    last = append_request(client, _request("r-ok", "plan", variables={"name": "svc"}))

    result = _evaluate()

    assert isinstance(result, dg.SensorResult) and result.cursor == last
    assert [r.run_key for r in result.run_requests] == ["r-ok"]
    defs = build_definitions(Settings.from_env())
    for request in result.run_requests:  # every RunRequest is a run Dagster can create
        dg.DagsterInstance.ephemeral().create_run_for_job(
            job_def=defs.resolve_job_def(request.job_name),
            run_config=request.run_config,
            tags=request.tags,
        )
    letters = {
        fields[b"source_id"].decode(): {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(dead_letter_stream("terraform"))
    }
    assert set(letters) == set(ids.values())
    reasons = {k: letters[v]["reason"] for k, v in ids.items()}
    assert "variables: name: null is not a value a request can pass" in reasons["null"]
    assert "variables: name: character \\x00 (control character)" in reasons["nul"]
    assert "repeats the key 'variables'" in reasons["dup"]
    assert "not valid JSON" in reasons["broken"]
    assert "not allow-listed" in reasons["prod"]
    for letter in letters.values():
        assert SECRET not in letter["payload"]
    assert json.loads(letters[ids["prod"]]["payload"])["variables"] == {"password": "[redacted]"}
    assert (
        '"variables": {"password": "[redacted]"}, "variables": {}' in letters[ids["dup"]]["payload"]
    )
    assert letters[ids["broken"]]["payload"].startswith("(payload withheld: ")


def test_requests_wait_while_the_code_location_has_no_terraform_root(
    sensor_env: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run creation resolves the terraform resource (its root from the environment) in the
    code location: without it every run would fail to be created, so requests wait."""
    monkeypatch.delenv("ALPHASWARM_TERRAFORM_ROOT")
    append_request(sensor_env, _request("r-1", "plan"))
    skipped = _evaluate()
    assert isinstance(skipped, dg.SkipReason)
    assert "ALPHASWARM_TERRAFORM_ROOT is not set for the code location" in (
        skipped.skip_message or ""
    )
    assert sensor_env.xlen(dead_letter_stream("terraform")) == 0

    monkeypatch.setenv("ALPHASWARM_TERRAFORM_ROOT", "/srv/terraform")
    defs = build_definitions(Settings.from_env())
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), definitions=defs, resources=settings_resources()
    )
    result = terraform_request_sensor(context)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests
    # The run the daemon creates from it, on the job as the code location binds it.
    dg.DagsterInstance.ephemeral().create_run_for_job(
        job_def=defs.resolve_job_def(request.job_name),
        run_config=request.run_config,
        tags=request.tags,
    )
