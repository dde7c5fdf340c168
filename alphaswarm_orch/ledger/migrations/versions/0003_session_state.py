"""Session tables under migrations, with ownership and lifecycle state

paper_sessions/_positions/_ticks/_fills were created by the simulator (create_all) before:
create what is missing, then add the owner (fence, worker, run), the state's time and
detail, the time of the last tick and the handoff/loss/resume counts, the fence that wrote
each tick, and the lifecycle table paper_session_events.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from alphaswarm_orch.sessions.schema import metadata

revision = "0003"
down_revision = "0002"
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


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        columns = {c["name"] for c in sa.inspect(bind).get_columns(table.name)}
        for name in _ADDED.get(table.name, ()):
            if name not in columns:
                column = table.c[name]
                op.add_column(
                    table.name,
                    sa.Column(
                        name,
                        column.type,
                        nullable=column.nullable,
                        server_default=column.server_default.arg
                        if column.server_default is not None
                        else None,
                    ),
                )


def downgrade() -> None:
    op.drop_table("paper_session_events")
    for table, names in _ADDED.items():
        with op.batch_alter_table(table) as batch:
            for name in names:
                batch.drop_column(name)
