"""Series derived from Dagster's runs through the ledger: the mirror's lag and quarantine,
and the sessions per queue and state.

Read only: a scrape neither creates nor migrates the ledger. One that does not exist yet, or
is not migrated, reads as a mirror that has not run, with no session series.
"""

from __future__ import annotations

import logging

import redis

from alphaswarm_orch.control.metrics.upstream import CounterMetricFamily, GaugeMetricFamily, Metric
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)


def session_series(settings: Settings, client: redis.Redis, queues: list[str]) -> list[Metric]:
    """Sessions per queue and state, waiting for a slot, handoffs, losses, resumes (ledger
    and leases; every worker of the queue reports the same, cluster-wide numbers)."""
    try:
        import sqlalchemy as sa

        from alphaswarm_orch.ledger.db import engine_for, sqlite_file_missing
        from alphaswarm_orch.sessions.schema import paper_sessions
        from alphaswarm_orch.sessions.status import counts_by_queue

        if sqlite_file_missing(settings.ledger_url):
            return []
        engine = engine_for(settings.ledger_url)
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(paper_sessions.name):
                log.debug("metrics: no session table in the ledger yet (not migrated)")
                return []
        counts = counts_by_queue(engine, client, queues)
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
