"""Celery and kombu internals: the Redis transport's priority lists and unacked hash, the
worker's request state and consumer, the event dispatcher the metrics hook into, and the
modules a run worker loads on its first submission.

Pinned in pyproject.toml (celery, kombu); tests/compat/test_celery.py holds the contract
each name is used under.
"""

from __future__ import annotations

import importlib

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from celery.utils.nodenames import nodesplit
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from kombu.transport.redis import PRIORITY_STEPS, Channel

CONSUMER_TASKS_STEP = "celery.worker.consumer.tasks:Tasks"
"""The consumer bootstep that starts task consumption: a step that `requires` it runs once
the worker consumes."""

PRIORITY_SEPARATOR: str = Channel.sep
"""Between a queue's name and its priority step in the Redis list names kombu uses."""

RUN_WORKER_MODULES = (
    "celery.app.amqp",
    "celery.app.events",
    "celery.backends.redis",
    "celery.contrib.testing.tasks",
    "celery.events.dispatcher",
    "celery.fixups.django",
    "celery.loaders.app",
    "celery.worker",
    "kombu.transport.redis",
)
"""Celery modules a run worker's executor loads on its first submission (forkserver preload)."""


def import_run_worker_modules() -> None:
    """Import RUN_WORKER_MODULES (what a forkserver holds so its forks need not)."""
    for name in RUN_WORKER_MODULES:
        importlib.import_module(name)


__all__ = [
    "CONSUMER_TASKS_STEP",
    "PRIORITY_SEPARATOR",
    "PRIORITY_STEPS",
    "RUN_WORKER_MODULES",
    "Channel",
    "Consumer",
    "EventDispatcher",
    "Events",
    "import_run_worker_modules",
    "nodesplit",
    "worker_state",
]
