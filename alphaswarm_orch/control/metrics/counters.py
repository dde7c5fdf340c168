"""The counters and histograms the worker increments as tasks go.

Prefork: task events (received, started, succeeded, failed, retried, rejected, revoked) are
counted in the worker's main process, which sees every task of every child; what only a child
sees (tasks it sends, Dagster step outcomes) is counted in prometheus-client's multiprocess mode,
so a scrape sums every process, dead children included.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from alphaswarm_orch.control.metrics.upstream import (
    SENT_AT_HEADER,
    CollectorRegistry,
    Counter,
    EventDispatcher,
    Events,
    Histogram,
    after_task_publish,
    nodesplit,
    task_postrun,
    task_received,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STEP_TASK_NAME = "execute_plan"
"""The step task; it returns the step's serialized Dagster events (a list, or under "events")."""

TASK_STATES = (
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
)
_FINAL_STATES = ("succeeded", "failed", "retried", "revoked", "rejected")
"""Events that end one delivery of a task."""
_LABELS = ("name", "hostname", "queue_name")
_STEP_OUTCOMES = {
    "STEP_SUCCESS": "success",
    "STEP_FAILURE": "failure",
    "STEP_UP_FOR_RETRY": "retry",
    "STEP_SKIPPED": "skipped",
}
_TRACKED_TASKS = 10_000


def prepare_multiprocess(directory: Path) -> Path:
    """Switch this process (and children forked later) to multiprocess mode in `directory`.

    The directory is emptied first: samples of a previous worker run must not be summed into
    this one's counters. prometheus-client picks its value class when first imported, so it is
    re-picked here in case something imported it earlier.
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()
    return directory


class TaskMetrics:
    """The counters and histograms, created once multiprocess mode is set up."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        def counter(state: str) -> Counter:
            labels = (*_LABELS, "exception") if state == "failed" else _LABELS
            return Counter(f"celery_task_{state}", _HELP[state], labels, registry=registry)

        self.states = {state: counter(state) for state in TASK_STATES}
        self.runtime = Histogram(
            "celery_task_runtime",
            "Histogram of task runtime measurements.",
            _LABELS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "celery_task_queue_wait_time",
            "Seconds from publish to the start of execution.",
            _LABELS,
            registry=registry,
        )
        self.dagster_steps = Counter(
            "alphaswarm_dagster_steps",
            "Dagster step outcomes (success, failure, retry, skipped) by job and queue.",
            ("job", "queue_name", "outcome"),
            registry=registry,
        )


_HELP = {
    "sent": "Sent when a task message is published.",
    "received": "Sent when the worker receives a task.",
    "started": "Sent just before the worker executes the task.",
    "succeeded": "Sent if the task executed successfully.",
    "failed": "Sent if the execution of the task failed.",
    "retried": "Sent if the task failed, but will be retried in the future.",
    "revoked": "Sent if the task has been revoked.",
    "rejected": "The task was rejected by the worker, possibly to be re-queued.",
}

_metrics: TaskMetrics | None = None
_metrics_lock = threading.Lock()


def task_metrics() -> TaskMetrics:
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = TaskMetrics()
        return _metrics


def hostname_label(node: str) -> str:
    """celery-exporter's `hostname` label: the host part of `name@host` (bounded cardinality)."""
    return nodesplit(node)[1] or node


def queue_label(exchange: str, routing_key: str) -> str:
    """The `queue_name` label of a message published to `exchange` with `routing_key`."""
    return routing_key if not exchange else f"{exchange}:{routing_key}"


def queue_of(delivery_info: dict[str, Any] | None) -> str:
    # Celery publishes to a named queue through the anonymous exchange, routing key = queue.
    info = delivery_info or {}
    return str(info.get("routing_key") or info.get("queue") or "unknown")


class _Tracked:
    """What the main process remembers about a received task until it ends.

    Events name a task by id only, and a retried task keeps its id: its next delivery can
    arrive before the retried event of the previous one, so deliveries are counted.
    """

    __slots__ = ("deliveries", "labels", "sent_at")

    def __init__(self, labels: dict[str, str], sent_at: float | None) -> None:
        self.labels = labels
        self.sent_at = sent_at
        self.deliveries = 1


_tracked: OrderedDict[str, _Tracked] = OrderedDict()
_tracked_lock = threading.Lock()


