"""What the run loop and a running step tell each other through the result-backend Redis.

A running step refreshes a heartbeat key; the run loop reads it to tell a step that is still
working from one whose worker died. The run loop (and the launcher's terminate) sets a cancel
key when its run is terminated; the step's watcher thread sees it within a second and
interrupts the step. The watcher also reads the run's status now and then, so a step whose
run ended without its run loop (run worker killed) does not run on for hours. A step
the run loop gave up on is marked abandoned, so a late redelivery of it does not run again.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
from collections.abc import Callable

import redis

from alphaswarm_orch.broker.keys import abandoned_key, cancel_key, heartbeat_key, starts_key

HEARTBEAT_INTERVAL_SECONDS = 1.0
"""How often a running step beats and looks for a cancel request."""

HEARTBEAT_TTL_SECONDS = 6
"""A heartbeat older than this means the step's worker is gone: six beats in a row missed.
The beat is a thread of the pool process (a busy op does not hold it back; Python switches
threads every few ms) and a failed write is retried with the next beat."""

LOST_GRACE_SECONDS = 3.0
"""After the heartbeat lapses, how long the run loop waits for Celery to redeliver the step
before it declares the worker lost. Worst case detection: TTL + grace + one sweep (~10 s)."""

MARK_TTL_SECONDS = 24 * 60 * 60

RUN_CHECK_SECONDS = 10.0
"""How often a running step reads its run's status from the instance: a run that ended
without its run loop (run worker killed, then failed by run monitoring or terminated) stops
its steps too."""


def started_by(client: redis.Redis, task_id: str) -> list[str]:
    return [raw.decode() for raw in client.lrange(starts_key(task_id), 0, -1)]


def worker_identity(hostname: str | None) -> str:
    """`<celery node> pid <pid>`: who runs a step, for heartbeats and error messages."""
    return f"{hostname or socket.gethostname()} pid {os.getpid()}"


def admission(client: redis.Redis, task_id: str, run_id: str) -> str | None:
    """Why a delivered step must not run (its run was cancelled, or it was abandoned)."""
    abandoned, cancelled = client.mget([abandoned_key(task_id), cancel_key(run_id)])
    if cancelled is not None:
        return "its run was terminated"
    if abandoned is not None:
        return "the run gave up on it after losing its worker"
    return None


def request_cancel(client: redis.Redis, run_id: str) -> None:
    client.set(cancel_key(run_id), "1", ex=MARK_TTL_SECONDS)


def abandon(client: redis.Redis, task_id: str) -> None:
    client.set(abandoned_key(task_id), "1", ex=MARK_TTL_SECONDS)


def interrupt_main_thread() -> None:
    """SIGINT to this process: Dagster turns it into DagsterExecutionInterruptedError inside
    the op's code (a Celery pool process ignores SIGINT outside a step)."""
    os.kill(os.getpid(), signal.SIGINT)


class StepWatch:
    """Beats for one running step and interrupts it once its run is cancelled or has ended."""

    def __init__(
        self,
        client: redis.Redis,
        task_id: str,
        run_id: str,
        identity: str,
        on_cancel: Callable[[], None] = interrupt_main_thread,
    ) -> None:
        self._client = client
        self._heartbeat = heartbeat_key(task_id)
        self._starts = starts_key(task_id)
        self._cancel = cancel_key(run_id)
        self._identity = identity
        self._on_cancel = on_cancel
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alphaswarm-step-watch", daemon=True)
        self._run_ended: Callable[[], bool] | None = None
        self.cancelled = False

    def watch_run(self, run_ended: Callable[[], bool]) -> None:
        """Also interrupt the step once `run_ended()` (checked every RUN_CHECK_SECONDS)."""
        self._run_ended = run_ended

    def __enter__(self) -> StepWatch:
        # The start (it only names a dead process in the run's events) and the first beat
        # in one round trip.
        self._beat(start=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self, start: bool = False) -> None:
        try:
            with self._client.pipeline() as pipe:
                if start:
                    pipe.rpush(self._starts, self._identity)
                    pipe.expire(self._starts, MARK_TTL_SECONDS)
                pipe.set(self._heartbeat, self._identity, ex=HEARTBEAT_TTL_SECONDS)
                pipe.exists(self._cancel)
                cancelled = pipe.execute()[-1]
        except redis.RedisError:
            return  # a missed beat is tolerated; TTL / interval beats in a row are not
        if cancelled:
            self._interrupt()

    def _interrupt(self) -> None:
        """Interrupt the step (again on every beat while asked: an op may swallow one)."""
        if not self._stopped.is_set():
            self.cancelled = True
            self._on_cancel()

    def _check_run(self) -> None:
        try:
            ended = self._run_ended is not None and self._run_ended()
        except Exception:
            return  # the instance is unreachable: the heartbeat and cancel key still work
        if ended:
            self._interrupt()

    def _run(self) -> None:
        beats_per_check = max(1, round(RUN_CHECK_SECONDS / HEARTBEAT_INTERVAL_SECONDS))
        for beat in itertools.count(1):
            if self._stopped.wait(HEARTBEAT_INTERVAL_SECONDS):
                return
            self._beat()
            if beat % beats_per_check == 0:
                self._check_run()
