"""Prometheus metrics of a worker, served on :9100/metrics.

Task, worker and queue series keep danihodovic/celery-exporter's names and labels
(`celery_task_*_total{name,hostname,queue_name}`, `celery_task_runtime`, `celery_queue_length`
...), so its dashboards and alerts work unchanged; this project's own series are prefixed
`alphaswarm_`.

Prefork: task events (received, started, succeeded, failed, retried, rejected, revoked) are
counted in the worker's main process, which sees every task of every child; what only a child
sees (tasks it sends, Dagster step outcomes) is counted in prometheus-client's multiprocess mode,
so a scrape sums every process, dead children included. Gauges (queue lengths, kill switch ...)
are read from Redis when scraped, by the HTTP thread of the main process, with short socket
timeouts: a scrape never runs on, nor waits for, a process that executes tasks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import redis
from celery.signals import after_task_publish, task_postrun, task_prerun, task_received
from prometheus_client import CollectorRegistry, Counter, Histogram, Metric

from alphaswarm_orch.broker import running
from alphaswarm_orch.broker.celery_config import SENT_AT_HEADER
from alphaswarm_orch.broker.keys import (
    REQUEST_FAMILIES,
    dead_letter_stream,
    queue_kill_switch_key,
)
from alphaswarm_orch.broker.kill_switch import read_states
from alphaswarm_orch.broker.redis_queues import queue_keys
from alphaswarm_orch.compat.celery import (
    PRIORITY_STEPS,
    Channel,
    EventDispatcher,
    Events,
    nodesplit,
    worker_state,
)
from alphaswarm_orch.compat.prometheus import (
    Collector,
    CounterMetricFamily,
    GaugeMetricFamily,
    MultiProcessCollector,
    values,
)
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SESSION_QUEUES = ("paper", "hft")
"""Queues whose workers report session metrics."""
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
_REDIS_TIMEOUT_SECONDS = 1.0
_LEDGER_CACHE_SECONDS = 15.0
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


def _queue_of(delivery_info: dict[str, Any] | None) -> str:
    # Celery publishes to a named queue through the anonymous exchange, routing key = queue.
    info = delivery_info or {}
    return str(info.get("routing_key") or info.get("queue") or "unknown")


def _on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    labels = {
        "name": request.name,
        "hostname": hostname_label(request.hostname or getattr(sender, "hostname", "")),
        "queue_name": _queue_of(request.delivery_info),
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

    dispatcher_cls = "alphaswarm_orch.control.metrics:MeteredEventDispatcher"


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
        "queue_name": routing_key if not exchange else f"{exchange}:{routing_key}",
    }
    task_metrics().states["sent"].labels(**labels).inc()


def _exception_class(fields: dict[str, Any]) -> str:
    text = str(fields.get("exception") or "")
    head = text.split("(", 1)[0].strip()
    return head if head.isidentifier() else "UnknownException"


_running_clients: dict[int, redis.Redis] = {}


def _running_client() -> redis.Redis:
    """This pool process's client for the running lists (the broker's Redis, where KEDA
    reads queue lengths too)."""
    pid = os.getpid()
    if pid not in _running_clients:
        url = Settings.from_env().require_broker("running-step lists")
        _running_clients[pid] = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1
        )
    return _running_clients[pid]


def _track_running(task: Any, task_id: str | None, start: bool) -> None:
    """In the child: a step task enters or leaves its queue's running list (broker/running.py)."""
    if task is None or task.name != STEP_TASK_NAME or not task_id:
        return
    queue = _queue_of(getattr(task.request, "delivery_info", None))
    try:
        if start:
            running.started(_running_client(), queue, task_id)
        else:
            running.finished(_running_client(), queue, task_id)
    except redis.RedisError as exc:  # counted for scaling only; pruned if left behind
        log.warning("running list of queue %s not updated: %s", queue, exc)


def _on_task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any):
    _track_running(task, task_id, start=True)


def _on_task_postrun(
    sender: Any = None,
    task: Any = None,
    retval: Any = None,
    args: Any = None,
    kwargs: Any = None,
    task_id: str | None = None,
    **_: Any,
) -> None:
    """In the child: leave the running list; count the Dagster step outcomes returned."""
    _track_running(task, task_id, start=False)
    events = retval.get("events") if isinstance(retval, dict) else retval
    if task is None or task.name != STEP_TASK_NAME or not isinstance(events, list):
        return
    packed = (kwargs or {}).get("execute_step_args_packed") or (args[0] if args else None)
    job = _job_name(packed)
    queue = _queue_of(getattr(task.request, "delivery_info", None))
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
    task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="alphaswarm-metrics-running")


def queue_lengths(
    client: redis.Redis, queues: Iterable[str], transport_options: dict[str, Any]
) -> dict[str, int]:
    """Messages waiting per queue, every priority list summed, in one round trip."""
    queues = list(queues)
    steps = transport_options.get("priority_steps", PRIORITY_STEPS)
    keyed = [(q, queue_keys(q, steps)) for q in queues]
    pipe = client.pipeline(transaction=False)
    for _queue, keys in keyed:
        for key in keys:
            pipe.llen(key)
    counts = iter(pipe.execute())
    return {queue: sum(next(counts) for _ in keys) for queue, keys in keyed}


