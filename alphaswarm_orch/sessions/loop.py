"""The session loop: consume `ticks:<session>` through a consumer group until told to stop.

One consumer per session (a session is one run), so a restarted session finds its
unacknowledged ticks in its own pending list and handles them first; ticks other consumers
left pending are claimed too. Each tick is acknowledged after its handler returns, and the
acknowledgement is pipelined with the stop checks (kill switch, per-queue kill switch, stop
request), so the loop stops within one tick at the cost of no extra round trip. The switches
are read under the kill switch's fail-closed rule: a key of any type, or a failed read, stops
the session.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from alphaswarm_orch.control.keys import session_stop_key, tick_stream
from alphaswarm_orch.control.kill_switch import KillSwitch, KillSwitchEngaged, read_states
from alphaswarm_orch.sessions.ticks import InvalidTick, Tick, parse_tick

GROUP = "alphaswarm-session"
CONSUMER = "session"
BLOCK_MS = 100
"""How long an idle read waits: the loop notices a stop within this when no tick arrives."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOutcome:
    stopped_by: str
    """stop_request | kill_switch | shutdown"""
    reason: str
    ticks: int
    invalid_ticks: int
    kill_key: str | None = None

    def refusal(self, where: str) -> KillSwitchEngaged | None:
        """The error a kill-switch stop is reported with (None for other stops)."""
        if self.kill_key is None:
            return None
        return KillSwitchEngaged(self.kill_key, self.reason, where)

    @property
    def resumable(self) -> bool:
        """A shutdown or kill switch leaves the session to be resumed; a stop request ends it."""
        return self.stopped_by != "stop_request"


class SessionLoop:
    def __init__(
        self,
        client: redis.Redis,
        session_id: str,
        queue: str,
        kill_switch: KillSwitch,
        handle: Callable[[Tick], object],
        *,
        batch: int = 64,
        block_ms: int = BLOCK_MS,
        after_ack: Callable[[Tick], object] | None = None,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.stream = tick_stream(session_id)
        self.handle = handle
        self.batch = batch
        self.block_ms = block_ms
        self.after_ack = after_ack
        """Called with each handled tick once it is acknowledged (latency measurement)."""
        self.kill_keys = kill_switch.keys_for(queue)
        self.stop_key = session_stop_key(session_id)
        self._shutdown = threading.Event()

    def request_shutdown(self) -> None:
        """Finish the current tick, then end as a resumable stop (SIGTERM does this)."""
        self._shutdown.set()

    def run(self) -> SessionOutcome:
        self._ensure_group()
        self._claim_stale()
        ticks = invalid = 0
        stop = self._check_stop(self.client.pipeline(transaction=False))
        cursor = "0"  # our own pending entries first, then new ones
        ack = self.client.pipeline(transaction=False)  # reused: emptied by each execute()
        while stop is None:
            if self._shutdown.is_set():
                break
            reply = self.client.xreadgroup(
                GROUP,
                CONSUMER,
                {self.stream: cursor},
                count=self.batch,
                block=None if cursor == "0" else self.block_ms,
            )
            entries = reply[0][1] if reply else []
            if cursor == "0" and not entries:
                cursor = ">"
                continue
            if not entries:
                stop = self._check_stop(ack)
                continue
            for raw_id, fields in entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                try:
                    tick: Tick | None = parse_tick(entry_id, fields or {})
                except InvalidTick as exc:
                    tick = None
                    invalid += 1
                    log.warning("session %s skipped %s", self.session_id, exc)
                if tick is not None:
                    self.handle(tick)
                    ticks += 1
                ack.xack(self.stream, GROUP, entry_id)
                stop = self._check_stop(ack)
                if tick is not None and self.after_ack is not None:
                    self.after_ack(tick)
                if stop is not None or self._shutdown.is_set():
                    break
        if stop is None:
            stop = ("shutdown", "SIGTERM: the current tick finished", None)
        stopped_by, reason, kill_key = stop
        return SessionOutcome(stopped_by, reason, ticks, invalid, kill_key)

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim_stale(self) -> None:
        """Take over ticks pending on any other consumer name (e.g. an older deployment)."""
        start = "0-0"
        while True:
            start, _claimed, *_ = self.client.xautoclaim(
                self.stream, GROUP, CONSUMER, min_idle_time=0, start_id=start, count=100
            )
            if start in (b"0-0", "0-0"):
                return

    def _check_stop(self, pipe: redis.client.Pipeline) -> tuple[str, str, str | None] | None:
        """Run `pipe` (an ack, or nothing) with the stop checks appended: (stopped_by, reason,
        kill key) for the first stop condition set, else None.

        The switches are read under the fail-closed rule: a failed read stops the session as
        an engaged switch does. A failed ack is raised, as before.
        """
        pipe.get(self.stop_key)
        switches, replies = read_states(pipe, self.kill_keys)
        for state in switches:
            if state is not None:
                return ("kill_switch", state.reason, state.key)
        assert not isinstance(replies, Exception)  # it would have engaged every switch
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        stop = replies[-1]
        if stop is not None:
            return ("stop_request", stop.decode("utf-8", "replace"), None)
        return None


@contextmanager
def sigterm_stops(loop: SessionLoop) -> Iterator[None]:
    """While inside, SIGTERM asks `loop` for a resumable stop (only the main thread can do this)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: loop.request_shutdown())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
