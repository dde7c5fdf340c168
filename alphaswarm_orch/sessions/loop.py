"""The session loop: own the session, consume `ticks:<session>` through a consumer group.

One consumer per session (a session is one run), so a new owner finds its predecessor's
unacknowledged ticks in the pending list and handles them first; ticks other consumers left
pending are claimed too. The loop first takes the session's lease (lease.py) and every read
and acknowledgement checks it atomically, so two steps of one session never consume at once.
Each tick is acknowledged after its handler returns, together with the stop checks (kill
switch, per-queue kill switch, stop request, the worker's handoff flag), so the loop stops
within one tick at the cost of no extra round trip. The switches are read under the kill
switch's fail-closed rule: a key of any type, or a failed read, stops the session.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.broker.kill_switch import (
    KillSwitch,
    KillSwitchEngaged,
    engaged_states,
    read_states,
)
from alphaswarm_orch.sessions.lease import LEASE_TTL_MS, LeaseLost, SessionLease
from alphaswarm_orch.sessions.ticks import InvalidTick, Tick, parse_tick

GROUP = "alphaswarm-session"
CONSUMER = "session"
BLOCK_MS = 100
"""How long an idle read waits: the loop notices a stop within this when no tick arrives."""
ACQUIRE_POLL_SECONDS = 0.2
"""How often a step waiting for its session's lease tries again."""

HANDING_ON = ("handoff", "shutdown", "lease_lost")
"""Stops after which the session continues elsewhere: the step asks to be run again."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOutcome:
    stopped_by: str
    """stop_request | kill_switch | shutdown (SIGTERM) | handoff (worker stopping) |
    lease_lost (another step took the session over) | error | interrupted (an exception)"""
    reason: str
    ticks: int
    invalid_ticks: int
    kill_key: str | None = None
    fence: int = 0
    """The lease's fencing token this step held (0: it never owned the session)."""

    def refusal(self, where: str) -> KillSwitchEngaged | None:
        """The error a kill-switch stop is reported with (None for other stops)."""
        if self.kill_key is None:
            return None
        return KillSwitchEngaged(self.kill_key, self.reason, where)

    @property
    def resumable(self) -> bool:
        """Anything but a stop request or an error leaves the session to be resumed."""
        return self.stopped_by not in ("stop_request", "error")


