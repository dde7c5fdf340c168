"""Wake the sensor loop the moment a request is appended to a request stream.

A daemon thread blocks on `XREAD` over every family's stream and calls `on_arrival` when an
entry arrives. It only wakes: the request sensors still read, check, dead-letter and launch
from their own cursors (run_key = request id, the kill-switch hold), so nothing about what a
request becomes depends on this thread. If Redis is unreachable it retries every
RETRY_SECONDS, and the sensors' own period picks requests up meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from alphaswarm_orch.broker.keys import REQUEST_FAMILIES, request_stream

log = logging.getLogger(__name__)

BLOCK_SECONDS = 1.0
"""Longest single XREAD; also how soon `stop` is noticed (the daemon stops no later)."""

RETRY_SECONDS = 1.0
"""Pause after a Redis error before reading again."""

REQUEST_SENSORS = tuple(f"{family}_request_sensor" for family in REQUEST_FAMILIES)
"""The sensors that read the request streams: the ones an arrival is for."""


class RequestArrivals:
    """Calls `on_arrival()` (from its own thread) whenever a request stream gets an entry."""

    def __init__(
        self,
        redis_url: str,
        on_arrival: Callable[[], None],
        families: tuple[str, ...] = REQUEST_FAMILIES,
    ) -> None:
        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=5, socket_timeout=BLOCK_SECONDS + 5
        )
        self._on_arrival = on_arrival
        self._streams = [request_stream(family) for family in families]
        self._last: dict[str, str] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alphaswarm-arrivals", daemon=True)

    def start(self) -> RequestArrivals:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(BLOCK_SECONDS + 5)
        self._client.close()

    def _positions(self) -> dict[str, str]:
        """Each stream's last id now: entries after it wake the sensors (the sensors read what
        came before); ids, not `$`, so nothing appended between two reads is missed."""
        last = {}
        for stream in self._streams:
            newest = self._client.xrevrange(stream, count=1)
            last[stream] = newest[0][0].decode() if newest else "0-0"
        return last

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._last = self._last or self._positions()
                replies: list[Any] = self._client.xread(  # type: ignore[assignment]
                    self._last, block=int(BLOCK_SECONDS * 1000)
                )
            except redis.RedisError as exc:
                log.warning("request arrivals: %s; retrying in %ss", exc, RETRY_SECONDS)
                self._last = {}
                self._stopped.wait(RETRY_SECONDS)
                continue
            for stream, entries in replies or ():
                name = stream.decode() if isinstance(stream, bytes) else stream
                last = entries[-1][0]
                self._last[name] = last.decode() if isinstance(last, bytes) else last
            if replies:
                self._on_arrival()
