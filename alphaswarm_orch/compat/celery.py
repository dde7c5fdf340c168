"""Celery, kombu and dagster-celery internals: the Redis transport's priority lists and
unacked hash, the worker's request state and consumer, the event dispatcher the metrics hook
into, dagster-celery's app factory, step task name and priority tags, and the modules a run
worker loads on its first submission. Kept apart from compat/dagster.py so that a process
that needs only Dagster's internals (daemon, webserver, CLI) does not import Celery.

Pinned in pyproject.toml (celery, kombu, dagster-celery); tests/compat/test_celery.py holds
the contract each name is used under.
"""

from __future__ import annotations

import importlib

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from celery.utils.nodenames import nodesplit
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.core_execution_loop import DELEGATE_MARKER
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_RUN_PRIORITY_TAG, DAGSTER_CELERY_STEP_PRIORITY_TAG
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
    "DAGSTER_CELERY_RUN_PRIORITY_TAG",
    "DAGSTER_CELERY_STEP_PRIORITY_TAG",
    "DELEGATE_MARKER",
    "PRIORITY_SEPARATOR",
    "PRIORITY_STEPS",
    "RUN_WORKER_MODULES",
    "TASK_EXECUTE_PLAN_NAME",
    "Channel",
    "Consumer",
    "EventDispatcher",
    "Events",
    "import_run_worker_modules",
    "make_app",
    "nodesplit",
    "worker_state",
]
