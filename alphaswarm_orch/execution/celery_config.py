"""Celery settings shared by the executor (the sender) and the worker (the consumer).

One place, so that both ends of the queue always agree.
"""

from __future__ import annotations

from typing import Any

from alphaswarm_orch.queues import DEFAULT_QUEUE
from alphaswarm_orch.settings import Settings

# A step can run for hours (a paper session is one step), so Redis must not redeliver an
# unacknowledged message while its worker is still alive and working on it.
VISIBILITY_TIMEOUT_SECONDS = 12 * 60 * 60


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery `config_source` for this code location (broker and backend passed separately)."""
    return {
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": 5,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "result_expires": 24 * 60 * 60,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }
