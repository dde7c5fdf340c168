"""What the metrics take from Celery, kombu, prometheus-client and the execution layer.

Imported here once, so that where a symbol comes from is one line to change.
"""

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from celery.signals import after_task_publish, task_postrun, task_prerun, task_received
from celery.utils.nodenames import nodesplit
from celery.worker import state as worker_state
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from alphaswarm_orch.execution import running
from alphaswarm_orch.execution.celery_config import SENT_AT_HEADER
from alphaswarm_orch.execution.redis_queues import queue_keys

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
