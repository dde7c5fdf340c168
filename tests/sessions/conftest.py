"""Sessions on the real Redis and Postgres: a client, a unique session id, its ledger engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.keys import (
    REQUEST_FAMILIES,
    dead_letter_stream,
    request_hold_key,
    request_ids,
    request_stream,
    session_fence_key,
    session_lease_key,
    session_registry,
    session_stop_key,
    tick_stream,
)
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.requests import PaperStart


@pytest.fixture
def redis_client(redis_urls: tuple[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_urls[0])
    yield client
    client.close()


@pytest.fixture
def session_id(redis_client: redis.Redis) -> Iterator[str]:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    yield sid
    redis_client.delete(
        tick_stream(sid), session_stop_key(sid), session_lease_key(sid), session_fence_key(sid)
    )


@pytest.fixture
def kill_switch(redis_client: redis.Redis) -> Iterator[KillSwitch]:
    switch = KillSwitch(redis_client, f"test:kill:{uuid.uuid4().hex[:8]}")
    yield switch
    for queue in (None, "paper", "hft"):
        switch.clear(queue)


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[sa.Engine]:
    """The ledger database, migrated (the session tables come from the migrations)."""
    migrate(postgres_url)
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


def paper_start(session_id: str, **fields: object) -> PaperStart:
    return PaperStart(
        schema_version=1,
        type="paper.start",
        request_id=f"req-{session_id}",
        actor="tester",
        session_id=session_id,
        symbols=["BTC-USD"],
        **fields,
    )


@contextmanager
def production_env(
    orch_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> Iterator[dict[str, str]]:
    """The production-path environment in this process, with a per-test kill-switch key, and
    the request streams and session registries emptied before and after."""
    env = {**orch_env, "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex[:8]}"}
    for name, value in env.items():
        if name.startswith(("ALPHASWARM_", "DAGSTER_")):
            monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(redis_url)
    keys = [
        key(family)
        for family in REQUEST_FAMILIES
        for key in (
            request_stream,
            dead_letter_stream,
            request_ids,
            session_registry,
            request_hold_key,
        )
    ]
    client.delete(*keys)
    try:
        yield env
    finally:
        client.delete(*keys, env["ALPHASWARM_KILL_SWITCH_KEY"])
        client.delete(*(f"{env['ALPHASWARM_KILL_SWITCH_KEY']}:{q}" for q in ("paper", "hft")))
        client.close()


@pytest.fixture
def sensor_env(
    orch_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_urls: tuple[str, str]
) -> Iterator[dict[str, str]]:
    with production_env(orch_env, monkeypatch, redis_urls[0]) as env:
        yield env


@pytest.fixture
def instance(sensor_env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The Postgres-backed Dagster instance of `sensor_env` (dagster.yaml from the repo)."""
    with dg.DagsterInstance.from_config(sensor_env["DAGSTER_HOME"]) as real:
        yield real
