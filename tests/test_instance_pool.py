"""The instance's Postgres storage on one pooled engine per process (instance_pool.py): what
it holds, real forks, a terminated backend, idle release, and the step-start commits.

Real Postgres throughout: each test has its own throw-away database, so pg_stat_activity on
it shows exactly the connections the code under test holds.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
from dagster_postgres import DagsterPostgresStorage

from alphaswarm_orch import instance_pool
from alphaswarm_orch.compat.dagster import EngineEventData
from alphaswarm_orch.instance import (
    EmbeddedSqliteStorage,
    EnvironmentStorage,
    PooledPostgresStorage,
    before_step_start,
)
from alphaswarm_orch.instance_pool import close_idle, instance_engine, set_process_role
from tests.support import services
from tests.support.runs import wait_for

pytestmark = pytest.mark.integration


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def backends(url: str) -> list[tuple[int, str]]:
    """(backend pid, application_name) of every client connection to `url`'s database."""
    conn = psycopg2.connect(services.POSTGRES_ADMIN, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE datname = %s AND backend_type = 'client backend'",
                (_database(url),),
            )
            return sorted(cur.fetchall())
    finally:
        conn.close()


def terminate(pid: int) -> None:
    conn = psycopg2.connect(services.POSTGRES_ADMIN, connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        conn.close()


def backend_pid(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one())


def storage_from_env(monkeypatch: pytest.MonkeyPatch, url: str, pool: str | None = None):
    """What `dagster.yaml`'s EnvironmentStorage builds in a process with this environment."""
    monkeypatch.setenv("ALPHASWARM_POSTGRES_URL", url)
    if pool is None:
        monkeypatch.delenv("ALPHASWARM_POSTGRES_POOL_SIZE", raising=False)
    else:
        monkeypatch.setenv("ALPHASWARM_POSTGRES_POOL_SIZE", pool)
    return EnvironmentStorage.from_config_value(None, {})  # type: ignore[arg-type]


def engine_event(run_id: str, event_type: dg.DagsterEventType, step: str = "s") -> dg.EventLogEntry:
    data = (
        None
        if event_type in (dg.DagsterEventType.LOGS_CAPTURED, dg.DagsterEventType.STEP_START)
        else EngineEventData()
    )
    return dg.EventLogEntry(
        error_info=None,
        level=10,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=dg.DagsterEvent(
            event_type_value=event_type.value,
            job_name="pool_job",
            step_key=step,
            event_specific_data=data,
        ),
    )


def read_run(storage, run_id: str) -> dg.DagsterRun | None:
    runs = storage.run_storage.get_runs(dg.RunsFilter(run_ids=[run_id]))
    return runs[0] if runs else None


def exercise(storage, run_id: str) -> None:
    """Queries on all three storages, as a run, its steps and the daemon make them."""
    storage.run_storage.add_run(dg.DagsterRun(job_name="pool_job", run_id=run_id))
    assert read_run(storage, run_id) is not None
    storage.event_log_storage.store_event(engine_event(run_id, dg.DagsterEventType.ENGINE_EVENT))
    assert len(storage.event_log_storage.get_logs_for_run(run_id)) == 1
    assert storage.schedule_storage.all_instigator_state() == []


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with services.temporary_database("as_pool") as url:
        yield url


def test_the_three_storages_share_one_held_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_from_env(monkeypatch, postgres_url)
    assert isinstance(storage, PooledPostgresStorage)
    engine = instance_engine(postgres_url, 1)
    connects: list[int] = []
    sqlalchemy.event.listen(engine, "connect", lambda *_: connects.append(1))
    exercise(storage, str(uuid.uuid4()))
    held = backend_pid(engine)
    for _ in range(10):
        exercise(storage, str(uuid.uuid4()))
    # Sixty-odd queries over run, event log and schedule storage: one connection, kept.
    assert len(connects) <= 1
    assert backends(postgres_url) == [(held, "alphaswarm-orch")]
    assert backend_pid(engine) == held
    # A second instance in the process uses the same pool.
    exercise(storage_from_env(monkeypatch, postgres_url), str(uuid.uuid4()))
    assert [pid for pid, _ in backends(postgres_url)] == [held]


def test_pool_size_zero_keeps_dagster_postgres_connection_per_query(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_from_env(monkeypatch, postgres_url, pool="0")
    assert type(storage) is DagsterPostgresStorage
    exercise(storage, str(uuid.uuid4()))
    assert backends(postgres_url) == []


def test_the_embedded_default_stays_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHASWARM_POSTGRES_URL", raising=False)
    monkeypatch.setenv("ALPHASWARM_STORAGE_DIR", str(tmp_path))
    storage = EnvironmentStorage.from_config_value(None, {})  # type: ignore[arg-type]
    assert isinstance(storage, EmbeddedSqliteStorage)
    exercise(storage, str(uuid.uuid4()))
    assert (tmp_path / "dagster_home" / "storage" / "history" / "runs.db").exists()


def test_connections_are_named_by_the_process_role(postgres_url: str) -> None:
    set_process_role("test role")
    try:
        storage = PooledPostgresStorage(postgres_url, 1)
        exercise(storage, str(uuid.uuid4()))
        assert [name for _, name in backends(postgres_url)] == ["alphaswarm-orch test role"]
    finally:
        set_process_role("")


def _child(run) -> None:
    """Run `run()` in a forked child; raise here with its error if it fails."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        os.close(read)
        code = 0
        try:
            os.write(write, repr(run()).encode())
        except BaseException as exc:
            os.write(write, f"child failed: {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def test_a_forked_child_never_uses_or_closes_its_parents_connection(postgres_url: str) -> None:
    storage = PooledPostgresStorage(postgres_url, 1)
    engine = instance_engine(postgres_url, 1)
    run_id = str(uuid.uuid4())
    exercise(storage, run_id)
    parents = backend_pid(engine)
    parents_pool = engine.pool

    def in_child() -> int:
        # The child's engine starts with a pool of its own (at fork) ...
        assert engine.pool is not parents_pool, "the child kept its parent's pool"
        mine = backend_pid(engine)
        for _ in range(20):
            assert read_run(storage, run_id) is not None
        # ... and a connection of the parent's reached anyway is replaced, not used.
        with parents_pool.connect() as reached, reached.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != parents, "the child used its parent's connection"
        # Closing everything the child's pools hold must not reach the parent's connection.
        parents_pool.dispose()
        engine.dispose()
        close_idle(0)
        return mine

    childs = int(_child(in_child))
    assert childs != parents
    # The parent's connection was neither used nor closed by the child: same backend, alive.
    assert backend_pid(engine) == parents
    exercise(storage, str(uuid.uuid4()))
    assert backend_pid(engine) == parents


def test_a_query_after_its_backend_was_terminated_uses_a_new_connection(
    postgres_url: str,
) -> None:
    storage = PooledPostgresStorage(postgres_url, 1)
    engine = instance_engine(postgres_url, 1)
    run_id = str(uuid.uuid4())
    exercise(storage, run_id)
    held = backend_pid(engine)
    # The same with a plain pooled engine: its held connection is dead after the terminate.
    plain = sqlalchemy.create_engine(postgres_url, pool_size=1)
    plains = backend_pid(plain)

    terminate(held)
    terminate(plains)
    wait_for(
        lambda: not {held, plains} & {pid for pid, _ in backends(postgres_url)},
        10,
        "the terminated backends to exit",
    )
    assert read_run(storage, run_id) is not None
    storage.event_log_storage.store_event(engine_event(run_id, dg.DagsterEventType.ENGINE_EVENT))
    assert backend_pid(engine) != held
    with pytest.raises(sqlalchemy.exc.OperationalError):
        backend_pid(plain)
    plain.dispose()


def test_idle_connections_are_closed_and_reopened_when_needed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instance_pool, "IDLE_SECONDS", 0.5)
    storage = PooledPostgresStorage(postgres_url, 1)
    run_id = str(uuid.uuid4())
    exercise(storage, run_id)
    assert len(backends(postgres_url)) == 1
    wait_for(lambda: backends(postgres_url) == [], 20, "the reaper to close the idle connection")
    assert read_run(storage, run_id) is not None
    assert len(backends(postgres_url)) == 1


def test_a_steps_events_before_its_start_commit_without_waiting_for_the_disk(
    postgres_url: str,
) -> None:
    storage = PooledPostgresStorage(postgres_url, 1)
    statements: list[str] = []

    def record(conn, cursor, statement: str, *_) -> None:
        if "event_logs" in statement:
            statements.append(statement)

    sqlalchemy.event.listen(instance_engine(postgres_url, 1), "before_cursor_execute", record)
    run_id = str(uuid.uuid4())
    kinds = [
        dg.DagsterEventType.ENGINE_EVENT,  # the worker's "Executing step"
        dg.DagsterEventType.RESOURCE_INIT_STARTED,
        dg.DagsterEventType.RESOURCE_INIT_SUCCESS,
        dg.DagsterEventType.LOGS_CAPTURED,
        dg.DagsterEventType.STEP_START,  # durable, and with it the ones before
        dg.DagsterEventType.ENGINE_EVENT,  # after the start: durable each
    ]
    with before_step_start():
        for kind in kinds:
            storage.event_log_storage.store_event(engine_event(run_id, kind))
    storage.event_log_storage.store_event(engine_event(run_id, dg.DagsterEventType.ENGINE_EVENT))
    asynchronous = ["set_config" in statement for statement in statements]
    assert asynchronous == [True, True, True, True, False, False, False]
    logs = storage.event_log_storage.get_logs_for_run(run_id)
    stored = [record.dagster_event.event_type for record in logs]
    assert stored == [*kinds, dg.DagsterEventType.ENGINE_EVENT]


def test_asset_events_still_update_the_asset_tables(postgres_url: str) -> None:
    storage = PooledPostgresStorage(postgres_url, 1)
    run_id = str(uuid.uuid4())
    key = dg.AssetKey(["pool", "asset"])
    with dg.DagsterInstance.ephemeral() as scratch:
        scratch.report_runless_asset_event(dg.AssetMaterialization(key))
        record = scratch.fetch_materializations(key, limit=1).records[0]
    entry = record.event_log_entry._replace(run_id=run_id)
    with before_step_start():
        storage.event_log_storage.store_event(entry)
    latest = storage.event_log_storage.get_latest_materialization_events([key])[key]
    assert latest is not None and latest.run_id == run_id