class SessionLoop:
    def __init__(
        self,
        client: redis.Redis,
        session_id: str,
        queue: str,
        kill_switch: KillSwitch,
        handle: Callable[[Tick], object],
        *,
        worker: str | None = None,
        handoff_key: str | None = None,
        on_acquire: Callable[[SessionLease], object] | None = None,
        fence_floor: Callable[[], int] | None = None,
        on_stop: Callable[[SessionOutcome], object] | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
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
        self.lease = SessionLease(client, session_id, worker or local_worker(), lease_ttl_ms)
        self.on_acquire = on_acquire
        """Called once the lease is held, before any tick is read (load state at the fence)."""
        self.fence_floor = fence_floor
        self.on_stop = on_stop
        """Called with the outcome while the lease is still held (record the state)."""
        """The highest fence the session's state has seen (a Redis that lost its counter
        must still hand out higher fences)."""
        self.kill_keys = kill_switch.keys_for(queue)
        self.stop_key = session_stop_key(session_id)
        self.handoff_key = handoff_key
        # Read by the lease scripts with every read and ack: the stop request and handoff flag
        # (GET), the kill switches (TYPE; a set one is then read in full, fail-closed).
        self.stop_keys = [self.stop_key, handoff_key or self.stop_key, *self.kill_keys]
        self._shutdown = threading.Event()
        self.ticks = self.invalid = 0

    def request_shutdown(self) -> None:
        """Finish the current tick, then end as a resumable stop (SIGTERM does this)."""
        self._shutdown.set()

    def run(self) -> SessionOutcome:
        """Own the session and consume until a stop. `on_stop` records the outcome while the
        lease is still held (so the state it writes cannot race the next owner); then the
        lease is released. An exception is recorded as an `error` (or `interrupted`) outcome
        and raised again."""
        self._ensure_group()
        stop = self._acquire()
        if stop is not None:
            return SessionOutcome(stop[0], stop[1], 0, 0, stop[2])
        raised: BaseException | None = None
        try:
            if self.on_acquire is not None:
                self.on_acquire(self.lease)
            self._claim_stale()
            stopped_by, reason, kill_key = self._consume()
            outcome = SessionOutcome(
                stopped_by, reason, self.ticks, self.invalid, kill_key, self.lease.fence
            )
        except LeaseLost as lost:
            self.lease.value = None
            outcome = SessionOutcome(
                "lease_lost", str(lost), self.ticks, self.invalid, fence=self.lease.fence
            )
        except BaseException as exc:
            raised = exc
            kind = "error" if isinstance(exc, Exception) else "interrupted"
            outcome = SessionOutcome(
                kind,
                f"{type(exc).__name__}: {exc}",
                self.ticks,
                self.invalid,
                fence=self.lease.fence,
            )
        try:
            if self.on_stop is not None:
                self.on_stop(outcome)
        except Exception as exc:
            if raised is None:
                raise
            log.warning("session %s: outcome not recorded (%s)", self.session_id, exc)
        finally:
            self._release_quietly()
        if raised is not None:
            raise raised
        return outcome

    def _acquire(self) -> tuple[str, str, str | None] | None:
        """Wait for the lease (a previous owner's expires within its TTL); a stop while
        waiting ends the step without ever owning the session."""
        while True:
            stop = self._check_stop()
            if stop is None and self._shutdown.is_set():
                stop = ("shutdown", "SIGTERM before the session was taken over", None)
            if stop is not None:
                return stop
            if self.lease.try_acquire(self.fence_floor() if self.fence_floor else 0):
                return None
            self._shutdown.wait(ACQUIRE_POLL_SECONDS)

    def _consume(self) -> tuple[str, str, str | None]:
        cursor = "0"  # our own pending entries first, then new ones
        last_seen = "0-0"
        while True:
            if self._shutdown.is_set():
                return ("shutdown", "SIGTERM: the current tick finished", None)
            try:
                values, entries, last = self.lease.read(
                    GROUP, CONSUMER, cursor, self.batch, self.stop_keys
                )
            except redis.RedisError as exc:
                return self._unreadable(exc)
            stop = self._stop_reason(values)
            if stop is not None:
                return stop
            if cursor == "0" and not entries:
                cursor = ">"
                continue
            if not entries:
                self._wait_for_ticks(last or last_seen)
                continue
            for raw_id, fields in entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                last_seen = entry_id
                try:
                    tick: Tick | None = parse_tick(entry_id, _fields(fields))
                except InvalidTick as exc:
                    tick = None
                    self.invalid += 1
                    log.warning("session %s skipped %s", self.session_id, exc)
                if tick is not None:
                    self.handle(tick)
                    self.ticks += 1
                try:
                    stop = self._stop_reason(self.lease.ack(GROUP, entry_id, self.stop_keys))
                except redis.RedisError as exc:  # the ack may not have happened: resumable
                    stop = self._unreadable(exc)
                if tick is not None and self.after_ack is not None:
                    self.after_ack(tick)
                if stop is not None:
                    return stop
                if self._shutdown.is_set():
                    break

    def _wait_for_ticks(self, after: str) -> None:
        """Block (read-only, outside the group) until an entry after `after` arrives."""
        self.client.xread({self.stream: after}, count=1, block=self.block_ms)

    def _release_quietly(self) -> None:
        try:
            self.lease.release()
        except redis.RedisError as exc:
            log.warning("session %s: lease not released (%s); it expires", self.session_id, exc)

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

    def _check_stop(self) -> tuple[str, str, str | None] | None:
        """The stop checks on their own (while waiting for the lease)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.stop_key)
        pipe.get(self.handoff_key or self.stop_key)
        states, replies = read_states(pipe, self.kill_keys)
        stop = self._kill_stop(states)
        if stop is not None:
            return stop
        assert not isinstance(replies, Exception)  # it would have engaged every switch
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return self._stop_reason([*replies, *(b"none" for _ in self.kill_keys)])

    def _stop_reason(self, values: list) -> tuple[str, str, str | None] | None:
        """(stopped_by, reason, kill key) for the first stop condition set, else None, from
        what the lease scripts read: stop value, handoff value, then each switch's TYPE."""
        stop, handoff, *kinds = values
        if any(kind not in (b"none", "none") for kind in kinds):
            states, _ = read_states(self.client.pipeline(transaction=False), self.kill_keys)
            found = self._kill_stop(states)
            if found is not None:
                return found
        if stop is not None:
            return ("stop_request", _text(stop), None)
        if handoff is not None and self.handoff_key is not None:
            return ("handoff", f"worker stopping: {_text(handoff)}", None)
        return None

    @staticmethod
    def _kill_stop(states: list) -> tuple[str, str, str | None] | None:
        for state in states:
            if state is not None:
                return ("kill_switch", state.reason, state.key)
        return None

    def _unreadable(self, exc: redis.RedisError) -> tuple[str, str, str | None]:
        """A failed read of the switches stops the session as an engaged switch does."""
        state = engaged_states(self.kill_keys, exc)[0]
        assert state is not None
        return ("kill_switch", state.reason, state.key)


def _fields(raw: object) -> dict:
    """Stream entry fields as a dict (a Lua reply gives them as a flat list)."""
    if isinstance(raw, dict):
        return raw
    items = list(raw or [])
    return dict(zip(items[::2], items[1::2], strict=True))


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def local_worker() -> str:
    """`<host> pid <pid>`: the owner name of a session run outside a Celery worker."""
    return f"{socket.gethostname()} pid {os.getpid()}"


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
