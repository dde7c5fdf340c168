"""Sessions on the real Redis and Postgres: a client, a unique session id, its ledger engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.control.keys import session_stop_key, tick_stream
from alphaswarm_orch.control.kill_switch import KillSwitch
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
    redis_client.delete(tick_stream(sid), session_stop_key(sid))


@pytest.fixture
def kill_switch(redis_client: redis.Redis) -> Iterator[KillSwitch]:
    switch = KillSwitch(redis_client, f"test:kill:{uuid.uuid4().hex[:8]}")
    yield switch
    for queue in (None, "paper", "hft"):
        switch.clear(queue)


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[sa.Engine]:
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
