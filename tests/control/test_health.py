"""Readiness and liveness of a real worker through a Redis outage of its own redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from alphaswarm_orch.control.health import probe_broker
from tests.support.ops import RedisServer, http_get, sample, scrape, sender, worker_env
from tests.support.runs import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

LIVENESS_MAX_AGE = 8
OUTAGE_SECONDS = 2 * LIVENESS_MAX_AGE


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: stopping it never disturbs anyone else's Redis."""
    server = RedisServer.start_in(tmp_path / "redis")
    yield server
    server.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_readiness_probe_times_out_on_a_frozen_broker(own_redis: RedisServer) -> None:
    assert probe_broker(own_redis.url(), timeout=1).ok
    own_redis.pause()  # accepts connections, never answers: a held socket would look fine
    try:
        result = probe_broker(own_redis.url(), timeout=1)
    finally:
        own_redis.resume()
    assert not result.ok
    assert "unreachable" in result.detail and str(own_redis.port) in result.detail
    assert result.seconds < 10, result
    assert probe_broker(own_redis.url(), timeout=1).ok


def test_outage_fails_readiness_not_liveness_and_worker_resumes(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), tmp_path / "storage")
    port = int(env["ALPHASWARM_METRICS_PORT"])
    worker = WorkerProcess.start("default", "health-a", env, "--concurrency", "1")
    try:
        assert http_get(port, "/readyz")[0] == 200
        assert cli(env, "health", "--readiness").returncode == 0

        own_redis.stop()
        wait_for(lambda: http_get(port, "/readyz?timeout=1")[0] == 503, 30, "readiness to fail")
        started = time.monotonic()
        not_ready = cli(env, "health", "--readiness", "--timeout", "1")
        assert not_ready.returncode == 1 and "not ready" in not_ready.stdout
        assert time.monotonic() - started < 30

        states = set()
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            code, body = http_get(port, f"/healthz?max_age={LIVENESS_MAX_AGE}")
            status = json.loads(body)
            assert code == 200, f"liveness failed during the outage: {status}"
            states.add(status["state"])
            time.sleep(0.5)
        assert "reconnecting" in states
        samples = scrape(port)  # the scrape still answers, saying what it could not read
        assert sample(samples, "celery_worker_up") == 0
        assert sample(samples, "alphaswarm_metrics_source_up", source="broker") == 0
        alive = cli(env, "health", "--liveness", "--max-age", str(LIVENESS_MAX_AGE))
        assert alive.returncode == 0, alive.stdout + alive.stderr

        own_redis.start()
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30, "readiness to recover")
        prefix = f"h:{uuid.uuid4().hex}"
        sender(env).send_task("tests.stub.ok", args=[prefix], queue="default")
        client = redis.Redis.from_url(own_redis.url(0))
        wait_for(lambda: client.get(f"{prefix}:ok") == b"1", 60, "a task after the outage")
        status = json.loads(http_get(port, "/healthz")[1])
        assert status["state"] == "consuming" and status["alive"]
        assert sample(scrape(port), "celery_worker_up") == 1
    finally:
        worker.stop()
