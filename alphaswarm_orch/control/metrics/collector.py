"""The gauges read at scrape time: worker state, queues, kill switch, dead letters, ledger.

They are read from Redis when scraped, by the HTTP thread of the worker's main process, with
short socket timeouts: a scrape never runs on, nor waits for, a process that executes tasks.
A scrape only reads (running lists are pruned by running_lists.py, the ledger is never created
or migrated here).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from alphaswarm_orch.broker.keys import (
    REQUEST_FAMILIES,
    dead_letter_stream,
    queue_kill_switch_key,
)
from alphaswarm_orch.broker.kill_switch import read_states
from alphaswarm_orch.control.metrics.counters import hostname_label, queue_label
from alphaswarm_orch.control.metrics.dagster_series import ledger_lag_series, session_series
from alphaswarm_orch.control.metrics.upstream import (
    PRIORITY_STEPS,
    Channel,
    Collector,
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    MultiProcessCollector,
    queue_keys,
    running,
    worker_state,
)
from alphaswarm_orch.queues import SESSION_QUEUES
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)

_REDIS_TIMEOUT_SECONDS = 1.0
_LEDGER_CACHE_SECONDS = 15.0


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
        queue = queue_label(exchange, routing_key)
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
            runs = {queue: running.live(self.broker, queue) for queue in self.queues}
        except redis.RedisError as exc:
            log.warning("metrics: broker unreadable: %s", exc)
            sources.add_metric(["broker"], 0)
            return
        sources.add_metric(["broker"], 1)
        for name, doc, counts in (
            ("celery_queue_length", "The number of message in broker queue.", lengths),
            (
                "alphaswarm_queue_unacked",
                "Messages delivered to a worker and not yet acknowledged, per queue.",
                unacked,
            ),
            (
                "alphaswarm_queue_running",
                "Step tasks running on the queue's workers (what KEDA adds to the queue length).",
                runs,
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["queue_name"])
            for queue in self.queues:
                family.add_metric([queue], counts.get(queue, 0))
            yield family

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
