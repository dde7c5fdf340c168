"""A stopping worker tells its sessions to hand themselves on.

Celery's warm shutdown (SIGTERM) and `worker drain` stop the worker consuming and wait for
running tasks, but never signal the pool processes, and a session's task does not end by
itself. So the worker's main process sets `alphaswarm:worker:<node>:handoff` when it starts
shutting down (and `worker drain` sets it after cancelling the consumers); each session it
runs sees the flag with its next tick or idle read (it is one of the loop's stop keys),
finishes the tick, commits, releases its lease and ends its step asking to be run again, so
the run puts the step back on its queue and another worker continues the session.
"""

from __future__ import annotations

import os
import socket

import redis

from alphaswarm_orch.broker.keys import worker_handoff_key

FLAG_TTL_SECONDS = 24 * 60 * 60
"""A worker restarted under the same node name clears it at start anyway."""


def request_handoff(client: redis.Redis, node: str, reason: str) -> None:
    client.set(worker_handoff_key(node), reason, ex=FLAG_TTL_SECONDS)


def clear_handoff(client: redis.Redis, node: str) -> None:
    client.delete(worker_handoff_key(node))


def current_owner() -> tuple[str, str | None]:
    """(`<node> pid <pid>` naming this process as a session's owner, the Celery node name
    when running inside a Celery task, else None)."""
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    node = getattr(request, "hostname", None) if request is not None else None
    return f"{node or socket.gethostname()} pid {os.getpid()}", node
