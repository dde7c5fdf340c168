"""Shared fixtures: real Redis, real Postgres, real worker processes.

Each test process (each pytest-xdist worker) uses its own pair of Redis databases
(ALPHASWARM_TEST_REDIS_DB, default 2, and the next one for results; the next pair per xdist
worker) and throw-away Postgres databases, so suites can run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.support import services
from tests.support.processes import free_port
from tests.support.workers import WorkerProcess

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_urls() -> tuple[str, str]:
    """(broker, result backend) URLs on two dedicated, emptied Redis databases."""
    broker, backend = services.redis_urls()
    services.flush_redis(broker, backend)
    return broker, backend


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database, dropped afterwards."""
    with services.temporary_database() as url:
        yield url


@pytest.fixture
def orch_env(
    tmp_path: Path, redis_urls: tuple[str, str], postgres_url: str
) -> Iterator[dict[str, str]]:
    """Environment for the production path: Celery over Redis, instance and ledger on Postgres."""
    env = services.orchestration_env(tmp_path, redis_urls, postgres_url)
    yield env
    services.flush_redis(*redis_urls)


@pytest.fixture
def instance(orch_env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The Postgres-backed Dagster instance of `orch_env`, as the run and workers see it."""
    saved = dict(os.environ)
    os.environ.update(
        {k: v for k, v in orch_env.items() if k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    )
    try:
        with dg.DagsterInstance.get() as inst:
            yield inst
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def start_worker(orch_env: dict[str, str]) -> Iterator:
    """Start `alphaswarm-orch worker` subprocesses; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(queues: str, name: str, *extra: str, env: dict[str, str] | None = None):
        env = dict(env or orch_env)
        # Each worker serves /metrics on a port of its own, as each pod does on :9100.
        env.setdefault("ALPHASWARM_METRICS_PORT", str(free_port()))
        worker = WorkerProcess.start(queues, name, env, *extra)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
