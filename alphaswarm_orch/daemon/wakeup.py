"""Daemon loops that wake when work arrives instead of sleeping out their period.

dagster-daemon's sensor loop evaluates sensors every `MIN_INTERVAL_LOOP_TIME` and its run
queue dequeues every `dequeue_interval_seconds` (an integer, 1 at least): a request waited for
the next sensor loop, then its run for the next dequeue (~1.5 s of the request -> first step
path together). Here both loops also return from their wait when woken: the sensor loop by
`requests.arrivals` (a blocking read of the request streams), the dequeue loop by the run
coordinator when a run is queued (`coordinator.py`). Their periods stay as a fallback, so a
missed wake-up costs what the period costs, never a request.

The request sensors are evaluated when woken, not on every loop: a request sensor is due when
it was woken (`wake_request_sensors`) since its last tick started (a request arrived on its
stream, or a kill switch that held its requests was cleared: `requests.arrivals`), else every
REQUEST_FALLBACK_SECONDS. An idle daemon so evaluates them (a gRPC call to the code server and
four Postgres writes each) twelve times a minute instead of 180, and a request is evaluated by
its own family's sensor alone.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future
from typing import Any

import dagster as dg

from alphaswarm_orch.compat.dagster import (
    DaemonErrorCapture,
    DagsterDaemon,
    QueuedRunCoordinatorDaemon,
    SensorDaemon,
    SpanMarker,
    cache_run_columns_check,
    cache_schedule_schema_checks,
    evaluate_when_due,
    execute_sensor_iteration,
    keep_live_code_servers,
    prefer_daemons,
    sensor_loop_seconds,
    serializable_error_info_from_exc_info,
)
from alphaswarm_orch.requests.arrivals import REQUEST_SENSORS, request_sensor

SHUTDOWN_CHECK_SECONDS = 0.5
"""How often a woken wait checks the daemon's shutdown event (Dagster's loops use 0.5 s)."""

PENDING_CHECK_SECONDS = 0.02
"""How often the woken sensor loop checks whether a tick in flight at the wake-up ended."""

REQUEST_FALLBACK_SECONDS = 15.0
"""How often a request sensor is evaluated when nothing wakes it: what a request costs if its
wake-up is lost (the listener cannot reach Redis, or a kill switch set and cleared within one
of the listener's checks)."""


class Wakeup:
    """A wake-up call for one daemon loop of this process; `set` from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.last = 0.0
        """When it was last set (epoch seconds)."""

    def set(self) -> None:
        self.last = time.time()
        self._event.set()

    def wait(self, shutdown: threading.Event, timeout: float) -> bool:
        """Wait up to `timeout` s for a wake-up (True, and consumed) or `shutdown` (False)."""
        deadline = time.monotonic() + timeout
        while not shutdown.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._event.wait(min(remaining, SHUTDOWN_CHECK_SECONDS)):
                self._event.clear()
                return True
        return False


SENSORS = Wakeup()
"""Set when a request sensor is woken (`wake_request_sensors`)."""

WOKEN: dict[str, float] = {}
"""Request sensor name -> when it was last woken (epoch seconds)."""


def wake_request_sensors(families: Collection[str]) -> None:
    """Make the request sensors of `families` due and wake the sensor loop (a request arrived
    on their streams, or a kill switch that held them was cleared); from any thread."""
    now = time.time()
    for family in families:
        WOKEN[request_sensor(family)] = now
    SENSORS.set()

DEQUEUE = Wakeup()
"""Set when a run is queued in this process (`coordinator.WakingQueuedRunCoordinator`)."""


class WakingSensorDaemon(SensorDaemon):
    """Dagster's sensor daemon, its loop also woken by `SENSORS`.

    The loop is Dagster's `execute_sensor_iteration_loop` (same iteration, same period) with
    the wake-up in its wait. A sensor whose tick is still running is skipped by an iteration,
    and such a tick may have read its stream just before the request arrived: after a wake-up
    the loop iterates again each time one of the ticks in flight at the wake-up ends, so that
    sensor is evaluated once more at once rather than on the next period. The request sensors
    tick when woken (see `request_sensor_due`); others keep their minimum interval.
    """

    def core_loop(self, workspace_process_context: Any, shutdown_event: threading.Event):
        futures: dict[str, Future] = {}
        pending: set[Future] = set()  # ticks in flight at the last wake-up
        while True:
            start = time.monotonic()
            yield SpanMarker.START_SPAN
            try:
                yield from execute_sensor_iteration(
                    workspace_process_context,
                    self._logger,
                    threadpool_executor=self._threadpool_executor,
                    submit_threadpool_executor=self._submit_threadpool_executor,
                    sensor_tick_futures=futures,
                    instrument_elapsed=self.instrument_elapsed,
                )
            except Exception:
                yield DaemonErrorCapture.process_exception(
                    exc_info=sys.exc_info(),
                    logger=self._logger,
                    log_message="SensorDaemon caught an error",
                )
            yield SpanMarker.END_SPAN
            period = sensor_loop_seconds()
            while not shutdown_event.is_set():
                if pending:
                    done = {future for future in pending if future.done()}
                    if done:
                        pending -= done
                        break  # a tick in flight at the wake-up ended: evaluate again
                remaining = period - (time.monotonic() - start)
                if remaining <= 0:
                    break
                wait = min(remaining, PENDING_CHECK_SECONDS if pending else remaining)
                if SENSORS.wait(shutdown_event, wait):
                    pending = {future for future in futures.values() if not future.done()}
                    break
            yield None


class WakingDequeueDaemon(QueuedRunCoordinatorDaemon):
    """Dagster's run queue daemon, its dequeue loop woken by `DEQUEUE`.

    The loop is Dagster's `IntervalDaemon.core_loop` with the wake-up in its wait."""

    def core_loop(self, workspace_process_context: Any, shutdown_event: threading.Event):
        while True:
            start = time.monotonic()
            yield SpanMarker.START_SPAN
            try:
                yield from self.run_iteration(workspace_process_context)
            except Exception:
                error_info = serializable_error_info_from_exc_info(sys.exc_info())
                self._logger.error("Caught error:\n%s", error_info)
                yield error_info
            yield SpanMarker.END_SPAN
            period = self.interval_seconds + random.uniform(0, self.interval_jitter_seconds)
            while not shutdown_event.is_set():
                remaining = period - (time.monotonic() - start)
                if remaining <= 0 or DEQUEUE.wait(shutdown_event, min(remaining, 0.5)):
                    break
                yield None  # lets the controller heartbeat, as Dagster's loop does
            yield None


def _daemon(daemon_type: str, instance: dg.DagsterInstance) -> DagsterDaemon | None:
    # Every daemon of the process shares `instance`: its schema checks answered once, not per
    # sensor tick and run read (each a reflection on its own connection).
    cache_run_columns_check(instance)
    cache_schedule_schema_checks(instance)
    if daemon_type == SensorDaemon.daemon_type():
        return WakingSensorDaemon(settings=instance.get_sensor_settings())
    if daemon_type == QueuedRunCoordinatorDaemon.daemon_type():
        return WakingDequeueDaemon(
            interval_seconds=instance.run_coordinator.dequeue_interval_seconds
        )
    return None


def request_sensor_due(name: str, last_tick: float | None) -> bool:
    """Whether the request sensor `name`, whose last tick started (or ended) at `last_tick`, is
    due: it never ticked, it was woken since (a tick that started before a wake-up may have
    read its stream before the request was appended), or REQUEST_FALLBACK_SECONDS passed."""
    if last_tick is None:
        return True
    if WOKEN.get(name, 0.0) >= last_tick:
        return True
    return time.time() - last_tick >= REQUEST_FALLBACK_SECONDS


def install() -> None:
    """Build this process's sensor and dequeue daemons as the waking ones above, evaluate the
    request sensors when woken (`request_sensor_due`) rather than on their minimum interval,
    and keep the daemon's code server across its workspace refreshes."""
    prefer_daemons(_daemon)
    evaluate_when_due(REQUEST_SENSORS, request_sensor_due)
    keep_live_code_servers()
