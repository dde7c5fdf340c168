"""Contracts of the prometheus-client internals in alphaswarm_orch.compat.prometheus, each
exercised the way the package uses it, against the pinned version."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import prometheus_client
import pytest

from alphaswarm_orch.compat import prometheus as compat
from tests.compat.contract import broken, check_all_covered, run_contract


def _fail(name: str, what: str) -> str:
    return broken(compat, name, "prometheus-client", what)


def families() -> None:
    gauge = compat.GaugeMetricFamily("alphaswarm_x", "doc", labels=["queue_name"])
    gauge.add_metric(["default"], 3)
    counter = compat.CounterMetricFamily("alphaswarm_y", "doc", labels=["queue_name"])
    counter.add_metric(["default"], 2)
    assert [(s.name, s.labels, s.value) for s in gauge.samples] == [
        ("alphaswarm_x", {"queue_name": "default"}, 3)
    ], _fail("GaugeMetricFamily", f"samples are {gauge.samples}")
    assert counter.samples[0].name == "alphaswarm_y_total", _fail(
        "CounterMetricFamily", f"samples are {counter.samples}"
    )
    assert isinstance(gauge, prometheus_client.Metric)


def collector(tmp_path: Path) -> None:
    """WorkerCollector is a Collector; scrape_registry puts it beside MultiProcessCollector."""
    from alphaswarm_orch.control.metrics import WorkerCollector

    assert compat.Collector in WorkerCollector.__mro__, _fail("Collector", "not a base")
    assert not inspect.isabstract(WorkerCollector), _fail("Collector", "collect() signature")
    registry = prometheus_client.CollectorRegistry()
    compat.MultiProcessCollector(registry, path=str(tmp_path))
    assert list(registry.collect()) == [], _fail("MultiProcessCollector", "empty dir read")


def value_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool process re-picks the value class once PROMETHEUS_MULTIPROC_DIR is set
    (control/metrics.py): metrics then write to files the collector reads."""
    before = compat.values.ValueClass
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    try:
        picked = compat.values.get_value_class()
        assert picked is not compat.values.MutexValue, _fail(
            "values", "get_value_class() ignores PROMETHEUS_MULTIPROC_DIR"
        )
        source = inspect.getsource(prometheus_client.metrics)
        assert "values.ValueClass" in source, _fail(
            "values", "metrics no longer read values.ValueClass when created"
        )
    finally:
        compat.values.ValueClass = before


CONTRACTS = {
    families: ["GaugeMetricFamily", "CounterMetricFamily"],
    collector: ["Collector", "MultiProcessCollector"],
    value_class: ["values"],
}
"""Each contract and the compat names it covers."""


def test_every_exported_name_has_a_contract() -> None:
    check_all_covered(compat, CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_contract(
    contract: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_contract(contract, tmp_path=tmp_path, monkeypatch=monkeypatch)