def _on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    labels = {
        "name": request.name,
        "hostname": hostname_label(request.hostname or getattr(sender, "hostname", "")),
        "queue_name": queue_of(request.delivery_info),
    }
    sent_at = request.request_dict.get(SENT_AT_HEADER)
    with _tracked_lock:
        tracked = _tracked.get(request.id)
        if tracked is None:
            _tracked[request.id] = _Tracked(labels, float(sent_at) if sent_at else None)
        else:
            tracked.deliveries += 1
            tracked.sent_at = float(sent_at) if sent_at else None
        while len(_tracked) > _TRACKED_TASKS:
            _tracked.popitem(last=False)
    task_metrics().states["received"].labels(**labels).inc()


class MeteredEventDispatcher(EventDispatcher):
    """Counts every task event this process emits, as celery-exporter counts them on the wire.

    Counting at the source instead of on the event stream keeps the numbers right when the
    broker drops events and needs no separate exporter process.
    """

    def send(self, type: str, blind: bool = False, **fields: Any) -> Any:
        if type.startswith("task-"):
            _count_event(type[len("task-") :], self.hostname, fields)
        return super().send(type, blind=blind, **fields)


class MeteredEvents(Events):
    """`Celery(events=...)` class whose dispatchers count task events."""

    dispatcher_cls = f"{__name__}:MeteredEventDispatcher"


def _count_event(state: str, node: str, fields: dict[str, Any]) -> None:
    if state not in TASK_STATES or state in ("sent", "received"):
        return
    metrics = task_metrics()
    uuid = fields.get("uuid", "")
    with _tracked_lock:
        tracked = _tracked.get(uuid)
        if tracked is not None and state in _FINAL_STATES:
            tracked.deliveries -= 1
            if tracked.deliveries <= 0:
                del _tracked[uuid]
    if tracked is None:
        labels = {"name": "unknown", "hostname": hostname_label(node), "queue_name": "unknown"}
    else:
        labels = tracked.labels
    if state == "failed":
        metrics.states["failed"].labels(**labels, exception=_exception_class(fields)).inc()
        return
    metrics.states[state].labels(**labels).inc()
    if state == "started" and tracked is not None and tracked.sent_at is not None:
        metrics.queue_wait.labels(**labels).observe(max(0.0, time.time() - tracked.sent_at))
    elif state == "succeeded" and fields.get("runtime") is not None:
        metrics.runtime.labels(**labels).observe(float(fields["runtime"]))


def _on_task_published(
    sender: Any = None,
    headers: dict[str, Any] | None = None,
    exchange: str = "",
    routing_key: str = "",
    **_: Any,
) -> None:
    """A task sent from this worker (a workflow step dispatching a heavy task)."""
    labels = {
        "name": str((headers or {}).get("task") or sender),
        "hostname": hostname_label(socket.gethostname()),
        "queue_name": queue_label(exchange, routing_key),
    }
    task_metrics().states["sent"].labels(**labels).inc()


def _exception_class(fields: dict[str, Any]) -> str:
    text = str(fields.get("exception") or "")
    head = text.split("(", 1)[0].strip()
    return head if head.isidentifier() else "UnknownException"


def _on_task_postrun(
    sender: Any = None,
    task: Any = None,
    retval: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """In the child: count the Dagster step outcomes a step task returned."""
    events = retval.get("events") if isinstance(retval, dict) else retval
    if task is None or task.name != STEP_TASK_NAME or not isinstance(events, list):
        return
    packed = (kwargs or {}).get("execute_step_args_packed") or (args[0] if args else None)
    job = _job_name(packed)
    queue = queue_of(getattr(task.request, "delivery_info", None))
    counter = task_metrics().dagster_steps
    for raw in events:
        try:
            event_type = json.loads(raw).get("event_type_value")
        except (TypeError, ValueError, AttributeError):
            continue
        outcome = _STEP_OUTCOMES.get(event_type)
        if outcome is not None:
            counter.labels(job=job, queue_name=queue, outcome=outcome).inc()


def _job_name(packed: Any) -> str:
    # ExecuteStepArgs as packed by dagster's serdes; the job name keeps its legacy key.
    if not isinstance(packed, dict):
        return "unknown"
    origin = packed.get("pipeline_origin") or packed.get("job_origin")
    if isinstance(origin, dict):
        name = origin.get("pipeline_name") or origin.get("job_name")
        if name:
            return str(name)
    return "unknown"


def connect_task_signals() -> None:
    """Count sent and received tasks and (in children) Dagster step outcomes."""
    after_task_publish.connect(_on_task_published, weak=False, dispatch_uid="alphaswarm-metrics-tx")
    task_received.connect(_on_task_received, weak=False, dispatch_uid="alphaswarm-metrics-rx")
    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="alphaswarm-metrics-step")
