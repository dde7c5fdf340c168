"""The queue table: the single source of truth for where work runs.

Everything that names a queue (op tags, the worker entrypoint, k8s manifests, KEDA
ScaledObjects) derives from or is checked against this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

QUEUE_TAG = "dagster-celery/queue"
"""The op tag the Celery executor routes by (dagster-celery's protocol)."""


@dataclass(frozen=True)
class LightQueue:
    """A queue this code location's workers consume."""

    name: str
    scale_to_zero: bool
    concurrency: int
    prod_min_replicas: int = 0
    pinned_node_pool: str | None = None
    max_replicas: int = 10

    @property
    def min_replicas(self) -> int:
        return 0 if self.scale_to_zero else 1

    @property
    def slots(self) -> int:
        """Steps the queue's pool runs at once at its largest: what the run coordinator admits
        for a workload of one long step per run (sessions), so that a run it starts always
        finds a slot once KEDA has scaled out (dagster.yaml tag_concurrency_limits; a test
        checks they agree)."""
        return self.concurrency * self.max_replicas


LIGHT_QUEUES: Mapping[str, LightQueue] = {
    q.name: q
    for q in (
        LightQueue("default", scale_to_zero=True, concurrency=4, prod_min_replicas=1),
        LightQueue("paper", scale_to_zero=False, concurrency=4, max_replicas=5),
        LightQueue("terraform", scale_to_zero=True, concurrency=4),
        LightQueue("ingestion", scale_to_zero=False, concurrency=4),
        LightQueue("workflows", scale_to_zero=True, concurrency=4),
        LightQueue(
            "hft", scale_to_zero=False, concurrency=1, pinned_node_pool="hft", max_replicas=4
        ),
    )
}

HEAVY_QUEUES: frozenset[str] = frozenset({"backtest", "training", "ml", "agents", "factors", "rag"})
"""Executor-only queues (alphaswarm-executor image). Never consumed here; legal only as
dispatch targets of a workflow step."""

DEFAULT_QUEUE = "default"


class QueueError(ValueError):
    """A queue name that this code location may not use."""


SESSION_QUEUES = ("paper", "hft")
"""Queues whose runs are one session step each: the run coordinator's limit for their
workload (tag alphaswarm/workload) is the queue's `slots`."""


def check_light_queue(queue: str, *, where: str = "") -> LightQueue:
    """Return the light queue named `queue`, or raise naming it (and `where` it was used)."""
    context = f" ({where})" if where else ""
    if queue in LIGHT_QUEUES:
        return LIGHT_QUEUES[queue]
    if queue in HEAVY_QUEUES:
        raise QueueError(
            f"queue {queue!r}{context} is a heavy executor queue: it is consumed only by "
            f"alphaswarm-executor. Route the op to a light queue ({', '.join(LIGHT_QUEUES)}) "
            "or dispatch the heavy task from a workflow step."
        )
    raise QueueError(
        f"unknown queue {queue!r}{context}: light queues are {', '.join(LIGHT_QUEUES)}."
    )


def check_heavy_queue(queue: str, *, where: str = "") -> str:
    """Return `queue` if it is a legal dispatch target (a heavy executor queue)."""
    context = f" ({where})" if where else ""
    if queue in HEAVY_QUEUES:
        return queue
    if queue in LIGHT_QUEUES:
        raise QueueError(
            f"queue {queue!r}{context} is a light queue: dispatch targets must be executor "
            f"queues ({', '.join(sorted(HEAVY_QUEUES))})."
        )
    raise QueueError(
        f"unknown queue {queue!r}{context}: executor queues are {', '.join(sorted(HEAVY_QUEUES))}."
    )


def queue_tags(queue: str) -> dict[str, str]:
    """Op/asset tags that route a step to `queue` (validated against the table). Step retries
    are the op's `retry_policy=dg.RetryPolicy(...)`, not a tag."""
    check_light_queue(queue)
    return {QUEUE_TAG: queue}


def parse_queue_list(value: str | Iterable[str]) -> list[str]:
    """Parse `default,workflows` (or a list of such) into validated, de-duplicated names."""
    parts = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for part in parts:
        for name in part.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise QueueError("no queue given: name one or more light queues, e.g. default,workflows")
    for name in names:
        check_light_queue(name)
    return names


def worker_concurrency(queues: Iterable[str], requested: int | None = None) -> int:
    """Concurrency for a worker consuming `queues`: the table's value, hft forcing 1."""
    table = [LIGHT_QUEUES[q] for q in queues]
    limit = min(q.concurrency for q in table)
    if requested is None:
        return limit
    if requested < 1:
        raise QueueError(f"concurrency must be at least 1, got {requested}")
    single = [q.name for q in table if q.concurrency == 1]
    if single and requested > 1:
        raise QueueError(
            f"a worker consuming {', '.join(single)} runs with concurrency 1 (single-threaded "
            f"hot path); got --concurrency {requested}. Run separate workers for other queues."
        )
    return requested
