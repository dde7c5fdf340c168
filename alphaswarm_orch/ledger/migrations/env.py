"""Alembic environment for the ledger; run through alphaswarm_orch.ledger.db.migrate."""

from alembic import context

from alphaswarm_orch.ledger.db import VERSION_TABLE
from alphaswarm_orch.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
