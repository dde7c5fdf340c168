"""A benchmark's stack and what it costs: throw-away Redis DBs, Postgres instance database and
DAGSTER_HOME (with the dagster.yaml under test), and the CPU, memory and Postgres connections
of its processes, read from /proc and pg_stat_activity.

Shared by the benchmarks that start a daemon or workers (daemon_rollout, scale).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from alphaswarm_orch.requests.models import PaperStart
from tests.support import services
from tests.support.ops import descendants
from tests.support.processes import background, free_port
from tests.support.runs import REPO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def stack_env(name: str, instance_yaml: str, redis_db: int) -> Iterator[dict[str, str]]:
    """The environment of one stack (Redis DBs `redis_db` and the next, flushed before and
    after; a throw-away Postgres database; DAGSTER_HOME with `instance_yaml`). Its
    ALPHASWARM_/DAGSTER_ variables are also set in os.environ for the block, so that
    `dg.DagsterInstance.get()` here reads the stack's instance."""
    broker = f"redis://{services.REDIS_HOST}:6379/{redis_db}"
    backend = f"redis://{services.REDIS_HOST}:6379/{redis_db + 1}"
    services.flush_redis(broker, backend)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml)
    saved = dict(os.environ)
    try:
        with services.temporary_database("as_bench") as postgres:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), saved.get("PYTHONPATH")])),
                "ALPHASWARM_BROKER_URL": broker,
                "ALPHASWARM_RESULT_BACKEND": backend,
                "ALPHASWARM_REDIS_URL": broker,
                "ALPHASWARM_POSTGRES_URL": postgres,
                "ALPHASWARM_STORAGE_DIR": str(workdir / "storage"),
                "ALPHASWARM_METRICS_PORT": str(free_port()),
                "DAGSTER_HOME": str(home),
            }
            os.environ.update(
                {k: v for k, v in env.items() if k.startswith(("ALPHASWARM_", "DAGSTER_"))}
            )
            yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services.flush_redis(broker, backend)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def daemon(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A daemon (`argv`, from the repo) for the block. On exit the processes it started and
    left behind are killed too: a stock `dagster-daemon` SIGTERMed can leave its code server
    running, which would outlive the stack."""
    with background(argv, env, cwd=str(REPO)) as process:
        try:
            yield process
        finally:
            started = descendants(process.pid)
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (the processes of a daemon: code servers, forkserver, runs)."""
    return [pid, *descendants(pid)]


def _stat_fields(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of `pids` and of their children that exited and were waited for
    (utime, stime, cutime, cstime): sampled twice, the difference is the tree's CPU use even
    when processes (a code server restart) came and went in between."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:  # exited since listed
            continue
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # fields 14-17 of stat(5)
    return ticks / CLOCK_TICKS


def uss_bytes(pids: Iterable[int]) -> int:
    """Unique set size of `pids` (Private_Clean + Private_Dirty of smaps_rollup): the memory
    that would be freed if the processes exited."""
    total = 0
    for pid in pids:
        try:
            text = (Path("/proc") / str(pid) / "smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def postgres_connections(postgres_url: str) -> dict[str, int]:
    """Connections to the database of `postgres_url` by application_name ("" when unset)."""
    database = postgres_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(services.POSTGRES_ADMIN, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
                "GROUP BY application_name ORDER BY application_name",
                (database,),
            )
            return {name: count for name, count in cur.fetchall()}
    finally:
        conn.close()


@dataclass(frozen=True)
class ServerConnections:
    """The Postgres server's connection limit and use (all databases: the machine's other
    users count too)."""

    max_connections: int
    reserved: int
    """superuser_reserved_connections + reserved_connections: not for ordinary users."""
    in_use: int

    @property
    def free(self) -> int:
        return self.max_connections - self.reserved - self.in_use


def server_connections() -> ServerConnections:
    """max_connections, the reserved slots and the connections open now (pg_stat_activity,
    client backends) of the machine's Postgres server."""
    conn = psycopg2.connect(services.POSTGRES_ADMIN, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int + "
                "coalesce(current_setting('reserved_connections', true)::int, 0), "
                "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            )
            limit, reserved, in_use = cur.fetchone()
            return ServerConnections(limit, reserved, in_use)
    finally:
        conn.close()


def paper_start(session_id: str, request_id: str, symbol: str = "BTC-USD") -> PaperStart:
    """The paper.start request every session benchmark appends (actor `benchmark`)."""
    return PaperStart(
        schema_version=1,
        type="paper.start",
        request_id=request_id,
        actor="benchmark",
        session_id=session_id,
        symbols=[symbol],
    )
