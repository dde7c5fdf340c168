"""Connections to the machine's real Redis and Postgres, with clear failures when absent."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import redis

REPO = Path(__file__).resolve().parents[2]
REDIS_HOST = os.environ.get("ALPHASWARM_TEST_REDIS_HOST", "127.0.0.1")
POSTGRES_ADMIN = os.environ.get(
    "ALPHASWARM_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)


def redis_urls() -> tuple[str, str]:
    """(broker, result backend) databases of this test process.

    ALPHASWARM_TEST_REDIS_DB (default 2) is the first database; each pytest-xdist worker
    (PYTEST_XDIST_WORKER = gw0, gw1, ...) takes the next pair, so workers never share a database.
    """
    base = int(os.environ.get("ALPHASWARM_TEST_REDIS_DB", "2"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    db = base + 2 * int(worker.removeprefix("gw") or 0)
    return f"redis://{REDIS_HOST}:6379/{db}", f"redis://{REDIS_HOST}:6379/{db + 1}"


def flush_redis(*urls: str) -> None:
    for url in urls:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.flushdb()
        except redis.ResponseError as exc:
            raise RuntimeError(
                f"Redis at {url}: {exc}; ALPHASWARM_TEST_REDIS_DB plus two per pytest-xdist "
                "worker must stay below the server's `databases` setting (default 16)"
            ) from exc
        except redis.ConnectionError as exc:
            raise RuntimeError(
                f"Redis at {url} is unreachable ({exc}); start it with: redis-server "
                "--daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
            ) from exc
        finally:
            client.close()


def _admin() -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise RuntimeError(
            f"Postgres at {POSTGRES_ADMIN} is unreachable ({exc}); start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        ) from exc
    conn.autocommit = True
    return conn


@contextmanager
def temporary_database(prefix: str = "as_test") -> Iterator[str]:
    """Create an empty database and yield its SQLAlchemy (psycopg2) URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        host = POSTGRES_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
        yield f"postgresql+psycopg2://{host}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def orchestration_env(
    directory: Path, redis_urls: tuple[str, str], postgres_url: str
) -> dict[str, str]:
    """The production path's environment under `directory`: Celery over Redis (broker, result
    backend), instance and ledger on Postgres, the repo's dagster.yaml in a DAGSTER_HOME."""
    home = directory / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    broker, backend = redis_urls
    return {
        **os.environ,
        "ALPHASWARM_BROKER_URL": broker,
        "ALPHASWARM_RESULT_BACKEND": backend,
        "ALPHASWARM_POSTGRES_URL": postgres_url,
        "ALPHASWARM_STORAGE_DIR": str(directory / "storage"),
        "DAGSTER_HOME": str(home),
    }
