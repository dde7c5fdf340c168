"""Dispatch a heavy task by name to an executor queue and wait for its result.

The task's code lives in alphaswarm-executor, so it is sent by name (`send_task`) and never
imported here. The wait is bounded by a timeout, and the task is revoked with terminate=True
when the wait ends without a result (timeout, run terminated, or the waiting step
interrupted), so no executor slot keeps working for a run that no longer wants the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import celery.exceptions
from celery import Celery
from celery.result import AsyncResult

from alphaswarm_orch.broker.celery_config import celery_config
from alphaswarm_orch.queues import check_heavy_queue
from alphaswarm_orch.settings import Settings

POLL_SECONDS = 1.0
"""How often the wait checks whether the run was terminated."""

TRACEBACK_LINES = 12


class DispatchError(RuntimeError):
    """A dispatched task ended without a result; `task_id` names it in the executor."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class RemoteTaskError(DispatchError):
    """The task raised in the executor: its exception type, message and traceback."""

    def __init__(self, message: str, task_id: str, exc_type: str, remote_traceback: str) -> None:
        super().__init__(message, task_id)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class DispatchTimeout(DispatchError):
    """No result within the step's timeout; the task was revoked."""


class DispatchCancelled(DispatchError):
    """The run was terminated while waiting; the task was revoked."""


@dataclass(frozen=True)
class Dispatched:
    task_id: str
    result: Any


class DispatchClient:
    """Sends tasks to executor queues on the broker and result backend from Settings."""

    def __init__(self, app: Celery, poll_seconds: float = POLL_SECONDS) -> None:
        self.app = app
        self.poll_seconds = poll_seconds

    @classmethod
    @contextmanager
    def from_settings(cls, settings: Settings, what: str) -> Iterator[DispatchClient]:
        """A client on its own Celery app (closed afterwards); `what` names the caller in errors."""
        app = Celery(
            "alphaswarm_orch.workflows.dispatch",
            broker=settings.require_broker(what),
            backend=settings.result_backend,
            set_as_current=False,
        )
        app.conf.update(celery_config(settings))
        try:
            yield cls(app)
        finally:
            app.close()

    def run(
        self,
        task: str,
        queue: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        timeout_seconds: float,
        cancelled: Callable[[], bool],
        on_sent: Callable[[str], None] = lambda task_id: None,
    ) -> Dispatched:
        """Send `task` to `queue` and return its result, or raise a DispatchError.

        `cancelled` is polled while waiting; when it turns true the task is revoked.
        """
        check_heavy_queue(queue, where=f"dispatch of {task!r}")
        pending = self.app.send_task(task, args=args, kwargs=kwargs, queue=queue)
        on_sent(pending.id)
        finished = False
        try:
            value = self._wait(pending, task, queue, timeout_seconds, cancelled)
            finished = True
        finally:
            if not finished:  # timeout, cancel, or an interrupt of this step
                self.revoke(pending.id)
        if pending.failed():
            raise _remote_error(pending, task, queue, value)
        if pending.state != "SUCCESS":
            raise DispatchError(
                f"task {task!r} [{pending.id}] on {queue!r} ended in state {pending.state}: "
                "it was revoked or discarded in the executor",
                pending.id,
            )
        return Dispatched(pending.id, value)

    def revoke(self, task_id: str) -> None:
        """Revoke and terminate the task wherever it runs (broadcast to all workers)."""
        self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    def _wait(
        self,
        pending: AsyncResult,
        task: str,
        queue: str,
        timeout_seconds: float,
        cancelled: Callable[[], bool],
    ) -> Any:
        deadline = time.monotonic() + timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DispatchTimeout(
                    f"task {task!r} [{pending.id}] on {queue!r} gave no result within "
                    f"{timeout_seconds:g}s (queueing + running); it was revoked. Raise "
                    "dispatch.timeout_seconds or check the executor's capacity for this queue.",
                    pending.id,
                )
            try:
                # Runs inside a step's Celery task: the wait is for another app's task.
                return pending.get(
                    timeout=min(self.poll_seconds, remaining),
                    propagate=False,
                    disable_sync_subtasks=False,
                )
            except celery.exceptions.TimeoutError:
                pass
            if cancelled():
                raise DispatchCancelled(
                    f"the run was terminated while task {task!r} [{pending.id}] on {queue!r} "
                    "was pending; it was revoked",
                    pending.id,
                )


def _remote_error(pending: AsyncResult, task: str, queue: str, exc: Any) -> RemoteTaskError:
    exc_type = type(exc).__name__
    remote_tb = pending.traceback or ""
    summary = "\n".join(remote_tb.strip().splitlines()[-TRACEBACK_LINES:])
    return RemoteTaskError(
        f"task {task!r} [{pending.id}] on {queue!r} failed in the executor: {exc_type}: {exc}\n"
        f"remote traceback (last lines):\n{summary}",
        pending.id,
        exc_type,
        remote_tb,
    )
