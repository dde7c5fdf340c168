"""workload_runs and its children, refusals, mirror state

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workload_runs",
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
        sa.Column("queued_at", TS),
        sa.Column("starting_at", TS),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("error", sa.Text),
        sa.Column("error_event_id", sa.BigInteger),
        sa.Column("refusal_reason", sa.Text),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_workload_runs_updated_at", "workload_runs", ["updated_at"])
    op.create_table(
        "workload_run_transitions",
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(255)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_workload_run_transitions_run", "workload_run_transitions", ["run_id"])
    op.create_table(
        "workload_run_steps",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.String(255), primary_key=True),
        sa.Column("queue", sa.String(64)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_event_id", sa.BigInteger, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "workload_run_assets",
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(255)),
        sa.Column("asset_key", sa.Text, nullable=False),
        sa.Column("partition", sa.Text),
        sa.Column("upstream", sa.JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_workload_run_assets_run", "workload_run_assets", ["run_id"])
    op.create_index("ix_workload_run_assets_key", "workload_run_assets", ["asset_key"])
    op.create_table(
        "ledger_refusals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("queue", sa.String(64)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("request_id", sa.String(255)),
    )
    op.create_index("ix_ledger_refusals_at", "ledger_refusals", ["at"])
    op.create_table(
        "ledger_mirror_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("rows_written", sa.BigInteger, nullable=False),
        sa.Column("lag_seconds", sa.Float, nullable=False),
        sa.Column("mirrored_event_at", TS),
        sa.Column("synced_at", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", TS),
    )


def downgrade() -> None:
    for table in (
        "ledger_mirror_state",
        "ledger_refusals",
        "workload_run_assets",
        "workload_run_steps",
        "workload_run_transitions",
        "workload_runs",
    ):
        op.drop_table(table)
