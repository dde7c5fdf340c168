"""The session tables of older versions (made by `create_all`, no owner or state columns)
are adopted by the ledger migrations with their rows intact."""

from __future__ import annotations

import sqlalchemy as sa

from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.sessions.schema import metadata
from alphaswarm_orch.sessions.simulator import PaperSimulator
from tests.sessions.conftest import paper_start

OLD_SESSIONS = """
CREATE TABLE paper_sessions (
    session_id VARCHAR(64) PRIMARY KEY, family VARCHAR(16) NOT NULL,
    starting_cash FLOAT NOT NULL, cash FLOAT NOT NULL, realized_pnl FLOAT NOT NULL,
    equity FLOAT NOT NULL, status VARCHAR(32) NOT NULL, updated_at TIMESTAMPTZ DEFAULT now())
"""
OLD_TICKS = """
CREATE TABLE paper_ticks (session_id VARCHAR(64), tick_id VARCHAR(64),
    handled_at TIMESTAMPTZ DEFAULT now(), PRIMARY KEY (session_id, tick_id))
"""


def test_old_tables_are_upgraded_in_place(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(OLD_SESSIONS)
            conn.exec_driver_sql(OLD_TICKS)
            conn.exec_driver_sql(
                "INSERT INTO paper_sessions VALUES ('old', 'paper', 100, 90, -1, 95, "
                "'interrupted', now())"
            )
        migrate(postgres_url)
        migrate(postgres_url)  # idempotent
        inspector = sa.inspect(engine)
        for table in metadata.sorted_tables:  # what the code expects, column for column
            found = {c["name"] for c in inspector.get_columns(table.name)}
            assert found == {c.name for c in table.columns}, table.name

        # The old session resumes at fence 1, its money as it was.
        simulator = PaperSimulator(engine, "paper", paper_start("old"))
        found = simulator.take_over(1, "w", "run-1")
        assert (found.previous, found.status, found.lost) == ("interrupted", "resumed", False)
        assert (simulator.cash, simulator.realized) == (90, -1)
    finally:
        engine.dispose()
