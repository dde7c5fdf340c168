"""Small tasks the worker tests register with ALPHASWARM_WORKER_INCLUDE=tests.control.tasks_stub.

They report to the worker's Redis (ALPHASWARM_REDIS_URL, else the broker) under keys the test
names, and block on a Redis key instead of sleeping where a test needs to hold a task running.
"""

from __future__ import annotations

import os

import redis
from celery import shared_task

BLOCK_SECONDS = 60


def _redis() -> redis.Redis:
    url = os.environ.get("ALPHASWARM_REDIS_URL") or os.environ["ALPHASWARM_BROKER_URL"]
    return redis.Redis.from_url(url, socket_timeout=BLOCK_SECONDS + 5)


@shared_task(name="tests.stub.ok")
def ok(prefix: str) -> str:
    _redis().incr(f"{prefix}:ok")
    return "ok"


@shared_task(name="tests.stub.fail")
def fail(prefix: str) -> None:
    _redis().incr(f"{prefix}:fail")
    raise ValueError(f"stub failure for {prefix}")


@shared_task(bind=True, name="tests.stub.retry_once", max_retries=3)
def retry_once(self, prefix: str) -> str:
    if _redis().incr(f"{prefix}:{self.request.id}:tries") == 1:
        raise self.retry(countdown=0)
    _redis().incr(f"{prefix}:retried_ok")
    return "ok"


@shared_task(name="tests.stub.send_ok")
def send_ok(prefix: str, queue: str) -> None:
    """Sends a task from the pool child (a child-only sample for the multiprocess check)."""
    ok.apply_async(args=[prefix], queue=queue)


@shared_task(bind=True, name="tests.stub.hold")
def hold(self, prefix: str, key: str) -> str:
    """Record the start, wait until the test pushes `<prefix>:release:<key>`, record the end."""
    client = _redis()
    client.rpush(f"{prefix}:started", f"{key}|{self.request.hostname}|{os.getpid()}")
    released = client.blpop([f"{prefix}:release:{key}"], timeout=BLOCK_SECONDS)
    if released is None:
        raise TimeoutError(f"{key} was not released within {BLOCK_SECONDS}s")
    client.rpush(f"{prefix}:finished", key)
    return key


@shared_task(name="tests.stub.apply_once")
def apply_once(prefix: str, key: str, hold: bool = False) -> bool:
    """Idempotent by key: the effect lands once however often the message is delivered.

    With `hold`, it first waits for `<prefix>:release:<key>` (so the test can keep it running).
    """
    client = _redis()
    client.incr(f"{prefix}:executions")
    if hold:
        client.rpush(f"{prefix}:started", key)
        if client.blpop([f"{prefix}:release:{key}"], timeout=BLOCK_SECONDS) is None:
            raise TimeoutError(f"{key} was not released within {BLOCK_SECONDS}s")
    applied = bool(client.set(f"{prefix}:done:{key}", 1, nx=True))
    if applied:
        client.incr(f"{prefix}:applied")
    return applied
