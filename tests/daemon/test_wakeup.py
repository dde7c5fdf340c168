"""A daemon loop's wait returns on a wake-up (once) or on shutdown.

What wakes the loops in the real daemon is tests/sessions/test_daemon_wakeup.py."""

from __future__ import annotations

import threading
import time

from alphaswarm_orch.daemon.wakeup import Wakeup


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
