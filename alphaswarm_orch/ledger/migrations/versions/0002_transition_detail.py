"""workload_run_transitions.detail: the error summary of a failure transition

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workload_run_transitions", sa.Column("detail", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("workload_run_transitions") as batch:
        batch.drop_column("detail")
