"""Prometheus metrics of a worker, served on :9100/metrics.

Task, worker and queue series keep danihodovic/celery-exporter's names and labels
(`celery_task_*_total{name,hostname,queue_name}`, `celery_task_runtime`, `celery_queue_length`
...), so its dashboards and alerts work unchanged; this project's own series are prefixed
`alphaswarm_`.

- counters.py: what the worker counts as tasks go (task events, Dagster step outcomes).
- running_lists.py: the per-queue lists of running steps KEDA scales on, and their pruning.
- collector.py: the gauges read from Redis when scraped, and the registry /metrics serves.
- dagster_series.py: series derived from the ledger (mirror lag, sessions).

A scrape only reads: it never migrates or creates the ledger, nor writes a Redis key.
"""

from alphaswarm_orch.control.metrics.collector import WorkerCollector, scrape_registry
from alphaswarm_orch.control.metrics.counters import (
    MULTIPROC_ENV,
    MeteredEvents,
    connect_task_signals,
    prepare_multiprocess,
)
from alphaswarm_orch.control.metrics.dagster_series import ledger_lag_series
from alphaswarm_orch.control.metrics.running_lists import keep_running_lists

__all__ = [
    "MULTIPROC_ENV",
    "MeteredEvents",
    "WorkerCollector",
    "connect_task_signals",
    "keep_running_lists",
    "ledger_lag_series",
    "prepare_multiprocess",
    "scrape_registry",
]
