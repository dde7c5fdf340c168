"""One small, fork-safe, self-healing connection pool per process for the Dagster instance's
Postgres storage.

dagster-postgres gives its run, event log and schedule storages an engine each with a NullPool:
every query opens a Postgres connection (~2-4 ms here, and a backend process forked by the
server). A long-lived process that queries all the time pays that over and over: the daemon
during a burst of queued runs spent 47% of its time in `psycopg2.connect`, a run's process
28% while submitting a 1,000-step fan-out. Here the three storages of every instance in a
process share one engine per database URL (`instance_engine`), whose pool:

- **holds few**: at most `pool_size` idle connections (ALPHASWARM_POSTGRES_POOL_SIZE, default 1);
  concurrent queries beyond that open extra connections that are closed when returned, as
  before. A process that has not queried for IDLE_SECONDS closes its idle connections (an
  idle paper worker pool process, a session's Celery step that reads its run every 10 s), so
  what stays held is one connection per process that queries at least every few seconds.
- **is fork-safe**: a process forked after the pool was used (the launcher's forkserver forks
  run workers, Celery's prefork forks pool processes) starts with an empty pool
  (`os.register_at_fork`, `Engine.dispose(close=False)`): it never uses, nor closes, its
  parent's connections. A connection that reaches another process anyway is discarded
  untouched on checkout (its creator's pid is recorded).
- **heals**: a connection whose server side has gone (Postgres restarted, the backend
  terminated by an administrator or an idle-killer) has its socket readable while idle (the
  server's FATAL message, or EOF); each checkout polls the socket (no round trip, unlike a
  `SELECT 1` pre-ping) and replaces such a connection before it is used. Connections are
  also replaced after RECYCLE_SECONDS.
- **is named**: connections carry `application_name` `alphaswarm-orch <role>` (the process's
  role: daemon, worker, run worker), so `pg_stat_activity` says who holds what.
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from typing import Any

import sqlalchemy
from sqlalchemy import event, exc
from sqlalchemy.pool import QueuePool

IDLE_SECONDS = 5.0
"""Idle connections of a process that has not used its pool for this long are closed."""

RECYCLE_SECONDS = 600
"""A connection is replaced after this long (server-side idle and lifetime limits)."""

APPLICATION_NAME = "alphaswarm-orch"

_engines: weakref.WeakValueDictionary[tuple[str, int], sqlalchemy.Engine] = (
    weakref.WeakValueDictionary()
)
"""This process's engines by (URL, pool size); an engine lives as long as a storage uses it."""
_last_used: weakref.WeakKeyDictionary[sqlalchemy.Engine, list[float]] = weakref.WeakKeyDictionary()
"""When each engine's pool last had a connection returned (monotonic seconds)."""
_lock = threading.Lock()
_role = ""
_reaper_pid: list[int | None] = [None]
"""The process whose reaper thread runs (threads do not survive a fork)."""


def set_process_role(role: str) -> None:
    """Name this process's connections `alphaswarm-orch <role>` in pg_stat_activity."""
    global _role
    _role = role


def application_name() -> str:
    return f"{APPLICATION_NAME} {_role}".strip()[:63]


def instance_engine(url: str, pool_size: int) -> sqlalchemy.Engine:
    """The process's pooled engine for the instance database at `url` (AUTOCOMMIT, as
    dagster-postgres' own engines); created on first use."""
    if pool_size < 1:
        raise ValueError(f"pool_size={pool_size!r}: a pooled engine holds at least 1 connection")
    key = (url, pool_size)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(url, pool_size)
            _engines[key] = engine
        return engine


def _create(url: str, pool_size: int) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=-1,  # never wait for a connection: beyond pool_size, connect as before
        pool_recycle=RECYCLE_SECONDS,
    )
    last_used = [time.monotonic()]
    _last_used[engine] = last_used

    @event.listens_for(engine, "do_connect")
    def name_connection(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("application_name", application_name())

    @event.listens_for(engine, "connect")
    def remember_creator(dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def check_usable(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            # Another process's connection: drop it without closing (that would end the
            # other process's session) and connect anew.
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError(
                f"connection made by process {record.info.get('pid')}, not {os.getpid()}"
            )
        if server_gone(dbapi_connection):
            raise exc.DisconnectionError("the server closed this idle connection")

    @event.listens_for(engine, "checkin")
    def note_use(dbapi_connection: Any, record: Any) -> None:
        last_used[0] = time.monotonic()
        _start_reaper()

    return engine


def server_gone(dbapi_connection: Any) -> bool:
    """Whether an idle psycopg2 connection is unusable: closed, or with something to read.

    A healthy idle connection has nothing pending (every reply was read up to
    ReadyForQuery); the server writes to it unasked only to end it (a FATAL error, EOF). A
    rare asynchronous message (a NOTICE, a changed parameter) also counts: the connection
    is replaced for nothing, which is safe."""
    if dbapi_connection.closed:
        return True
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _start_reaper() -> None:
    """A thread per process that closes the idle connections of unused pools."""
    pid = os.getpid()
    if _reaper_pid[0] == pid:
        return
    with _lock:
        if _reaper_pid[0] == pid:
            return
        _reaper_pid[0] = pid
        threading.Thread(target=_reap, name="alphaswarm-pg-pool-reaper", daemon=True).start()


def _reap() -> None:
    while True:
        time.sleep(IDLE_SECONDS / 2)
        close_idle(IDLE_SECONDS)


def close_idle(idle_seconds: float) -> int:
    """Close the idle connections of every pool of this process not used for `idle_seconds`
    (nothing checked out); returns how many were closed."""
    now = time.monotonic()
    closed = 0
    with _lock:
        engines = list(_engines.values())
    for engine in engines:
        pool = engine.pool
        last_used = _last_used.get(engine, [now])[0]
        if not isinstance(pool, QueuePool) or now - last_used < idle_seconds:
            continue
        idle = pool.checkedin()
        if idle and not pool.checkedout():
            # A query starting meanwhile keeps its connection: dispose only closes the
            # connections in the pool, and the engine continues with a fresh pool.
            engine.dispose()
            closed += idle
    return closed


def held_connections() -> int:
    """Idle connections this process's pools hold now."""
    with _lock:
        engines = list(_engines.values())
    return sum(e.pool.checkedin() for e in engines if isinstance(e.pool, QueuePool))


def _after_fork_in_child() -> None:
    """The child starts with empty pools and no reaper; the parent's connections stay its own."""
    global _lock
    _lock = threading.Lock()  # may have been held by another thread of the parent
    _reaper_pid[0] = None
    for engine in list(_engines.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
