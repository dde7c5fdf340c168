"""prometheus-client internals: the custom-collector families and base class, the
multiprocess collector, and the value class a forked pool process must re-pick once
PROMETHEUS_MULTIPROC_DIR is set.

Pinned in pyproject.toml (prometheus-client); tests/compat/test_prometheus.py holds the
contract each name is used under.
"""

from __future__ import annotations

from prometheus_client import values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "Collector",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "MultiProcessCollector",
    "values",
]
