"""Ledger database access: one engine per URL per process, migrated to head on first use.

The migrations ship inside the package (`alphaswarm_orch.ledger:migrations`) so a
non-editable install (the worker image) can create and upgrade the ledger by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from alphaswarm_orch.settings import Settings, redacted

VERSION_TABLE = "ledger_alembic_version"
"""Not Dagster's `alembic_version`: the ledger may share Dagster's Postgres database."""

_MIGRATION_LOCK_ID = 0x6C656467  # Postgres advisory lock serialising concurrent migrations

_engines: dict[str, sa.Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()


class LedgerUnavailable(RuntimeError):
    """The ledger database cannot be reached or refused the write; nothing was committed."""


def engine_for(url: str) -> sa.Engine:
    """The process-wide engine for `url` (no connection is opened here)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def _create_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": 30})
    # values_plus_batch: upserts of a batch go out as multi-row statements, not one per row.
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
        executemany_mode="values_plus_batch",
    )


def sqlite_file_missing(url: str) -> bool:
    """An embedded ledger not created yet: connecting would create an empty file."""
    parsed = sa.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return False
    return not Path(database).exists()


def migrate(url: str) -> None:
    """Upgrade the ledger at `url` to the newest migration (idempotent, safe concurrently)."""
    engine = engine_for(url)
    config = Config()
    config.set_main_option("script_location", "alphaswarm_orch.ledger:migrations")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def ledger_errors(url: str) -> Iterator[None]:
    """Turn driver errors into LedgerUnavailable naming the (redacted) ledger URL."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        raise LedgerUnavailable(
            f"ledger database {redacted(url)} is unavailable ({reason}); nothing was "
            "written. Check ALPHASWARM_LEDGER_URL / ALPHASWARM_POSTGRES_URL and that the "
            "database is up: the mirror retries on its next tick."
        ) from exc


def ledger_engine(settings: Settings) -> sa.Engine:
    """The engine for the settings' ledger, migrated to head once per process."""
    url = settings.ledger_url
    engine = engine_for(url)
    if url not in _migrated:
        with ledger_errors(url):
            migrate(url)
        _migrated.add(url)
    return engine
