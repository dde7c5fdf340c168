"""The Celery worker that runs this code location's steps.

`alphaswarm-orch worker` validates the queues against the queue table and then runs Celery
*in this process* (no wrapper, no child `celery` process), so under `exec` it is PID 1 and
receives SIGTERM directly, and a deploy that restarts the process reloads the code.
"""

from __future__ import annotations

import socket

from celery import Celery
from dagster_celery.make_app import make_app

from alphaswarm_orch.execution.celery_config import celery_config
from alphaswarm_orch.execution.tasks import register_tasks
from alphaswarm_orch.queues import parse_queue_list, worker_concurrency
from alphaswarm_orch.settings import Settings


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app workers run: dagster-celery's step task, our broker and settings."""
    app = make_app(
        {
            "broker": settings.require_broker("the worker"),
            "backend": settings.result_backend,
            "include": [],
            "config_source": celery_config(settings),
        }
    )
    register_tasks(app)
    return app


def worker_argv(
    queues: list[str], concurrency: int, name: str | None, loglevel: str = "INFO"
) -> list[str]:
    node = name or f"{'-'.join(queues)}@{socket.gethostname()}"
    if "@" not in node:
        node = f"{node}@{socket.gethostname()}"
    return [
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--optimization",
        "fair",
        "--hostname",
        node,
        "--loglevel",
        loglevel,
    ]


def run_worker(
    queues: str | list[str],
    concurrency: int | None = None,
    name: str | None = None,
    loglevel: str = "INFO",
) -> None:
    """Validate and start a worker; raises QueueError/SettingsError before touching Celery."""
    names = parse_queue_list(queues)
    threads = worker_concurrency(names, concurrency)
    settings = Settings.from_env()
    app = make_worker_app(settings)
    app.worker_main(argv=worker_argv(names, threads, name, loglevel))
