"""Dagster internals the code location builds on (not in `dagster`'s public API).

Pinned with the Dagster family in pyproject.toml; tests/compat/test_dagster.py holds the
contract each name is used under.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import dagster as dg
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._daemon import controller as _daemon_controller
from dagster._daemon import sensor as _sensor_daemon
from dagster._daemon.daemon import DagsterDaemon, SensorDaemon, SpanMarker
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._daemon.utils import DaemonErrorCapture
from dagster._utils.error import serializable_error_info_from_exc_info

DaemonFactory = Callable[[str, dg.DagsterInstance], DagsterDaemon | None]


def prefer_daemons(factory: DaemonFactory) -> None:
    """Have `dagster-daemon run` in this process build its daemons with `factory` first.

    The controller builds each daemon type through `controller.create_daemon_of_type`, a
    module function looked up at call time; `factory` returns a daemon or None (Dagster's
    own then). Call before the daemon starts.
    """
    stock = getattr(_daemon_controller.create_daemon_of_type, "stock", None)
    stock = stock or _daemon_controller.create_daemon_of_type

    def create_daemon_of_type(daemon_type: str, instance: dg.DagsterInstance) -> DagsterDaemon:
        return factory(daemon_type, instance) or stock(daemon_type, instance)

    create_daemon_of_type.stock = stock  # type: ignore[attr-defined]
    _daemon_controller.create_daemon_of_type = create_daemon_of_type


def set_sensor_loop_seconds(seconds: float) -> None:
    """Set the daemon's sensor loop period (5 s in Dagster, with no setting for it): the loop
    reads the module constant on every iteration, so setting it before the daemon starts in
    this process takes effect."""
    _sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds


def sensor_loop_seconds() -> float:
    """The daemon's sensor loop period now in effect in this process."""
    return float(_sensor_daemon.MIN_INTERVAL_LOOP_TIME)


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
    only means the slower query Dagster already uses for an unmigrated table.
    """
    storage = instance.run_storage
    if isinstance(storage, SqlRunStorage):
        check = type(storage).has_run_stats_index_cols
        storage.has_run_stats_index_cols = functools.cache(  # type: ignore[method-assign]
            functools.partial(check, storage)
        )


__all__ = [
    "DaemonErrorCapture",
    "DagsterDaemon",
    "QueuedRunCoordinatorDaemon",
    "SensorDaemon",
    "SpanMarker",
    "SqlRunStorage",
    "cache_run_columns_check",
    "evaluate_every_loop",
    "execute_sensor_iteration",
    "prefer_daemons",
    "sensor_loop_seconds",
    "serializable_error_info_from_exc_info",
    "set_sensor_loop_seconds",
]
