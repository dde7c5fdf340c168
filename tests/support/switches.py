"""Kill-switch keys of every Redis type, and Redis endpoints that cannot be read."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from tests.support.processes import free_port

REASON = "incident 9"

_WRITERS: dict[str, tuple[Callable[[redis.Redis, str], object], str]] = {
    "string": (lambda c, k: c.set(k, REASON), REASON),
    "hash": (lambda c, k: c.hset(k, mapping={"reason": REASON, "by": "core"}), REASON),
    "list": (lambda c, k: c.rpush(k, REASON), "key of type list exists"),
    "set": (lambda c, k: c.sadd(k, REASON), "key of type set exists"),
    "zset": (lambda c, k: c.zadd(k, {REASON: 1}), "key of type zset exists"),
    "stream": (lambda c, k: c.xadd(k, {"reason": REASON}), "key of type stream exists"),
}
KEY_TYPES = tuple(_WRITERS)
"""Every Redis type alphaswarm-core (or anyone) could write a kill-switch key as."""


def write_switch(client: redis.Redis, key: str, kind: str) -> str:
    """Write the kill-switch `key` as a Redis `kind`; returns the reason a reader should report."""
    write, reason = _WRITERS[kind]
    client.delete(key)
    write(client, key)
    written = client.type(key)
    assert (written.decode() if isinstance(written, bytes) else written) == kind
    return reason


def refused_redis_url() -> str:
    """A Redis URL where nothing listens: connecting is refused."""
    return f"redis://127.0.0.1:{free_port()}/0"


@contextmanager
def silent_redis_url() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers: reads time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
