"""Session tables under migrations, with ownership and lifecycle state

paper_sessions/_positions/_ticks/_fills were created by the simulator (create_all) before:
create what is missing, then add the owner (fence, worker, run), the state's time and
detail, the time of the last tick and the handoff/loss/resume counts, the fence that wrote
each tick, and the lifecycle table paper_session_events.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ADDED = {
    "paper_sessions": (
        "fence",
        "worker",
        "run_id",
        "status_detail",
        "status_at",
        "last_tick_at",
        "handoffs",
        "losses",
        "resumes",
    ),
    "paper_ticks": ("fence",),
}


def _tables() -> sa.MetaData:
    """The session tables as of this revision (a migration does not follow later models)."""
    meta = sa.MetaData()
    sa.Table(
        "paper_sessions",
        meta,
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
    sa.Table(
        "paper_positions",
        meta,
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("qty", sa.Float, nullable=False),
        sa.Column("avg_price", sa.Float, nullable=False),
        sa.Column("last_price", sa.Float, nullable=False),
    )
    sa.Table(
        "paper_ticks",
        meta,
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("tick_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("fence", sa.BigInteger),
    )
    sa.Table(
        "paper_fills",
        meta,
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("tick_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("qty", sa.Float, nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("fee", sa.Float, nullable=False),
    )
    events = sa.Table(
        "paper_session_events",
        meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("fence", sa.BigInteger),
        sa.Column("worker", sa.String(255)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("detail", sa.Text),
    )
    sa.Index("ix_paper_session_events_session", events.c.session_id)
    return meta


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in _tables().sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        columns = {c["name"] for c in sa.inspect(bind).get_columns(table.name)}
        for name in _ADDED.get(table.name, ()):
            if name not in columns:
                column = table.c[name]
                default = column.server_default
                op.add_column(
                    table.name,
                    sa.Column(
                        name,
                        column.type,
                        nullable=column.nullable,
                        server_default=default.arg if default is not None else None,
                    ),
                )


def downgrade() -> None:
    op.drop_table("paper_session_events")
    for table, names in _ADDED.items():
        with op.batch_alter_table(table) as batch:
            for name in names:
                batch.drop_column(name)
