"""The session tables (ledger database), created and upgraded by the ledger's migrations.

`paper_sessions` holds one row per paper or HFT session (`family`): its money, its state and
who owns it. `fence` is the fencing token of the step that owns the session (lease.py): every
write of session state is conditional on it, so a step that lost the lease writes nothing.
`paper_session_events` is the session's lifecycle, one row per transition.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

STATES = ("running", "handing_off", "resumed", "stopped", "failed", "killed", "interrupted")
"""What `paper_sessions.status` says. `lost` is not stored (the owner is gone and cannot
write it): readers report an active session whose lease lapsed as lost (status.py)."""

ACTIVE = ("running", "resumed", "handing_off")
"""States in which a session continues: it is owned, or waiting for its next owner."""

paper_sessions = sa.Table(
    "paper_sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("starting_cash", sa.Float, nullable=False),
    sa.Column("cash", sa.Float, nullable=False),
    sa.Column("realized_pnl", sa.Float, nullable=False),
    sa.Column("equity", sa.Float, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("worker", sa.String(255)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("status_detail", sa.Text),
    sa.Column("status_at", sa.DateTime(timezone=True)),
    sa.Column("last_tick_at", sa.DateTime(timezone=True)),
    sa.Column("handoffs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
)
paper_positions = sa.Table(
    "paper_positions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("qty", sa.Float, nullable=False),
    sa.Column("avg_price", sa.Float, nullable=False),
    sa.Column("last_price", sa.Float, nullable=False),
)
paper_ticks = sa.Table(
    "paper_ticks",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("tick_id", sa.String(64), primary_key=True),
    sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("fence", sa.BigInteger),
)
paper_fills = sa.Table(
    "paper_fills",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("tick_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("qty", sa.Float, nullable=False),
    sa.Column("price", sa.Float, nullable=False),
    sa.Column("fee", sa.Float, nullable=False),
)
paper_session_events = sa.Table(
    "paper_session_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("fence", sa.BigInteger),
    sa.Column("worker", sa.String(255)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("detail", sa.Text),
)
sa.Index("ix_paper_session_events_session", paper_session_events.c.session_id)
