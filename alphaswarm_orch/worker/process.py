"""The Celery worker that runs this code location's steps.

`alphaswarm-orch worker` validates the queues against the queue table and then runs Celery
*in this process* (no wrapper, no child `celery` process), so under `exec` it is PID 1 and
receives SIGTERM directly, and a deploy that restarts the process reloads the code.

Before Celery starts, the worker binds ALPHASWARM_METRICS_PORT (/metrics, /healthz, /readyz),
puts prometheus-client in multiprocess mode for its pool children, and hooks the consumer's
heartbeat; SIGTERM is Celery's warm shutdown (stop consuming, finish running tasks, exit).
Sessions never finish by themselves, so shutting down also raises this node's handoff flag
(sessions/handoff.py): each session it runs ends its tick and moves to another worker.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_shutting_down

from alphaswarm_orch.broker.celery_config import celery_config
from alphaswarm_orch.compat.celery import make_app
from alphaswarm_orch.control import health, metrics
from alphaswarm_orch.execution import import_instance_classes, register_tasks, start_warm_up
from alphaswarm_orch.instance_pool import set_process_role
from alphaswarm_orch.queues import parse_queue_list, worker_concurrency
from alphaswarm_orch.sessions.handoff import clear_handoff, request_handoff
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)

CODE_LOCATION_MODULE = "alphaswarm_orch.definitions"


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app workers run: dagster-celery's step task, our broker and settings."""
    app = make_app(
        {
            "broker": settings.require_broker("the worker"),
            "backend": settings.result_backend,
            "include": list(settings.worker_include),
            "config_source": celery_config(settings),
            "events": metrics.MeteredEvents,
        }
    )
    app.conf.worker_consumer = f"{health.__name__}:HeartbeatConsumer"
    app.steps["consumer"].add(health.HeartbeatStep)
    register_tasks(app, settings)
    return app


def node_name(queues: list[str], name: str | None) -> str:
    node = name or f"{'-'.join(queues)}@{socket.gethostname()}"
    if "@" not in node:
        node = f"{node}@{socket.gethostname()}"
    return node


def worker_argv(
    queues: list[str], concurrency: int, name: str | None, loglevel: str = "INFO"
) -> list[str]:
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
        node_name(queues, name),
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
    set_process_role("worker")
    app = make_worker_app(settings)
    node = node_name(names, name)
    _prepare_operations(app, settings, names, node)
    _hand_sessions_on_at_shutdown(settings, node)
    _preload_code_location()
    _warm_pool_processes()
    app.worker_main(argv=worker_argv(names, threads, name, loglevel))


def _prepare_operations(app: Celery, settings: Settings, queues: list[str], node: str) -> None:
    """Metrics (prefork-safe), running lists, the health server and the heartbeat, before the
    pool forks."""
    metrics.prepare_multiprocess(_multiproc_dir())
    metrics.connect_task_signals()
    metrics.keep_running_lists(settings, queues)
    collector = metrics.WorkerCollector(
        settings,
        node,
        queues,
        transport_options=dict(app.conf.broker_transport_options or {}),
        up=health.HEARTBEAT.up,
    )
    try:
        server = health.HealthServer(
            settings.metrics_port,
            metrics.scrape_registry(collector),
            broker_url=settings.require_broker("the worker"),
            node=node,
            queues=queues,
        )
    except OSError as exc:
        # Metrics and probes are not worth refusing work for; the failing probes show it.
        log.error(
            "metrics/health server not started on port %s (%s): set ALPHASWARM_METRICS_PORT "
            "to a free port",
            settings.metrics_port,
            exc,
        )
        return
    server.start()
    log.info("metrics and health on :%s (/metrics /healthz /readyz)", server.port)

    def close_in_child(**_: Any) -> None:
        server.close_in_child()

    def draining(**_: Any) -> None:
        health.HEARTBEAT.drain()

    worker_process_init.connect(close_in_child, weak=False)
    worker_shutting_down.connect(draining, weak=False)


def _preload_code_location() -> None:
    """Import the code location before the pool forks, so a pool process's first step (a
    session handed over to this worker) does not wait for the import."""
    try:
        importlib.import_module(CODE_LOCATION_MODULE)
    except Exception as exc:  # the step reports the import error with its run
        log.error("code location %s not preloaded: %s", CODE_LOCATION_MODULE, exc)


def _warm_pool_processes() -> None:
    """Import the instance's storage classes before the fork, and warm each pool process
    right after it (tasks.warm_process): a step handed over to a fresh process then starts
    without opening the instance and loading the definitions first."""
    try:
        import_instance_classes()
    except Exception as exc:  # the step opens the instance itself and reports the error
        log.error("instance classes not preloaded: %s", exc)

    def warm(**_: Any) -> None:
        start_warm_up(CODE_LOCATION_MODULE)

    worker_process_init.connect(warm, weak=False)


def _hand_sessions_on_at_shutdown(settings: Settings, node: str) -> None:
    """Clear this node's handoff flag now; raise it when the worker starts shutting down."""
    if settings.redis_url is None:
        return
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        clear_handoff(client, node)
    except redis.RedisError as exc:
        log.error("session handoff flag of %s not cleared (%s)", node, exc)

    def shutting_down(sig: Any = None, how: Any = None, **_: Any) -> None:
        try:
            request_handoff(client, node, f"{how or 'warm'} shutdown ({sig or 'signal'})")
        except redis.RedisError as exc:
            # Sessions then run until the grace period's SIGKILL and are resumed as lost.
            log.error("could not ask %s's sessions to hand on (%s)", node, exc)

    worker_shutting_down.connect(shutting_down, weak=False)


def _multiproc_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR if set (emptied), else a private temp dir removed at exit."""
    configured = os.environ.get(metrics.MULTIPROC_ENV)
    if configured:
        return Path(configured)
    path = Path(tempfile.mkdtemp(prefix="alphaswarm-metrics-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
