"""A daemon loop's wait returns on a wake-up (once) or on shutdown.

What wakes the loops in the real daemon is tests/sessions/test_daemon_wakeup.py."""

from __future__ import annotations

import threading
import time

import pytest

from alphaswarm_orch.daemon import wakeup
from alphaswarm_orch.daemon.wakeup import (
    REQUEST_FALLBACK_SECONDS,
    Wakeup,
    request_sensor_due,
    wake_request_sensors,
)


def test_a_wait_returns_on_a_wake_up_once_and_on_shutdown() -> None:
    wakeup, shutdown = Wakeup(), threading.Event()
    assert wakeup.wait(shutdown, 0.05) is False
    threading.Timer(0.1, wakeup.set).start()
    assert wakeup.wait(shutdown, 60) is True
    assert wakeup.wait(shutdown, 0.05) is False  # consumed
    threading.Timer(0.1, shutdown.set).start()
    started = time.monotonic()
    assert wakeup.wait(shutdown, 60) is False
    assert time.monotonic() - started < 30  # not the full wait


def test_a_request_sensor_is_due_when_woken_since_its_last_tick_or_on_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wakeup, "SENSORS", Wakeup())
    monkeypatch.setattr(wakeup, "WOKEN", {})
    paper, hft = "paper_request_sensor", "hft_request_sensor"
    now = time.time()
    assert request_sensor_due(paper, None)  # never ticked
    assert not request_sensor_due(paper, now)  # ticked just now, nothing since
    assert request_sensor_due(paper, now - REQUEST_FALLBACK_SECONDS - 1)  # the fallback period
    shutdown = threading.Event()
    # A paper request arrived after a tick that started just before it: paper's sensor is due,
    # hft's is not, and the loop is woken.
    wake_request_sensors(["paper"])
    assert wakeup.SENSORS.wait(shutdown, 0.1)
    assert request_sensor_due(paper, now)
    assert not request_sensor_due(hft, now)
    assert not request_sensor_due(paper, time.time() + 0.001)  # a tick started after it
