"""Dagster internals the code location builds on (not in `dagster`'s public API): instance
storage classes, the run launcher and compute-log bases, the executor's plan machinery, the
run and step entry points, the daemon's sensor loop and daemon factory, and a run storage hook.

Pinned with the Dagster family in pyproject.toml; tests/compat/test_dagster.py holds the
contract each name is used under.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import dagster as dg
import sqlalchemy
from dagster._cli import api as _run_api
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EngineEventData
from dagster._core.execution import context_creation_job as _context_creation_job
from dagster._core.execution.api import create_execution_plan, execute_plan_iterator
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.instance_concurrency_context import (
    InstanceConcurrencyContext,
)
from dagster._core.execution.plan.objects import StepFailureData, StepRetryData
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext, ResumeRunContext, RunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_representation.grpc_server_registry import GrpcServerRegistry
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log import (
    ConsolidatedSqliteEventLogStorage,
    EventLogStorage,
    SqlEventLogStorageTable,
)
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._core.storage.runs import RunStorage, SqliteRunStorage
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._core.storage.schedules import ScheduleStorage, SqliteScheduleStorage
from dagster._core.storage.schedules.sql_schedule_storage import SqlScheduleStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._daemon import controller as _daemon_controller
from dagster._daemon import sensor as _sensor_daemon
from dagster._daemon.cli import run_command as _daemon_run_command
from dagster._daemon.daemon import DagsterDaemon, SensorDaemon, SpanMarker
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._daemon.utils import DaemonErrorCapture
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, pack_value, unpack_value
from dagster._utils import ensure_file, touch_file
from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info
from dagster._utils.interrupts import capture_interrupts
from dagster._utils.schedules import is_valid_cron_string
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.event_log.event_log import CHANNEL_NAME as POSTGRES_EVENT_CHANNEL

RUN_WORKER_MODULES = (
    "dagster._cli.api",
    "dagster._core.execution.api",
    "dagster._core.instance.factory",
    "dagster._core.storage.root",
    "dagster._core.system_config.composite_descent",
    "dagster._core.workspace.autodiscovery",
    "dagster._daemon.controller",
    "dagster._utils.test.definitions",
)
"""Dagster modules a run worker imports after the fork (the launcher's forkserver preloads)."""


_resolved_configs: dict[tuple[int, str], tuple[Any, ResolvedRunConfig]] = {}
_resolved_lock = threading.Lock()
RESOLVED_CONFIGS = 4
"""Resolved run configs a process keeps once memoized (a few runs' worth)."""


def memoize_step_run_config() -> None:
    """Resolve a job's run config once per process, not once per step.

    Dagster's `create_context_creation_data` (every `execute_plan_iterator`, so every step
    on a worker) calls `ResolvedRunConfig.build(job_def, run_config)`, which walks every op
    of the job: a step of a 1,000-op job paid for all 1,000. The result depends only on the
    job definition and the run config, so it is kept (bounded) by (job definition, config)."""
    module = _context_creation_job
    if getattr(module.ResolvedRunConfig, "_alphaswarm_memo", False):
        return

    class _Memoized:
        _alphaswarm_memo = True

        @staticmethod
        def build(job_def: Any, run_config: Any = None) -> ResolvedRunConfig:
            key = (id(job_def), json.dumps(run_config, sort_keys=True, default=repr))
            with _resolved_lock:
                hit = _resolved_configs.get(key)
            if hit is not None and hit[0] is job_def:
                return hit[1]
            resolved = ResolvedRunConfig.build(job_def, run_config)
            with _resolved_lock:
                _resolved_configs[key] = (job_def, resolved)  # holds job_def: its id stays
                while len(_resolved_configs) > RESOLVED_CONFIGS:
                    del _resolved_configs[next(iter(_resolved_configs))]
            return resolved

    module.ResolvedRunConfig = _Memoized  # type: ignore[misc,assignment]


def set_sensor_loop_seconds(seconds: float) -> None:
    """Set the daemon's sensor loop period (5 s in Dagster, with no setting for it): the loop
    reads the module constant on every iteration, so setting it before the daemon starts in
    this process takes effect."""
    # Declared an int; the loop only subtracts and compares it, so a fraction works.
    _sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


def sensor_loop_seconds() -> float:
    """The daemon's sensor loop period now in effect in this process."""
    return float(_sensor_daemon.MIN_INTERVAL_LOOP_TIME)


def run_daemon(args: Sequence[str], prog_name: str) -> None:
    """`dagster-daemon run ARGS`, in this process (so the sensor loop period set here holds).
    Its module is imported with this one: a daemon that imported it only here would die of
    a SIGTERM during the import, before Dagster's handler is in place (forkserver orphaned)."""
    _daemon_run_command.main(args=list(args), prog_name=prog_name)


def run_command_body(resume: bool) -> Callable[..., Any]:
    """What `dagster api execute_run` (or `resume_run`) executes, for a forked run worker."""
    body: Callable[..., Any] = (
        _run_api._resume_run_command_body if resume else _run_api._execute_run_command_body
    )
    return body


def import_run_worker_modules() -> None:
    """Import RUN_WORKER_MODULES (what a forkserver holds so its forks need not)."""
    for name in RUN_WORKER_MODULES:
        importlib.import_module(name)


DaemonFactory = Callable[[str, dg.DagsterInstance], "DagsterDaemon[Any] | None"]


def prefer_daemons(factory: DaemonFactory) -> None:
    """Have `dagster-daemon run` in this process build its daemons with `factory` first.

    The controller builds each daemon type through `controller.create_daemon_of_type`, a
    module function looked up at call time; `factory` returns a daemon or None (Dagster's
    own then). Call before the daemon starts.
    """
    stock = getattr(_daemon_controller.create_daemon_of_type, "stock", None)
    stock = stock or _daemon_controller.create_daemon_of_type

    def create_daemon_of_type(daemon_type: str, instance: dg.DagsterInstance) -> DagsterDaemon[Any]:
        return factory(daemon_type, instance) or stock(daemon_type, instance)

    create_daemon_of_type.stock = stock  # type: ignore[attr-defined]
    _daemon_controller.create_daemon_of_type = create_daemon_of_type


def evaluate_when_due(
    sensor_names: Collection[str], due: Callable[[str, float | None], bool]
) -> None:
    """Decide for the sensors named `sensor_names`, in this process's sensor daemon, whether a
    loop evaluates them: `due(name, last)` with `last` the time (epoch seconds) the sensor's
    last tick started or ended, None if it never ticked, instead of their
    `minimum_interval_seconds` (others keep theirs).

    The sensor daemon asks `sensor.is_under_min_interval(state, sensor)`, a module function
    looked up at call time, before submitting a sensor's tick and again when the tick starts.
    A sensor's tick is still never run twice at once (the loop skips a sensor in flight).
    """
    stock = getattr(_sensor_daemon.is_under_min_interval, "stock", None)
    stock = stock or _sensor_daemon.is_under_min_interval
    names = frozenset(sensor_names)

    def is_under_min_interval(state: Any, remote_sensor: Any, *args: Any, **kwargs: Any) -> bool:
        if remote_sensor.name in names:
            elapsed = _sensor_daemon.get_elapsed(state)
            return not due(remote_sensor.name, None if elapsed is None else time.time() - elapsed)
        return stock(state, remote_sensor, *args, **kwargs)

    is_under_min_interval.stock = stock  # type: ignore[attr-defined]
    _sensor_daemon.is_under_min_interval = is_under_min_interval


def keep_live_code_servers() -> None:
    """Have this process's daemon keep its code server across its workspace refreshes.

    dagster-daemon refreshes its workspace every `controller.RELOAD_WORKSPACE_INTERVAL` (60 s)
    by dropping every entry of its gRPC server registry (`clear_all_grpc_endpoints`) first, so
    each refresh starts a fresh code server process (importing dagster and the code location,
    ~3 s of CPU, a third of an idle daemon's). Here that call drops only the entries whose
    server is gone: its process exited, it does not answer a ping, or it had failed to load
    (retried, as Dagster does); the refresh then reloads the snapshots from the live server.
    Code changes therefore need a daemon restart (as the run launcher's forkserver does).
    """
    if getattr(GrpcServerRegistry.clear_all_grpc_endpoints, "keeps_live", False):
        return

    def clear_all_grpc_endpoints(self: GrpcServerRegistry) -> None:
        with self._lock:
            entries = dict(self._active_entries)
        for origin_id, entry in entries.items():
            if not _code_server_alive(getattr(entry, "process", None)):
                with self._lock:
                    if self._active_entries.get(origin_id) is entry:
                        del self._active_entries[origin_id]

    clear_all_grpc_endpoints.keeps_live = True  # type: ignore[attr-defined]
    GrpcServerRegistry.clear_all_grpc_endpoints = clear_all_grpc_endpoints  # type: ignore[method-assign]


def _code_server_alive(process: Any) -> bool:
    if process is None or process.server_process.poll() is not None:
        return False
    try:
        process.create_client().ping("")
    except Exception:  # unreachable or hung (Dagster's gRPC timeout): start a new one
        return False
    return True


def share_sensor_instances() -> None:
    """Give the sensor evaluations of this process one DagsterInstance per instance ref.

    A code server evaluates each sensor tick in a `SensorEvaluationContext` built from the
    daemon's instance ref; its `instance` property (also used to build the tick's resources)
    makes a new DagsterInstance from that ref on every evaluation and disposes it at the end:
    storage set up and schema checks, ~40 ms of each request sensor tick here before the
    sensor reads a thing. Here the first evaluation's instance is kept for the process's life
    and the next evaluations with an equal ref use it (a context given an instance, as tests
    build them, keeps its own). Instances are thread-safe as the webserver uses them.
    """
    stock: Any = dg.SensorEvaluationContext.__dict__["instance"]  # the property object
    if getattr(stock.fget, "shared", False):
        return
    lock = threading.Lock()
    shared: list[tuple[InstanceRef, dg.DagsterInstance]] = []

    def instance(self: dg.SensorEvaluationContext) -> dg.DagsterInstance:
        ref = self._instance_ref
        if self._instance is None and ref is not None:
            with lock:
                found = next((kept for kept_ref, kept in shared if kept_ref == ref), None)
                if found is None:
                    found = dg.DagsterInstance.from_ref(ref)
                    cache_run_columns_check(found)  # the request sensors read runs
                    shared.append((ref, found))
            self._instance = found
        result: dg.DagsterInstance = stock.fget(self)
        return result

    instance.shared = True  # type: ignore[attr-defined]
    dg.SensorEvaluationContext.instance = property(instance)  # type: ignore[method-assign,assignment]


def cache_run_columns_check(instance: dg.DagsterInstance) -> None:
    """Check the runs table's columns once for `instance`, not on every run read.

    SQL run storage asks `has_run_stats_index_cols()` on every `get_run_records` (so on every
    `get_run_by_id`): a schema reflection, two catalog queries. On a Celery worker that was
    5-7 ms of the 20 ms before a step starts. The answer changes only with a schema migration
    (`dagster instance migrate`, which is followed by a restart); until then a cached "no"
    only means the slower query Dagster already uses for an unmigrated table. Idempotent.
    """
    storage = instance.run_storage
    if isinstance(storage, SqlRunStorage) and "has_run_stats_index_cols" not in vars(storage):
        check = type(storage).has_run_stats_index_cols
        storage.has_run_stats_index_cols = functools.cache(  # type: ignore[method-assign]
            functools.partial(check, storage)
        )


SCHEDULE_SCHEMA_CHECKS = (
    "has_instigators_table",
    "_has_instigators_table",
    "has_secondary_index_table",
    "has_built_index",
    "_has_asset_daemon_asset_evaluations_table",
)
"""SqlScheduleStorage methods that inspect the schema (`cache_schedule_schema_checks`)."""


def cache_schedule_schema_checks(instance: dg.DagsterInstance) -> None:
    """Answer `instance`'s schedule storage schema checks once, not on every call.

    SQL schedule storage reflects the table names (`has_instigators_table`,
    `has_secondary_index_table`) or reads the secondary index table (`has_built_index`) on
    every instigator state read or write: a sensor tick of the daemon made about ten such
    checks, each with its own connection (a third of the tick thread's time in a profile of
    request pickup). The answers change only with a schema migration (`dagster instance
    migrate`, followed by a restart), as for `cache_run_columns_check`; the connection a
    check is given is not used once its answer is known.
    """
    storage = instance.schedule_storage
    if not isinstance(storage, SqlScheduleStorage) or getattr(storage, "_checks_cached", False):
        return
    answers: dict[tuple[str, tuple[Any, ...]], Any] = {}
    cls = type(storage)

    def cached(name: str, key: str) -> Callable[..., Any]:
        method = getattr(cls, name)
        with_connection = name.startswith("_")

        def check(*args: Any) -> Any:
            index = (key, () if with_connection else args)
            if index not in answers:
                answers[index] = method(storage, *args)
            return answers[index]

        return check

    for name in SCHEDULE_SCHEMA_CHECKS:
        # has_instigators_table and _has_instigators_table are one question
        setattr(storage, name, cached(name, name.lstrip("_")))
    storage._checks_cached = True  # type: ignore[attr-defined]


PostgresStoragePart = PostgresRunStorage | PostgresEventLogStorage | PostgresScheduleStorage


def share_storage_engine(
    storages: Collection[PostgresStoragePart], engine: sqlalchemy.Engine
) -> None:
    """Have dagster-postgres run, event log and schedule `storages` query through `engine`.

    dagster-postgres gives each storage its own NullPool engine (a new connection per
    query); every query of theirs goes through the storage's `_engine`, which is only
    replaced by `optimize_for_webserver` (a pool per storage, for the webserver). The
    engine passed must be AUTOCOMMIT, as theirs are.
    """
    for storage in storages:
        storage._engine = engine


INDEXED_EVENT_TYPES = frozenset(ASSET_EVENTS | ASSET_CHECK_EVENTS)
"""Event types dagster-postgres' `store_event` also writes to the asset (check) tables."""


def insert_and_notify(insert_event: Any, *, asynchronous: bool = False) -> Any:
    """dagster-postgres' `store_event` for an event outside INDEXED_EVENT_TYPES, as one
    statement (one round trip, not two): the row `insert_event` (the storage's
    `prepare_insert_event`) inserts, then `NOTIFY run_events, '<run_id>_<id>'` (dagster-postgres
    keeps the notification for older readers; this release polls).

    With `asynchronous`, the statement's own transaction commits without waiting for its
    WAL flush (`set_config('synchronous_commit', 'off', true)`: this transaction only).
    """
    table = SqlEventLogStorageTable
    inserted = insert_event.returning(table.c.run_id, table.c.id).cte("inserted")
    payload = inserted.c.run_id + "_" + sqlalchemy.cast(inserted.c.id, sqlalchemy.Text)
    columns: list[Any] = [
        inserted.c.run_id,
        inserted.c.id,
        sqlalchemy.func.pg_notify(POSTGRES_EVENT_CHANNEL, payload),
    ]
    if not asynchronous:
        return sqlalchemy.select(*columns)
    commit = sqlalchemy.select(
        sqlalchemy.func.set_config("synchronous_commit", "off", True).label("mode")
    ).cte("commit_mode")
    joined = inserted.join(commit, sqlalchemy.true())
    return sqlalchemy.select(*columns, commit.c.mode).select_from(joined)


def run_columns_check(instance: dg.DagsterInstance) -> bool | None:
    """The runs table's columns check of `instance` (cached on it, see
    cache_run_columns_check); None if its run storage is not SQL."""
    cache_run_columns_check(instance)
    storage = instance.run_storage
    return storage.has_run_stats_index_cols() if isinstance(storage, SqlRunStorage) else None


def answer_run_columns_check(instance: dg.DagsterInstance, answer: bool) -> None:
    """Have `instance`'s SQL run storage answer the columns check with `answer` (another
    instance's on the same database, see run_columns_check) instead of reflecting the schema:
    a run worker's first run read skips the reflection (20-160 ms, and 2-3 MiB of a forked
    process's pages)."""
    storage = instance.run_storage
    if isinstance(storage, SqlRunStorage):
        storage.has_run_stats_index_cols = lambda: answer  # type: ignore[method-assign]


__all__ = [
    "INDEXED_EVENT_TYPES",
    "IO_TYPE_EXTENSION",
    "POSTGRES_EVENT_CHANNEL",
    "RUN_WORKER_MODULES",
    "SCHEDULE_SCHEMA_CHECKS",
    "ActiveExecution",
    "BaseAssetGraph",
    "CapturedLogContext",
    "CheckRunHealthResult",
    "ComputeIOType",
    "ConfigurableClass",
    "ConfigurableClassData",
    "ConsolidatedSqliteEventLogStorage",
    "DaemonErrorCapture",
    "DagsterDaemon",
    "DagsterLaunchFailedError",
    "DagsterSqliteStorage",
    "DagsterStorage",
    "EngineEventData",
    "EventLogStorage",
    "ExecuteStepArgs",
    "ExecutionPlan",
    "ExecutionStep",
    "InstanceConcurrencyContext",
    "InstanceRef",
    "KnownExecutionState",
    "LaunchRunContext",
    "LocalComputeLogManager",
    "PlanOrchestrationContext",
    "QueuedRunCoordinatorDaemon",
    "ReconstructableJob",
    "ReconstructableRepository",
    "ResolvedRunConfig",
    "ResumeRunContext",
    "RetryMode",
    "RunLauncher",
    "RunStorage",
    "ScheduleStorage",
    "SensorDaemon",
    "SerializableErrorInfo",
    "SpanMarker",
    "SqlRunStorage",
    "SqlScheduleStorage",
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "StepFailureData",
    "StepRetryData",
    "UnresolvedAssetJobDefinition",
    "WorkerStatus",
    "answer_run_columns_check",
    "cache_run_columns_check",
    "cache_schedule_schema_checks",
    "capture_interrupts",
    "create_execution_plan",
    "ensure_file",
    "evaluate_when_due",
    "execute_plan_iterator",
    "execute_sensor_iteration",
    "get_retries_config",
    "import_run_worker_modules",
    "insert_and_notify",
    "is_valid_cron_string",
    "keep_live_code_servers",
    "memoize_step_run_config",
    "pack_value",
    "prefer_daemons",
    "run_columns_check",
    "run_command_body",
    "run_daemon",
    "sensor_loop_seconds",
    "serializable_error_info_from_exc_info",
    "set_sensor_loop_seconds",
    "share_sensor_instances",
    "share_storage_engine",
    "touch_file",
    "unpack_value",
]
