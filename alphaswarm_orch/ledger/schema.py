"""The ledger's tables, as SQLAlchemy Core metadata (the migrations create them).

Every table has a natural unique key taken from Dagster (run id, step key, event storage id),
so the mirror can replay any window of the event log with upserts and never duplicate a row.
Times are UTC.

`fit` makes a derived row storable in its table: the lengths come from the columns below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from alphaswarm_orch.text import sanitize

metadata = sa.MetaData()

workload_runs = sa.Table(
    "workload_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job_name", sa.String(255), nullable=False),
    sa.Column("workload_kind", sa.String(32), nullable=False),
    sa.Column("queues", sa.Text, nullable=False, server_default=""),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("trigger_detail", sa.String(255)),
    sa.Column("actor", sa.String(255)),
    sa.Column("request_id", sa.String(255)),
    sa.Column("parent_run_id", sa.String(64)),
    sa.Column("root_run_id", sa.String(64)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("status_event_id", sa.BigInteger, nullable=False),
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.Column("starting_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("error_event_id", sa.BigInteger),
    sa.Column("refusal_reason", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_workload_runs_updated_at", workload_runs.c.updated_at)

workload_run_transitions = sa.Table(
    "workload_run_transitions",
    metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step_key", sa.String(255)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text),
)
sa.Index("ix_workload_run_transitions_run", workload_run_transitions.c.run_id)

workload_run_steps = sa.Table(
    "workload_run_steps",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_key", sa.String(255), primary_key=True),
    sa.Column("queue", sa.String(64)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("status_event_id", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("error", sa.Text),
)

workload_run_assets = sa.Table(
    "workload_run_assets",
    metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step_key", sa.String(255)),
    sa.Column("asset_key", sa.Text, nullable=False),
    sa.Column("partition", sa.Text),
    sa.Column("upstream", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_workload_run_assets_run", workload_run_assets.c.run_id)
sa.Index("ix_workload_run_assets_key", workload_run_assets.c.asset_key)

ledger_refusals = sa.Table(
    "ledger_refusals",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("queue", sa.String(64)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("request_id", sa.String(255)),
)
sa.Index("ix_ledger_refusals_at", ledger_refusals.c.at)

ledger_mirror_state = sa.Table(
    "ledger_mirror_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("rows_written", sa.BigInteger, nullable=False),
    sa.Column("lag_seconds", sa.Float, nullable=False),
    sa.Column("mirrored_event_at", sa.DateTime(timezone=True)),
    sa.Column("synced_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.DateTime(timezone=True)),
)

ledger_quarantine = sa.Table(
    "ledger_quarantine",
    metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
"""Dagster events the mirror could not store, set aside with the reason (one row per event)."""
sa.Index("ix_ledger_quarantine_at", ledger_quarantine.c.at)

IDENTITY_COLUMNS = frozenset({"run_id", "step_key"})
"""Dagster's own identifiers: never altered to fit (a changed key could merge two runs or
steps); a row whose identifier does not fit is quarantined instead."""
MULTILINE_COLUMNS = frozenset({"detail", "error", "refusal_reason", "reason", "last_error"})
"""Error text: keeps tabs and newlines; other control characters are escaped."""


def fit(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` made storable in `table`: text columns (and lists of text) have NUL, control and
    bidi characters escaped and are cut to the column's length (`alphaswarm_orch.text.sanitize`).
    Identifiers (IDENTITY_COLUMNS) and non-text values pass unchanged."""
    return {name: _fit_value(table.c[name], value) for name, value in row.items()}


def _fit_value(column: sa.Column[Any], value: Any) -> Any:
    if column.name in IDENTITY_COLUMNS:
        return value
    multiline = column.name in MULTILINE_COLUMNS
    if isinstance(value, str):
        return sanitize(value, getattr(column.type, "length", None), multiline=multiline)
    if isinstance(value, list):
        return [sanitize(v, multiline=multiline) if isinstance(v, str) else v for v in value]
    return value
