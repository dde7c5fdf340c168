"""Wake the sensor loop the moment a request is appended to a request stream, or a kill
switch that held requests is cleared.

A daemon thread blocks on `XREAD` over every family's stream and calls `on_arrival` with the
families whose streams got entries. Between reads (at least every BLOCK_SECONDS) it reads the
families' hold markers (`broker.keys.request_hold_key`, set by a request sensor that skipped
for a kill switch, naming the switch's key) and calls `on_arrival` with that family once when
a switch named there no longer exists. It only wakes: the request sensors still read, check,
dead-letter, hold and launch from their own cursors (run_key = request id), so nothing about
what a request becomes depends on this thread. If Redis is unreachable it retries every
RETRY_SECONDS, and the sensors' own fallback period picks requests up meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import redis

from alphaswarm_orch.broker.keys import REQUEST_FAMILIES, request_hold_key, request_stream

log = logging.getLogger(__name__)

BLOCK_SECONDS = 1.0
"""Longest single XREAD; also how soon `stop` is noticed (the daemon stops no later)."""

RETRY_SECONDS = 1.0
"""Pause after a Redis error before reading again."""

def request_sensor(family: str) -> str:
    """The name of the sensor that reads `family`'s request stream."""
    return f"{family}_request_sensor"


REQUEST_SENSORS = tuple(request_sensor(family) for family in REQUEST_FAMILIES)
"""The sensors that read the request streams: the ones an arrival is for."""


class RequestArrivals:
    """Calls `on_arrival(families)` (from its own thread) whenever request streams get entries,
    or a kill switch that held a family's requests is cleared."""

    def __init__(
        self,
        redis_url: str,
        on_arrival: Callable[[Collection[str]], None],
        families: tuple[str, ...] = REQUEST_FAMILIES,
    ) -> None:
        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=5, socket_timeout=BLOCK_SECONDS + 5
        )
        self._on_arrival = on_arrival
        self._streams = [request_stream(family) for family in families]
        self._families = dict(zip(self._streams, families, strict=True))
        self._holds = [request_hold_key(family) for family in families]
        self._hold_families = dict(zip(self._holds, families, strict=True))
        self._released: set[tuple[str, bytes]] = set()  # (hold marker, switch key) woken for
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

    def _switch_cleared(self) -> set[str]:
        """The families held by a kill switch (a hold marker names it) that is gone and was
        not woken for yet: one round trip, two while a marker is set."""
        markers = dict(zip(self._holds, self._client.mget(self._holds), strict=True))
        held = {(hold, switch) for hold, switch in markers.items() if switch is not None}
        self._released &= held  # a marker deleted (or changed) may wake again later
        pending = sorted(held - self._released)
        if not pending:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for _, switch in pending:
            pipe.exists(switch)
        gone = {pair for pair, exists in zip(pending, pipe.execute(), strict=True) if not exists}
        self._released |= gone
        return {self._hold_families[hold] for hold, _ in gone}

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
            arrived = []
            for stream, entries in replies or ():
                name = stream.decode() if isinstance(stream, bytes) else stream
                last = entries[-1][0]
                self._last[name] = last.decode() if isinstance(last, bytes) else last
                arrived.append(self._families[name])
            if arrived:
                self._on_arrival(arrived)
            try:
                released = self._switch_cleared()
                if released:
                    self._on_arrival(sorted(released))
            except redis.RedisError as exc:
                log.warning("request arrivals: kill switch check: %s", exc)
