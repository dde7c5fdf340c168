"""The per-queue lists of running steps KEDA scales on (execution/running.py), kept by workers.

A pool process adds its step task to its queue's list when the task starts and removes it when
the task returns (Celery signals); the worker's main process prunes entries left by killed
workers every PRUNE_EVERY_SECONDS, in a thread of its own: a metrics scrape only reads them.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis

from alphaswarm_orch.control.metrics.counters import STEP_TASK_NAME, queue_of
from alphaswarm_orch.control.metrics.upstream import running, task_postrun, task_prerun
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)

_broker_url = ""
"""The broker's Redis, where KEDA reads the queue lengths too (set before the pool forks)."""
_clients: dict[int, redis.Redis] = {}


def keep_running_lists(settings: Settings, queues: list[str]) -> threading.Event:
    """Have pool processes list their running steps, and prune `queues`' lists from a daemon
    thread of this process (set the returned event to stop it)."""
    global _broker_url
    _broker_url = settings.require_broker("running-step lists")
    task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="alphaswarm-running-start")
    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="alphaswarm-running-end")
    stop = threading.Event()
    threading.Thread(
        target=_prune_until, args=(_client(), queues, stop), name="running-lists", daemon=True
    ).start()
    return stop


def _prune_until(client: redis.Redis, queues: list[str], stop: threading.Event) -> None:
    failing = False
    while True:
        try:
            for queue in queues:
                running.prune(client, queue)
        except redis.RedisError as exc:  # scaling counts them meanwhile; retried next round
            (log.debug if failing else log.warning)("running lists not pruned: %s", exc)
            failing = True
        else:
            failing = False
        if stop.wait(running.PRUNE_EVERY_SECONDS):
            return


def _client() -> redis.Redis:
    """This process's client for the running lists."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = redis.Redis.from_url(
            _broker_url, socket_timeout=1, socket_connect_timeout=1
        )
    return _clients[pid]


def _track(task: Any, task_id: str | None, start: bool) -> None:
    """In the child: a step task enters or leaves its queue's running list."""
    if task is None or task.name != STEP_TASK_NAME or not task_id:
        return
    queue = queue_of(getattr(task.request, "delivery_info", None))
    try:
        if start:
            running.started(_client(), queue, task_id)
        else:
            running.finished(_client(), queue, task_id)
    except redis.RedisError as exc:  # counted for scaling only; pruned if left behind
        log.warning("running list of queue %s not updated: %s", queue, exc)


def _on_task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any):
    _track(task, task_id, start=True)


def _on_task_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any):
    _track(task, task_id, start=False)
