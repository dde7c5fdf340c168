"""Dagster instance storage chosen by the environment contract.

`dagster.yaml` names this class instead of a fixed backend, so the same file serves the
production path (ALPHASWARM_POSTGRES_URL set: dagster-postgres) and the embedded default
(SQLite under ALPHASWARM_STORAGE_DIR). Dagster's CLI reads `dagster.yaml` from the working
directory when DAGSTER_HOME is unset, so a Postgres-only file would break every env-less
command run from the repo root. Workers rehydrate the same class from the instance ref and
resolve it against their own environment, which follows the same contract.

The embedded event log is one SQLite database (`ConsolidatedSqliteEventLogStorage`), not
Dagster's default of one database per run: the ledger mirror reads events by global storage
id, which only a single event table has. Stores created before this layout (a
`history/runs/` directory of per-run shards) keep opening as they were, so nothing in them
is hidden; the mirror then refuses with a message saying how to start a new store.

On Postgres (`PooledPostgresStorage`), dagster-postgres' three storages share the process's
pooled engine (instance_pool.py) instead of opening a connection per query, and a Celery step's
events before its STEP_START commit without waiting for the disk (`before_step_start`);
ALPHASWARM_POSTGRES_POOL_SIZE=0 keeps dagster-postgres' own storage as it is.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from alphaswarm_orch.compat.dagster import (
    INDEXED_EVENT_TYPES,
    ConfigurableClass,
    ConfigurableClassData,
    ConsolidatedSqliteEventLogStorage,
    DagsterSqliteStorage,
    DagsterStorage,
    EventLogStorage,
    RunStorage,
    ScheduleStorage,
    SqliteRunStorage,
    SqliteScheduleStorage,
    insert_and_notify,
    share_storage_engine,
)
from alphaswarm_orch.instance_pool import instance_engine
from alphaswarm_orch.settings import Settings, sqlalchemy_url

PACKAGED_DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")
"""The repository's `dagster.yaml`, shipped in the package (a symlink in the source tree)."""


