"""Celery settings shared by the executor (the sender) and the worker (the consumer).

One place, so that both ends of the queue always agree. The delivery settings below are what
makes "nothing is lost" true on Redis; each says why it is set.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish

from alphaswarm_orch.queues import DEFAULT_QUEUE
from alphaswarm_orch.settings import Settings

SENT_AT_HEADER = "alphaswarm_sent_at"
"""Message header with the publish time (epoch seconds): the worker's queue-wait metric."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery `config_source` for this code location (broker and backend passed separately)."""
    before_task_publish.connect(_stamp_sent_at, weak=False, dispatch_uid=SENT_AT_HEADER)
    return {
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": 5,
        # Ack after the task returns, not when it is received: a worker that dies mid-step
        # leaves the message unacked, and Redis redelivers it (after the visibility timeout).
        "task_acks_late": True,
        # A prefork child killed mid-task (OOM, SIGKILL) requeues its message instead of
        # acking it as failed.
        "task_reject_on_worker_lost": True,
        # One message reserved per process: a draining or dying worker holds no backlog that
        # other workers could be running.
        "worker_prefetch_multiplier": 1,
        # Keep reconnecting through a Redis outage instead of exiting after 100 attempts:
        # the worker resumes consuming when Redis returns (liveness stays healthy meanwhile).
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Every worker sweeps for messages whose visibility timeout expired (their worker
            # died) every ~10 s, sooner for short timeouts: kombu's default only scans on
            # every 10th 10 s tick, adding up to 100 s before a lost task comes back.
            "unacked_restore_interval": min(10, max(1, settings.visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "result_expires": 24 * 60 * 60,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


def _stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())
