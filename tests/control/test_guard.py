"""The run guard's rules, on a Postgres-backed instance and ledger and a real Redis.

A missing run counts as ended (fail closed); a switch of any Redis type, or an unreadable
one, refuses; a refusal is recorded once per episode of the switch and scope (run or sensor).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.kill_switch import KillSwitch, KillSwitchEngaged
from alphaswarm_orch.guard import (
    clear_episode,
    record_refusal_once,
    refuse_while_killed,
    run_ended,
)
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.settings import Settings
from tests.support.switches import KEY_TYPES, refused_redis_url, write_switch

pytestmark = pytest.mark.integration


@dg.op
def _noop() -> None:
    pass


@dg.job
def _noop_job() -> None:
    _noop()


@pytest.fixture
def settings(redis_urls: tuple[str, str], postgres_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "ALPHASWARM_REDIS_URL": redis_urls[0],
            "ALPHASWARM_POSTGRES_URL": postgres_url,
            "ALPHASWARM_STORAGE_DIR": str(tmp_path),
            "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex[:8]}",
        }
    )


@pytest.fixture
def switch(settings: Settings) -> Iterator[KillSwitch]:
    switch = KillSwitch.from_settings(settings)
    yield switch
    switch.client.delete(*switch.keys_for("paper"))
    switch.client.close()


def _refusals(settings: Settings) -> list[tuple[str, str | None, str | None]]:
    engine = sa.create_engine(settings.ledger_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ledger_refusals).order_by(ledger_refusals.c.id))
            return [(r.source, r.queue, r.run_id) for r in rows]
    finally:
        engine.dispose()


def _refuse(settings: Settings, run_id: str | None = "run-1") -> KillSwitchEngaged | None:
    try:
        refuse_while_killed(
            settings, source="some_op", where="step x", queue="paper", run_id=run_id
        )
    except KillSwitchEngaged as exc:
        return exc
    return None


def test_a_run_has_ended_when_missing_terminating_or_finished(
    instance: dg.DagsterInstance,
) -> None:
    assert run_ended(instance, str(uuid.uuid4()))  # missing: fail closed

    statuses = {
        dg.DagsterRunStatus.NOT_STARTED: False,
        dg.DagsterRunStatus.STARTING: False,
        dg.DagsterRunStatus.STARTED: False,
        dg.DagsterRunStatus.CANCELING: True,
        dg.DagsterRunStatus.CANCELED: True,
        dg.DagsterRunStatus.SUCCESS: True,
        dg.DagsterRunStatus.FAILURE: True,
    }
    for status, ended in statuses.items():
        run = instance.create_run_for_job(_noop_job, status=status)
        assert run_ended(instance, run.run_id) is ended, status


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_a_switch_of_any_type_refuses_and_records(
    settings: Settings, switch: KillSwitch, kind: str
) -> None:
    assert _refuse(settings) is None
    reason = write_switch(switch.client, switch.key_for("paper"), kind)
    refusal = _refuse(settings)
    assert refusal is not None and f"({reason}): step x refused" in str(refusal)
    assert _refusals(settings) == [("some_op", "paper", "run-1")]


def test_the_global_switch_refuses_every_queue(settings: Settings, switch: KillSwitch) -> None:
    switch.engage("incident 3")
    refusal = _refuse(settings)
    assert refusal is not None and refusal.key == settings.kill_switch_key
    assert _refusals(settings) == [("some_op", "paper", "run-1")]


def test_an_unreadable_switch_refuses_and_the_refusal_is_still_recorded(
    settings: Settings,
) -> None:
    unreadable = dataclasses.replace(settings, redis_url=refused_redis_url())
    refusal = _refuse(unreadable)
    assert refusal is not None and "kill switch unreadable: ConnectionError" in str(refusal)
    assert _refusals(settings) == [("some_op", "paper", "run-1")]


def test_a_refusal_is_recorded_once_per_episode_and_scope(
    settings: Settings, switch: KillSwitch
) -> None:
    switch.engage("incident 1", queue="paper")
    assert _refuse(settings) is not None
    assert _refuse(settings) is not None  # the same run refused again: same episode
    assert _refuse(settings, run_id="run-2") is not None  # another run: its own refusal
    switch.engage("incident 2", queue="paper")  # another value: a new episode
    assert _refuse(settings) is not None
    assert _refusals(settings) == [
        ("some_op", "paper", "run-1"),
        ("some_op", "paper", "run-2"),
        ("some_op", "paper", "run-1"),
    ]


def test_a_sensor_episode_lasts_until_the_switch_is_cleared(
    settings: Settings, switch: KillSwitch
) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    switch.engage("incident 5", queue="paper")
    state = switch.state("paper")
    assert state is not None
    for _ in range(3):
        record_refusal_once(
            client, settings, state.episode, source="a_sensor", reason="wait", queue="paper"
        )
    clear_episode(client, source="a_sensor", queue="paper")
    record_refusal_once(
        client, settings, state.episode, source="a_sensor", reason="wait", queue="paper"
    )
    client.close()
    assert _refusals(settings) == [("a_sensor", "paper", None)] * 2
