"""The request streams' listener wakes on an appended request, never on older entries."""

from __future__ import annotations

import threading

import redis

from alphaswarm_orch.broker.keys import dead_letter_stream, request_stream
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.requests.arrivals import REQUEST_SENSORS, RequestArrivals
from alphaswarm_orch.settings import Settings
from tests.support.runs import wait_for


def test_an_appended_request_wakes_it_and_older_entries_do_not(
    redis_client: redis.Redis, redis_urls: tuple[str, str]
) -> None:
    redis_client.xadd(request_stream("hft"), {"payload": "{}"})  # before: the sensors' work
    woken = threading.Event()
    arrivals = RequestArrivals(redis_urls[0], woken.set).start()
    try:
        wait_for(lambda: arrivals._last, 10, "the listener to take its positions")
        assert not woken.wait(0.3)
        redis_client.xadd(dead_letter_stream("paper"), {"reason": "not a request stream"})
        assert not woken.wait(0.3)
        for family in ("paper", "terraform"):
            woken.clear()
            redis_client.xadd(request_stream(family), {"payload": "{}"})
            assert woken.wait(10), family
    finally:
        arrivals.stop()


def test_it_stops_promptly_while_redis_is_unreachable() -> None:
    arrivals = RequestArrivals("redis://127.0.0.1:1/0", lambda: None).start()
    arrivals.stop()
    assert not arrivals._thread.is_alive()


def test_the_sensors_it_wakes_are_the_code_locations_request_sensors() -> None:
    sensors = build_definitions(Settings.from_env()).sensors or []
    names = {sensor.name for sensor in sensors}
    assert set(REQUEST_SENSORS) <= names
