"""The request streams' listener wakes on an appended request, never on older entries, and
once when a kill switch that held requests is cleared."""

from __future__ import annotations

import threading
from collections.abc import Collection

import redis

from alphaswarm_orch.broker.keys import dead_letter_stream, request_hold_key, request_stream
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.requests.arrivals import REQUEST_SENSORS, RequestArrivals
from alphaswarm_orch.settings import Settings
from tests.support.runs import wait_for


def test_an_appended_request_wakes_it_and_older_entries_do_not(
    redis_client: redis.Redis, redis_urls: tuple[str, str]
) -> None:
    redis_client.xadd(request_stream("hft"), {"payload": "{}"})  # before: the sensors' work
    woken = threading.Event()
    families: list[list[str]] = []

    def on_arrival(arrived: Collection[str]) -> None:
        families.append(list(arrived))
        woken.set()

    arrivals = RequestArrivals(redis_urls[0], on_arrival).start()
    try:
        wait_for(lambda: arrivals._last, 10, "the listener to take its positions")
        assert not woken.wait(0.3)
        redis_client.xadd(dead_letter_stream("paper"), {"reason": "not a request stream"})
        assert not woken.wait(0.3)
        for family in ("paper", "terraform"):
            woken.clear()
            redis_client.xadd(request_stream(family), {"payload": "{}"})
            assert woken.wait(10), family
            assert families[-1] == [family]  # only that family's sensor is woken
    finally:
        arrivals.stop()


def test_a_cleared_switch_that_held_requests_wakes_it_once(
    redis_client: redis.Redis, redis_urls: tuple[str, str]
) -> None:
    switch, hold = "test:arrivals:kill", request_hold_key("paper")
    redis_client.delete(hold, request_hold_key("hft"), request_hold_key("terraform"))
    redis_client.set(switch, "freeze")
    redis_client.set(hold, switch)  # as a held request sensor leaves it
    wakes: list[list[str]] = []
    woken = threading.Event()

    def on_wake(families: Collection[str]) -> None:
        wakes.append(list(families))
        woken.set()

    arrivals = RequestArrivals(redis_urls[0], on_wake).start()
    try:
        wait_for(lambda: arrivals._last, 10, "the listener to take its positions")
        assert not woken.wait(1.5)  # held: the switch is still set
        redis_client.delete(switch)
        assert woken.wait(10)
        woken.clear()
        assert not woken.wait(2.5)  # once per hold, not on every check
        assert wakes == [["paper"]]
        # The sensor's next tick deletes the marker; a later hold wakes again when cleared.
        redis_client.delete(hold)
        wait_for(lambda: not arrivals._released, 10, "the listener to forget the hold")
        redis_client.set(switch, "again")
        redis_client.set(hold, switch)
        assert not woken.wait(1.5)
        redis_client.delete(switch)
        assert woken.wait(10)
    finally:
        arrivals.stop()
        redis_client.delete(switch, hold)


def test_it_stops_promptly_while_redis_is_unreachable() -> None:
    arrivals = RequestArrivals("redis://127.0.0.1:1/0", lambda families: None).start()
    arrivals.stop()
    assert not arrivals._thread.is_alive()


def test_the_sensors_it_wakes_are_the_code_locations_request_sensors() -> None:
    sensors = build_definitions(Settings.from_env()).sensors or []
    names = {sensor.name for sensor in sensors}
    assert set(REQUEST_SENSORS) <= names