def unacked_by_queue(client: redis.Redis, transport_options: dict[str, Any]) -> dict[str, int]:
    """Messages delivered but not yet acked (running, or held by a dead worker), per queue."""
    key = transport_options.get("unacked_key", Channel.unacked_key)
    counts: dict[str, int] = {}
    for raw in client.hvals(key):
        try:
            _payload, exchange, routing_key = json.loads(raw)
        except (TypeError, ValueError):
            continue
        queue = routing_key if not exchange else f"{exchange}:{routing_key}"
        counts[queue] = counts.get(queue, 0) + 1
    return counts


class WorkerCollector(Collector):
    """Gauges read at scrape time: worker state, queues, kill switch, dead letters, ledger lag."""

    def __init__(
        self,
        settings: Settings,
        node: str,
        queues: list[str],
        transport_options: dict[str, Any],
        up: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.hostname = hostname_label(node)
        self.queues = queues
        self.transport_options = transport_options
        self.up = up
        self.broker = _client(settings.require_broker("worker metrics"))
        self.control = (
            self.broker
            if settings.redis_url == settings.broker_url
            else _client(settings.require_redis("worker metrics"))
        )
        self._ledger_cache: tuple[float, list[GaugeMetricFamily]] | None = None
        self.session_queues = [q for q in queues if q in SESSION_QUEUES]
        self._session_cache: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 while the worker's consumer loop runs connected to the broker.",
            labels=["hostname"],
        )
        up.add_metric([self.hostname], 1 if self.up() else 0)
        yield up
        active = GaugeMetricFamily(
            "celery_worker_tasks_active",
            "The number of tasks the worker is currently processing",
            labels=["hostname"],
        )
        active.add_metric([self.hostname], len(worker_state.active_requests))
        yield active
        sources = GaugeMetricFamily(
            "alphaswarm_metrics_source_up",
            "1 if the last scrape could read this source (broker, redis, ledger).",
            labels=["source"],
        )
        yield from self._broker_series(sources)
        yield from self._control_series(sources)
        yield from self._ledger_series(sources)
        yield from self._session_series()
        yield sources

    def _broker_series(self, sources: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        try:
            lengths = queue_lengths(self.broker, self.queues, self.transport_options)
            unacked = unacked_by_queue(self.broker, self.transport_options)
            runs = {queue: running.prune(self.broker, queue) for queue in self.queues}
        except redis.RedisError as exc:
            log.warning("metrics: broker unreadable: %s", exc)
            sources.add_metric(["broker"], 0)
            return
        sources.add_metric(["broker"], 1)
        length = GaugeMetricFamily(
            "celery_queue_length",
            "The number of message in broker queue.",
            labels=["queue_name"],
        )
        inflight = GaugeMetricFamily(
            "alphaswarm_queue_unacked",
            "Messages delivered to a worker and not yet acknowledged, per queue.",
            labels=["queue_name"],
        )
        steps = GaugeMetricFamily(
            "alphaswarm_queue_running",
            "Step tasks running on the queue's workers (what KEDA adds to the queue length).",
            labels=["queue_name"],
        )
        for queue in self.queues:
            length.add_metric([queue], lengths[queue])
            inflight.add_metric([queue], unacked.get(queue, 0))
            steps.add_metric([queue], runs[queue])
        yield length
        yield inflight
        yield steps

    def _control_series(self, sources: GaugeMetricFamily) -> Iterator[Metric]:
        scopes = {"global": self.settings.kill_switch_key}
        scopes.update({q: queue_kill_switch_key(scopes["global"], q) for q in self.queues})
        pipe = self.control.pipeline(transaction=False)
        for family in REQUEST_FAMILIES:
            pipe.xlen(dead_letter_stream(family))
            pipe.xinfo_stream(dead_letter_stream(family))
        # Fail closed: a switch key of any type, or an unreadable Redis, reports engaged.
        states, replies = read_states(pipe, list(scopes.values()))
        kill = GaugeMetricFamily(
            "alphaswarm_kill_switch_engaged",
            "1 while the kill switch (scope=global, or a queue's own key) is engaged: its key "
            "exists (any type) or cannot be read.",
            labels=["scope"],
        )
        for scope, state in zip(scopes, states, strict=True):
            kill.add_metric([scope], 0 if state is None else 1)
        yield kill
        if isinstance(replies, Exception):
            errors: list[Exception] = [replies]
        else:
            # XINFO STREAM of a stream that does not exist yet (no dead letter ever) is an error.
            replies = [_NO_STREAM if _no_such_key(reply) else reply for reply in replies]
            errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            log.warning("metrics: redis unreadable: %s", errors[0])
            sources.add_metric(["redis"], 0)
            return
        sources.add_metric(["redis"], 1)
        letters = GaugeMetricFamily(
            "alphaswarm_sensor_dead_letters",
            "Dead letters held in each family's stream (trimmed: it stops growing at the cap).",
            labels=["family"],
        )
        added = CounterMetricFamily(
            "alphaswarm_sensor_dead_letters_added",
            "Dead letters ever appended to each family's stream (XINFO STREAM entries-added, "
            "Redis 7+): trimming never lowers it; deleting the stream resets it.",
            labels=["family"],
        )
        for index, family in enumerate(REQUEST_FAMILIES):
            length, info = replies[2 * index : 2 * index + 2]
            letters.add_metric([family], length)
            if "entries-added" in info:  # absent before Redis 7
                added.add_metric([family], info["entries-added"])
        yield letters
        yield added

    def _ledger_series(self, sources: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        if self._ledger_cache is None or now - self._ledger_cache[0] > _LEDGER_CACHE_SECONDS:
            self._ledger_cache = (now, ledger_lag_series(self.settings))
        series = self._ledger_cache[1]
        if series:
            sources.add_metric(["ledger"], 1)
            yield from series

    def _session_series(self) -> Iterator[Metric]:
        if not self.session_queues:
            return
        now = time.monotonic()
        if self._session_cache is None or now - self._session_cache[0] > _LEDGER_CACHE_SECONDS:
            self._session_cache = (
                now,
                session_series(self.settings, self.control, self.session_queues),
            )
        yield from self._session_cache[1]


def session_series(settings: Settings, client: redis.Redis, queues: list[str]) -> list[Metric]:
    """Sessions per queue and state, waiting for a slot, handoffs, losses, resumes (ledger
    and leases; every worker of the queue reports the same, cluster-wide numbers)."""
    try:
        from alphaswarm_orch.ledger.db import engine_for
        from alphaswarm_orch.sessions.status import counts_by_queue

        counts = counts_by_queue(engine_for(settings.ledger_url), client, queues)
    except Exception as exc:  # a broken ledger must not break the scrape
        log.warning("metrics: session state unavailable: %s", exc)
        return []
    states = GaugeMetricFamily(
        "alphaswarm_sessions",
        "Sessions that continue, per queue and state (running, resumed, handing_off, lost).",
        labels=["queue_name", "state"],
    )
    waiting = GaugeMetricFamily(
        "alphaswarm_sessions_waiting",
        "Sessions whose step waits for a worker slot (handing off, or lost and not resumed).",
        labels=["queue_name"],
    )
    totals = {
        kind: CounterMetricFamily(f"alphaswarm_session_{kind}", doc, labels=["queue_name"])
        for kind, doc in (
            ("handoffs", "Sessions handed on by a stopping worker."),
            ("losses", "Sessions whose worker vanished without handing them on."),
            ("resumes", "Sessions taken over by a new step after a handoff or a loss."),
        )
    }
    for queue, count in counts.items():
        for state, value in count.by_state.items():
            states.add_metric([queue, state], value)
        waiting.add_metric([queue], count.waiting)
        totals["handoffs"].add_metric([queue], count.handoffs)
        totals["losses"].add_metric([queue], count.losses)
        totals["resumes"].add_metric([queue], count.resumes)
    return [states, waiting, *totals.values()]


def ledger_lag_series(settings: Settings) -> list[GaugeMetricFamily]:
    """The ledger mirror's lag and quarantine, if the ledger package is there and its
    database answers."""
    try:
        from alphaswarm_orch.ledger.store import mirror_status
    except ImportError:
        return []
    try:
        status = mirror_status(settings)
    except Exception as exc:  # a broken ledger must not break the scrape
        log.warning("metrics: ledger mirror status unavailable: %s", exc)
        return []
    if not status.available:
        log.warning("metrics: ledger unavailable: %s", status.last_error)
        return []
    series = []
    for name, doc, value in (
        (
            "alphaswarm_ledger_mirror_lag_seconds",
            "Age of the newest Dagster event not yet mirrored into workload_runs.",
            status.lag_seconds,
        ),
        (
            "alphaswarm_ledger_mirror_cursor",
            "Event-log storage id the mirror has reached (-1 before its first pass).",
            status.cursor,
        ),
        (
            "alphaswarm_ledger_mirror_synced_timestamp_seconds",
            "When the mirror last completed a pass (epoch seconds; absent before the first).",
            status.synced_at.timestamp() if status.synced_at else None,
        ),
        (
            "alphaswarm_ledger_quarantined_events",
            "Dagster events set aside in ledger_quarantine because the ledger cannot store them.",
            status.quarantined,
        ),
    ):
        if value is not None:
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(value))
            series.append(family)
    return series


_NO_STREAM = {"entries-added": 0}


def _no_such_key(reply: Any) -> bool:
    return isinstance(reply, redis.ResponseError) and "no such key" in str(reply).lower()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=_REDIS_TIMEOUT_SECONDS, socket_connect_timeout=_REDIS_TIMEOUT_SECONDS
    )


def scrape_registry(collector: WorkerCollector) -> CollectorRegistry:
    """What /metrics serves: every process's samples plus the scrape-time gauges."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(collector)
    return registry
