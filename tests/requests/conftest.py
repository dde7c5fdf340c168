"""A Redis client on the test DB with per-test streams (and request-id records) cleaned up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from alphaswarm_orch.broker.keys import (
    REQUEST_FAMILIES,
    dead_letter_stream,
    request_ids,
    request_stream,
)


@pytest.fixture
def redis_client(redis_urls: tuple[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_urls[0])
    streams = [
        f(family)
        for family in REQUEST_FAMILIES
        for f in (request_stream, dead_letter_stream, request_ids)
    ]
    client.delete(*streams)
    yield client
    client.delete(*streams)
    client.close()