class EnvironmentStorage(DagsterStorage, ConfigurableClass):
    """Postgres when ALPHASWARM_POSTGRES_URL is set, else SQLite under the storage dir."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> DagsterStorage:
        settings = Settings.from_env()
        if settings.postgres_url:
            url = sqlalchemy_url(settings.postgres_url)
            if not settings.postgres_pool_size:
                return DagsterPostgresStorage(url, inst_data=inst_data)
            return PooledPostgresStorage(url, settings.postgres_pool_size, inst_data=inst_data)
        base_dir = embedded_storage_dir(settings)
        if is_sharded_store(base_dir):
            return DagsterSqliteStorage.from_local(str(base_dir), inst_data=inst_data)
        return EmbeddedSqliteStorage(base_dir, inst_data=inst_data)


class ThreeStorages(DagsterStorage):
    """A DagsterStorage made of a run, an event log and a schedule storage that its subclass
    sets in `__init__` (with `_inst_data`)."""

    _run_storage: RunStorage
    _event_log_storage: EventLogStorage
    _schedule_storage: ScheduleStorage
    _inst_data: ConfigurableClassData | None

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @property
    def event_log_storage(self) -> EventLogStorage:
        return self._event_log_storage

    @property
    def run_storage(self) -> RunStorage:
        return self._run_storage

    @property
    def schedule_storage(self) -> ScheduleStorage:
        return self._schedule_storage


class PooledPostgresStorage(ThreeStorages):
    """dagster-postgres' run, event log and schedule storages on the process's pooled engine
    for `url` (instance_pool.py), its event log being `StepEventLogStorage`."""

    def __init__(
        self, url: str, pool_size: int, inst_data: ConfigurableClassData | None = None
    ) -> None:
        # Each creates its tables if missing, through its own engine; then all use the pool.
        self._run_storage = PostgresRunStorage(url)
        self._event_log_storage = StepEventLogStorage(url)
        self._schedule_storage = PostgresScheduleStorage(url)
        share_storage_engine(
            (self._run_storage, self._event_log_storage, self._schedule_storage),
            instance_engine(url, pool_size),
        )
        self._inst_data = inst_data
        super().__init__()


BEFORE_STEP_START_EVENTS = frozenset(
    {
        dg.DagsterEventType.ENGINE_EVENT,
        dg.DagsterEventType.RESOURCE_INIT_STARTED,
        dg.DagsterEventType.RESOURCE_INIT_SUCCESS,
        dg.DagsterEventType.LOGS_CAPTURED,
    }
)
"""What a step of the Celery executor writes between its delivery and its STEP_START: the
worker's "Executing step" engine event, its IO manager's initialisation, log capture."""

_step = threading.local()


@contextmanager
def before_step_start() -> Iterator[None]:
    """Until this thread stores an event of another kind than BEFORE_STEP_START_EVENTS (the
    STEP_START, or a failure), its events commit without waiting for their WAL flush: the
    step's first events no longer wait for the disk each (2-4 ms apiece here). Postgres' WAL
    is one ordered log, so the next synchronous commit (the STEP_START's) makes them durable
    with it, and the WAL writer flushes them within a fraction of a second anyway. They are
    committed either way: seen by every reader, and kept if this process dies."""
    _step.before_start = True
    try:
        yield
    finally:
        _step.before_start = False


class StepEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log, storing an event in one round trip instead of two
    (compat.insert_and_notify), and a step's first events without waiting for the disk
    (`before_step_start`)."""

    def store_event(self, event: dg.EventLogEntry) -> None:
        if event.dagster_event_type in INDEXED_EVENT_TYPES:
            _step.before_start = False
            super().store_event(event)  # it also writes the asset tables, with the event's id
            return
        asynchronous = getattr(_step, "before_start", False)
        if asynchronous and event.dagster_event_type not in BEFORE_STEP_START_EVENTS:
            _step.before_start = asynchronous = False
        statement = insert_and_notify(self.prepare_insert_event(event), asynchronous=asynchronous)
        with self.index_connection() as conn:
            conn.execute(statement)


def prepare_dagster_home(home: Path) -> str | None:
    """Create the instance dir the CLI uses when DAGSTER_HOME is unset, with the project's
    `dagster.yaml` (package data), unless one is there already. Written atomically: several
    processes may start on a fresh storage dir at once.

    Returns a note for the user when the dir holds runs of Dagster's own default layout
    (made by `alphaswarm-orch run` before it wrote `dagster.yaml`), which the project's
    instance does not list."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists():
        return None
    text = PACKAGED_DAGSTER_YAML.read_text()
    with tempfile.NamedTemporaryFile("w", dir=home, suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, target)
    if (home / "history" / "runs.db").exists():
        return (
            f"note: wrote the project's dagster.yaml to {home}; runs made before it are in "
            f"{home / 'history'} (Dagster's default layout) and are no longer listed: the "
            f"instance keeps runs and their event log in {home / 'storage'} now. Delete "
            f"{home / 'history'} when you no longer need them."
        )
    return None


def embedded_storage_dir(settings: Settings) -> Path:
    """Where the embedded instance keeps runs, events and schedules."""
    return settings.dagster_home / "storage"


def is_sharded_store(base_dir: Path) -> bool:
    """A store made by the earlier layout: Dagster's per-run event log shards."""
    return any((base_dir / "history" / "runs").glob("*.db"))


class EmbeddedSqliteStorage(ThreeStorages):
    """Dagster's SQLite run and schedule storage with one consolidated event log, whose
    storage ids are global (what the ledger mirror reads by).

    Files: `history/runs.db`, `history/event_log.db`, `schedules/schedules.db`. Several
    processes open a fresh store at once (`alphaswarm-orch dev` starts the webserver and the
    daemon together); creating the databases happens under a file lock, since the
    consolidated event log's own first-open check is not safe against a concurrent creator.
    """

    def __init__(self, base_dir: Path, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        history = base_dir / "history"
        with _creation_lock(base_dir):
            self._run_storage = SqliteRunStorage.from_local(str(history))
            self._event_log_storage = ConsolidatedSqliteEventLogStorage(str(history))
            self._schedule_storage = SqliteScheduleStorage.from_local(str(base_dir / "schedules"))
        self._inst_data = inst_data
        super().__init__()

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            if not storage.has_instance:
                storage.register_instance(instance)

    def dispose(self) -> None:
        self._event_log_storage.dispose()
        self._run_storage.dispose()
        self._schedule_storage.dispose()


@contextmanager
def _creation_lock(base_dir: Path) -> Iterator[None]:
    base_dir.mkdir(parents=True, exist_ok=True)
    with open(base_dir / ".create.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
