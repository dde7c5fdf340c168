"""The kill switch blocks sensors, steps and running sessions, and each refusal is recorded.

It fails closed: a switch key of any Redis type, and a Redis that cannot be read, is engaged.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from alphaswarm_orch.broker.keys import tick_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch, KillSwitchEngaged
from alphaswarm_orch.cli.main import main
from alphaswarm_orch.defs.hft import hft_request_sensor
from alphaswarm_orch.defs.paper import paper_request_sensor, paper_session_job
from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.requests import HftStart, append_request
from alphaswarm_orch.sessions.simulator import paper_sessions, paper_ticks
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from alphaswarm_orch.settings import Settings
from tests.sessions.conftest import paper_start, production_env
from tests.support.settings import settings_resources
from tests.support.switches import (
    KEY_TYPES,
    refused_redis_url,
    silent_redis_url,
    write_switch,
)

DEADLINE_SECONDS = 60


@pytest.fixture
def env(
    orch_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_urls: tuple[str, str]
) -> Iterator[dict[str, str]]:
    with production_env(orch_env, monkeypatch, redis_urls[0]) as production:
        yield production


@pytest.fixture
def instance(env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as real:
        yield real


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"])
    yield connection
    connection.close()


@pytest.fixture
def switch(env: dict[str, str]) -> KillSwitch:
    return KillSwitch.from_settings(Settings.from_env())


def refusals(env: dict[str, str]) -> list[sa.Row]:
    engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(ledger_refusals).order_by(ledger_refusals.c.id)).all()
    finally:
        engine.dispose()


def session_config(session_id: str) -> dict[str, object]:
    start = paper_start(session_id)
    return {
        "ops": {"paper_session": {"config": start.model_dump(exclude={"schema_version", "type"})}}
    }


def step_error(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    error, chain = failures[0].step_failure_data.error, []
    while error is not None:  # Dagster wraps the op's exception: walk to the cause
        chain.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(chain)


def test_cli_sets_reports_and_clears_global_and_queue_switches(
    env: dict[str, str], client: redis.Redis
) -> None:
    key = env["ALPHASWARM_KILL_SWITCH_KEY"]
    runner = CliRunner()

    result = runner.invoke(main, ["kill-switch", "on", "--reason", "incident 42"])
    assert result.exit_code == 0, result.output
    assert client.get(key) == b"incident 42"
    result = runner.invoke(main, ["kill-switch", "on", "-q", "hft", "--reason", "venue down"])
    assert result.exit_code == 0 and client.get(f"{key}:hft") == b"venue down"

    status = runner.invoke(main, ["kill-switch", "status"]).output
    assert f"global     ON (incident 42) [{key}]" in status
    assert f"hft        ON (venue down) [{key}:hft]" in status
    assert "paper      off" in status

    assert runner.invoke(main, ["kill-switch", "off"]).exit_code == 0
    assert client.get(key) is None and client.get(f"{key}:hft") == b"venue down"
    assert "global     off" in runner.invoke(main, ["kill-switch", "status", "-q", "hft"]).output

    missing = runner.invoke(main, ["kill-switch", "on", "-q", "paper"])
    assert missing.exit_code == 2 and "--reason" in missing.output
    blank = runner.invoke(main, ["kill-switch", "on", "--reason", "  "])
    assert blank.exit_code == 2 and "must not be empty" in blank.output
    heavy = runner.invoke(main, ["kill-switch", "on", "-q", "backtest", "--reason", "x"])
    assert heavy.exit_code == 2 and "'backtest' (--queue) is a heavy executor queue" in heavy.output
    assert client.get(f"{key}:paper") is None


def test_sensor_skips_with_the_reason_records_it_and_resumes_when_cleared(
    env: dict[str, str], instance: dg.DagsterInstance, client: redis.Redis, switch: KillSwitch
) -> None:
    append_request(client, paper_start("s1"))
    switch.engage("incident 7")

    result = paper_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert not result.run_requests and result.cursor is None
    assert "incident 7" in result.skip_message and "paper requests wait" in result.skip_message
    [refusal] = refusals(env)
    assert (refusal.source, refusal.queue) == ("paper_request_sensor", "paper")
    assert "incident 7" in refusal.reason

    switch.clear()
    switch.engage("hft venue down", queue="hft")  # another queue's switch does not apply
    result = paper_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert [r.run_key for r in result.run_requests] == ["req-s1"]
    skipped = hft_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert "hft venue down" in skipped.skip_message
    assert len(refusals(env)) == 1  # nothing was waiting on the hft stream: nothing refused


def test_step_refuses_to_start_and_the_refusal_is_recorded(
    env: dict[str, str], instance: dg.DagsterInstance, client: redis.Redis, switch: KillSwitch
) -> None:
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    switch.engage("maintenance window", queue="paper")

    result = paper_session_job.execute_in_process(
        resources=settings_resources(),
        run_config=session_config(session_id),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    error = step_error(result)
    assert "KillSwitchEngaged" in error and "maintenance window" in error
    assert "paper_session of run" in error
    [refusal] = refusals(env)
    assert (refusal.source, refusal.run_id, refusal.queue) == (
        "paper_session",
        result.run_id,
        "paper",
    )
    assert refusal.request_id == f"req-{session_id}"
    assert not client.exists(tick_stream(session_id))  # no work was started


def test_running_session_stops_within_a_tick_and_the_refusal_is_recorded(
    env: dict[str, str], instance: dg.DagsterInstance, client: redis.Redis, switch: KillSwitch
) -> None:
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault(
            "result",
            paper_session_job.execute_in_process(
                resources=settings_resources(),
                run_config=session_config(session_id),
                instance=instance,
                raise_on_error=False,
            ),
        )
    )
    engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"])
    # The ledger migrations, as the session runs them first: lets this test poll at once.
    migrate(env["ALPHASWARM_POSTGRES_URL"])
    runner.start()
    try:
        for i in range(20):
            tick = Tick(f"t{i}", "BTC-USD", 100.0, (OrderIntent("buy", 1),))
            append_tick(client, session_id, tick)
        count = sa.select(sa.func.count()).select_from(paper_ticks)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(count.where(paper_ticks.c.session_id == session_id)).scalar() == 20:
                    break
            time.sleep(0.05)
    finally:
        switch.engage("desk halted")  # also ends the session if the test failed above
        runner.join(DEADLINE_SECONDS)
    assert not runner.is_alive()

    result = outcome["result"]
    assert not result.success
    assert "desk halted" in step_error(result)
    [refusal] = refusals(env)
    assert (refusal.source, refusal.run_id) == ("paper_session", result.run_id)
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(paper_sessions.c.status).where(paper_sessions.c.session_id == session_id)
        ).scalar_one()
    engine.dispose()
    assert status == "killed"


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_a_key_of_any_type_engages_the_switch_with_the_best_reason(
    redis_urls: tuple[str, str], kind: str
) -> None:
    client = redis.Redis.from_url(redis_urls[0])
    switch = KillSwitch(client, f"test:kill:{uuid.uuid4().hex[:8]}")
    try:
        reason = write_switch(client, switch.key, kind)
        state = switch.state()
        assert state is not None and (state.key, state.reason) == (switch.key, reason)
        with pytest.raises(KillSwitchEngaged, match=f"is set \\({reason}\\): step x refused"):
            switch.check("step x", queue="paper")
        switch.clear()

        queue_key = switch.key_for("paper")
        assert write_switch(client, queue_key, kind) == reason
        assert switch.state() is None and switch.state("hft") is None
        state = switch.state("paper")
        assert state is not None and (state.key, state.reason) == (queue_key, reason)
    finally:
        client.delete(switch.key, switch.key_for("paper"))
        client.close()


def test_a_hash_without_a_reason_or_an_empty_value_still_engages(
    redis_urls: tuple[str, str],
) -> None:
    client = redis.Redis.from_url(redis_urls[0])
    switch = KillSwitch(client, f"test:kill:{uuid.uuid4().hex[:8]}")
    try:
        client.hset(switch.key, "by", "core")
        assert switch.state() == KillSwitch(client, switch.key).state()
        assert switch.state().reason == "key of type hash exists"
        client.delete(switch.key)
        client.set(switch.key, "")
        assert switch.state().reason == "key of type string exists (empty)"
        client.set(switch.key, b'{"reason": "halt\\u0000\\u202e"}')  # JSON, hostile reason
        assert switch.state().reason == "halt\\x00\\u202e"
        client.set(switch.key, b"\xff\xfe not utf-8")
        assert switch.state().reason.endswith("not utf-8")
    finally:
        client.delete(switch.key)
        client.close()


def test_an_unreadable_redis_means_engaged() -> None:
    refused = KillSwitch(redis.Redis.from_url(refused_redis_url()), "alphaswarm:kill_switch")
    state = refused.state("paper")
    assert state is not None and state.key == "alphaswarm:kill_switch"
    assert state.reason.startswith("kill switch unreadable: ConnectionError")
    with pytest.raises(KillSwitchEngaged, match="kill switch unreadable"):
        refused.check("step x", queue="paper")

    with silent_redis_url() as url:  # accepts, never answers: the read times out
        silent = KillSwitch(redis.Redis.from_url(url, socket_timeout=0.5), "k")
        state = silent.state()
    assert state is not None and "kill switch unreadable: TimeoutError" in state.reason


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_sensor_step_and_status_refuse_under_a_switch_of_any_type(
    env: dict[str, str], instance: dg.DagsterInstance, client: redis.Redis, kind: str
) -> None:
    key = f"{env['ALPHASWARM_KILL_SWITCH_KEY']}:paper"
    reason = write_switch(client, key, kind)
    append_request(client, paper_start("s1"))

    result = paper_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert not result.run_requests and result.cursor is None
    assert f"({reason}): paper requests wait" in result.skip_message

    status = CliRunner().invoke(main, ["kill-switch", "status"])
    assert status.exit_code == 0, status.output
    assert f"paper      ON ({reason}) [{key}]" in status.output
    assert "global     off" in status.output

    session_id = f"s-{uuid.uuid4().hex[:8]}"
    step = paper_session_job.execute_in_process(
        resources=settings_resources(),
        run_config=session_config(session_id),
        instance=instance,
        raise_on_error=False,
    )
    assert not step.success
    assert f"KillSwitchEngaged: kill switch {key!r} is set ({reason})" in step_error(step)
    assert [(r.source, r.run_id) for r in refusals(env)] == [
        ("paper_request_sensor", None),
        ("paper_session", step.run_id),
    ]
    assert not client.exists(tick_stream(session_id))


def test_sensor_step_and_status_fail_closed_when_redis_is_unreachable(
    env: dict[str, str], instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHASWARM_REDIS_URL", refused_redis_url())

    result = paper_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert not result.run_requests
    assert "kill switch unreadable: ConnectionError" in result.skip_message

    status = CliRunner().invoke(main, ["kill-switch", "status"])
    assert status.exit_code == 1
    assert "global     ON (kill switch unreadable: ConnectionError" in status.output
    assert "could not read the kill switch" in status.output

    step = paper_session_job.execute_in_process(
        resources=settings_resources(),
        run_config=session_config(f"s-{uuid.uuid4().hex[:8]}"),
        instance=instance,
        raise_on_error=False,
    )
    assert not step.success
    assert "KillSwitchEngaged" in step_error(step) and "kill switch unreadable" in step_error(step)
    [refusal] = refusals(env)
    assert (refusal.source, refusal.run_id) == ("paper_session", step.run_id)


def test_a_held_sensor_records_its_refusal_once_per_episode(
    env: dict[str, str], instance: dg.DagsterInstance, client: redis.Redis, switch: KillSwitch
) -> None:
    append_request(client, paper_start("s1"))
    hft = paper_start("h1").model_dump(exclude={"type"})
    append_request(client, HftStart(type="hft.start", **hft))

    def ticks(n: int) -> None:
        for _ in range(n):  # no cursor kept: the requests stay waiting on every tick
            for sensor in (paper_request_sensor, hft_request_sensor):
                result = sensor.evaluate_tick(
                    dg.build_sensor_context(instance=instance, resources=settings_resources())
                )
                assert not result.run_requests, result.skip_message

    switch.engage("incident 7")
    ticks(20)
    assert [(r.source, r.queue) for r in refusals(env)] == [
        ("paper_request_sensor", "paper"),
        ("hft_request_sensor", "hft"),
    ]

    switch.clear()  # the episode ends once a tick sees the switch off
    result = paper_request_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=settings_resources())
    )
    assert [r.run_key for r in result.run_requests] == ["req-s1"]
    switch.engage("incident 7")  # the same reason again: a new episode
    ticks(5)
    assert [r.source for r in refusals(env)][2:] == ["paper_request_sensor"]

    switch.engage("incident 8")  # another reason while engaged: a new episode for both
    ticks(5)
    rows = refusals(env)
    assert len(rows) == 5
    assert all("incident 8" in r.reason for r in rows[3:])
