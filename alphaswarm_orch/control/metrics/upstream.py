"""What the metrics take from Celery, prometheus-client and the broker layer.

Imported here once, so that where a symbol comes from is one line to change. Private upstream
internals come through the compat seam (alphaswarm_orch/compat/).
"""

from celery.signals import after_task_publish, task_postrun, task_prerun, task_received
from prometheus_client import CollectorRegistry, Counter, Histogram, Metric

from alphaswarm_orch.broker import running
from alphaswarm_orch.broker.celery_config import SENT_AT_HEADER
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

__all__ = [
    "PRIORITY_STEPS",
    "SENT_AT_HEADER",
    "Channel",
    "Collector",
    "CollectorRegistry",
    "Counter",
    "CounterMetricFamily",
    "EventDispatcher",
    "Events",
    "GaugeMetricFamily",
    "Histogram",
    "Metric",
    "MultiProcessCollector",
    "after_task_publish",
    "nodesplit",
    "queue_keys",
    "running",
    "task_postrun",
    "task_prerun",
    "task_received",
    "values",
    "worker_state",
]
