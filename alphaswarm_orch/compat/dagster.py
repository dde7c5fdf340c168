"""Dagster internals the code location builds on (not in `dagster`'s public API): instance
storage classes, the run launcher and compute-log bases, the executor's plan machinery, the
run and step entry points, the daemon's sensor loop and daemon factory, and a run storage hook.

Pinned with the Dagster family in pyproject.toml; tests/compat/test_dagster.py holds the
contract each name is used under.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import dagster as dg
from dagster._cli import api as _run_api
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.events import EngineEventData
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
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage, EventLogStorage
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._core.storage.runs import RunStorage, SqliteRunStorage
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._core.storage.schedules import ScheduleStorage, SqliteScheduleStorage
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


def evaluate_every_loop(sensor_names: Collection[str]) -> None:
    """Evaluate the sensors named `sensor_names` on every loop of this process's sensor daemon,
    whatever their `minimum_interval_seconds` (others keep theirs).

    The sensor daemon asks `sensor.is_under_min_interval(state, sensor)`, a module function
    looked up at call time, before submitting a sensor's tick and again when the tick starts.
    A sensor's tick is still never run twice at once (the loop skips a sensor in flight).
    """
    stock = getattr(_sensor_daemon.is_under_min_interval, "stock", None)
    stock = stock or _sensor_daemon.is_under_min_interval
    names = frozenset(sensor_names)

    def is_under_min_interval(state: Any, remote_sensor: Any, *args: Any, **kwargs: Any) -> bool:
        if remote_sensor.name in names:
            return False
        return stock(state, remote_sensor, *args, **kwargs)

    is_under_min_interval.stock = stock  # type: ignore[attr-defined]
    _sensor_daemon.is_under_min_interval = is_under_min_interval


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
    "IO_TYPE_EXTENSION",
    "RUN_WORKER_MODULES",
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
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "StepFailureData",
    "StepRetryData",
    "UnresolvedAssetJobDefinition",
    "WorkerStatus",
    "answer_run_columns_check",
    "cache_run_columns_check",
    "capture_interrupts",
    "create_execution_plan",
    "ensure_file",
    "evaluate_every_loop",
    "execute_plan_iterator",
    "execute_sensor_iteration",
    "get_retries_config",
    "import_run_worker_modules",
    "is_valid_cron_string",
    "pack_value",
    "prefer_daemons",
    "run_columns_check",
    "run_command_body",
    "run_daemon",
    "sensor_loop_seconds",
    "serializable_error_info_from_exc_info",
    "set_sensor_loop_seconds",
    "touch_file",
    "unpack_value",
]
