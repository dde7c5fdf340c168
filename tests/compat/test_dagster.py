"""Contracts of the Dagster internals in alphaswarm_orch/compat/dagster.py: each name exists
and behaves as the code that uses it assumes. A Dagster upgrade that breaks one fails here."""

from __future__ import annotations

import inspect

import dagster as dg
import pytest
from dagster._daemon import controller
from dagster._daemon import sensor as sensor_daemon

from alphaswarm_orch.compat import dagster as compat
from alphaswarm_orch.daemon.wakeup import WakingDequeueDaemon, WakingSensorDaemon, install

COORDINATOR = {
    "run_coordinator": {
        "module": "alphaswarm_orch.daemon.coordinator",
        "class": "WakingQueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
}


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module functions `install` replaces come back after the test."""
    monkeypatch.setattr(controller, "create_daemon_of_type", controller.create_daemon_of_type)
    monkeypatch.setattr(sensor_daemon, "is_under_min_interval", sensor_daemon.is_under_min_interval)
    monkeypatch.setattr(
        sensor_daemon, "MIN_INTERVAL_LOOP_TIME", sensor_daemon.MIN_INTERVAL_LOOP_TIME
    )


def test_prefer_daemons_builds_the_waking_sensor_and_dequeue_daemons(restored: None) -> None:
    install()
    install()  # twice is the same as once (the stock factory is kept, not wrapped again)
    with dg.instance_for_test(overrides=COORDINATOR) as instance:
        daemons = {type(d) for d in controller.create_daemons_from_instance(instance)}
    assert {WakingSensorDaemon, WakingDequeueDaemon} <= daemons
    assert compat.SensorDaemon not in daemons


def test_the_sensor_loop_checks_the_minimum_interval_through_the_module_function(
    restored: None,
) -> None:
    for function in (
        sensor_daemon.execute_sensor_iteration,
        inspect.unwrap(sensor_daemon._process_tick_generator),
    ):
        assert "is_under_min_interval" in function.__code__.co_names, function
    assert list(inspect.signature(sensor_daemon.is_under_min_interval).parameters)[:2] == [
        "state",
        "remote_sensor",
    ]
    compat.evaluate_every_loop(["every_loop"])

    class Sensor:
        def __init__(self, name: str) -> None:
            self.name = name
            self.min_interval_seconds = 30

    class State:  # a tick a second ago: under a 30 s interval
        instigator_data = None

    # The named sensor is never under its interval; others go to Dagster's rule (no data:
    # not under it either, which is its answer for a sensor that never ticked).
    assert sensor_daemon.is_under_min_interval(State(), Sensor("every_loop")) is False
    assert sensor_daemon.is_under_min_interval.stock(State(), Sensor("other")) is False


def test_the_sensor_loop_period_is_the_module_constant(restored: None) -> None:
    compat.set_sensor_loop_seconds(0.25)
    assert sensor_daemon.MIN_INTERVAL_LOOP_TIME == 0.25
    assert compat.sensor_loop_seconds() == 0.25


def test_the_loop_parts_the_waking_daemons_rebuild_are_there() -> None:
    parameters = inspect.signature(compat.execute_sensor_iteration).parameters
    for name in (
        "threadpool_executor",
        "submit_threadpool_executor",
        "sensor_tick_futures",
        "instrument_elapsed",
    ):
        assert name in parameters
    assert {m.name for m in compat.SpanMarker} == {"START_SPAN", "END_SPAN"}
    assert {"exc_info", "logger", "log_message"} <= set(
        inspect.signature(compat.DaemonErrorCapture.process_exception).parameters
    )
    sensors = compat.SensorDaemon(settings={"use_threads": True, "num_workers": 1})
    try:
        assert sensors._threadpool_executor is not None
        assert sensors._submit_threadpool_executor is None
        assert callable(sensors.instrument_elapsed)
    finally:
        sensors.__exit__(None, None, None)
    dequeue = compat.QueuedRunCoordinatorDaemon(interval_seconds=1)
    assert (dequeue.interval_seconds, dequeue.interval_jitter_seconds) == (1, 0)
    assert inspect.isgeneratorfunction(compat.QueuedRunCoordinatorDaemon.run_iteration)


def test_the_run_columns_check_is_asked_on_every_run_read_and_cached_once() -> None:
    assert "has_run_stats_index_cols" in compat.SqlRunStorage.get_run_records.__code__.co_names
    with dg.instance_for_test() as instance:
        storage = instance.run_storage
        assert isinstance(storage, compat.SqlRunStorage)
        expected = storage.has_run_stats_index_cols()
        compat.cache_run_columns_check(instance)
        assert instance.get_run_by_id("no-such-run") is None  # reads go through the cache
        assert storage.has_run_stats_index_cols() is expected
        assert storage.has_run_stats_index_cols.cache_info().hits >= 1
