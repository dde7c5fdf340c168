"""Ledger storage: dialect upserts, the mirror's state row, the quarantine, mirror_status.

A refusal of a row's content (data or integrity error; psycopg2 refuses NUL before sending)
is raised as RowRejected, apart from outages (LedgerUnavailable, via `ledger_errors`) and
other database errors, which are not about one row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from alphaswarm_orch.ledger.db import (
    LedgerUnavailable,
    engine_for,
    ledger_engine,
    ledger_errors,
    sqlite_file_missing,
)
from alphaswarm_orch.ledger.rows import ERROR_SUMMARY_LENGTH, Derived, Transition, aware
from alphaswarm_orch.ledger.schema import (
    ledger_mirror_state,
    ledger_quarantine,
    workload_run_transitions,
)
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.text import sanitize

MIRROR_NAME = "dagster"
_unrecorded_errors: dict[str, tuple[str, datetime]] = {}


class RowRejected(Exception):
    """The ledger database refused a row for its content: not an outage, not retried."""

    def __init__(self, table: str, error: BaseException) -> None:
        orig = getattr(error, "orig", None) or error
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
        super().__init__(f"{table}: {type(orig).__name__}: {first}")


@dataclass(frozen=True)
class MirrorStatus:
    """The mirror's health, for the metrics endpoint. `available` is False (and `last_error`
    says why) when the ledger database itself cannot be read."""

    available: bool
    cursor: int
    lag_seconds: float
    rows_written: int
    synced_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    quarantined: int = 0


def prior_transitions(
    conn: sa.Connection, run_ids: Iterable[str], written_here: sa.ColumnElement[bool]
) -> list[Transition]:
    """The ledger's transitions of `run_ids`, except the rows `written_here`."""
    t = workload_run_transitions
    query = sa.select(t.c.event_id, t.c.run_id, t.c.step_key, t.c.status, t.c.at, t.c.detail)
    query = query.where(t.c.run_id.in_(list(run_ids)), sa.not_(written_here))
    return [Transition(*row) for row in execute(conn, t, query)]


def _dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def execute(
    conn: sa.Connection, table: sa.Table, statement: Any, rows: list[dict[str, Any]] | None = None
) -> sa.CursorResult[Any]:
    """Execute; a refusal of the rows' content (as opposed to an outage) is RowRejected.
    psycopg2 refuses NUL in a string with a bare ValueError before sending anything."""
    try:
        return conn.execute(statement, rows)
    except (sa.exc.DataError, sa.exc.IntegrityError, ValueError) as exc:
        raise RowRejected(table.name, exc) from exc
    except sa.exc.StatementError as exc:
        if isinstance(exc, sa.exc.DBAPIError):
            raise
        raise RowRejected(table.name, exc) from exc  # a value that could not be bound


def insert_ignore(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if rows:
        execute(
            conn,
            table,
            _dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys),
            rows,
        )


def upsert(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    execute(conn, table, stmt.on_conflict_do_update(index_elements=keys, set_=update), rows)


def quarantined_ids(conn: sa.Connection, low: int, high: int) -> set[int]:
    q = ledger_quarantine
    return set(
        conn.execute(sa.select(q.c.event_id).where(q.c.event_id.between(low, high))).scalars()
    )


def quarantined_events(conn: sa.Connection, event_ids: Sequence[int] | None) -> list[int]:
    """The quarantined event ids (all, or those of `event_ids`), ascending."""
    q = ledger_quarantine
    query = sa.select(q.c.event_id).order_by(q.c.event_id)
    if event_ids is not None:
        query = query.where(q.c.event_id.in_(list(event_ids)))
    return list(conn.execute(query).scalars())


def release(conn: sa.Connection, event_ids: Sequence[int]) -> None:
    """Take events out of the quarantine (to be written again in the same transaction)."""
    if event_ids:
        q = ledger_quarantine
        conn.execute(sa.delete(q).where(q.c.event_id.in_(list(event_ids))))


def quarantine(conn: sa.Connection, rejected: Sequence[tuple[Derived, str]], now: datetime) -> None:
    """Set the rejected events aside (a retry rewrites the reason)."""
    rows = [
        {
            "event_id": event.event_id,
            "run_id": sanitize(event.run_id),
            "event_type": event.event_type,
            "reason": sanitize(reason, ERROR_SUMMARY_LENGTH, multiline=True),
            "at": now,
        }
        for event, reason in rejected
    ]
    upsert(conn, ledger_quarantine, rows, ["event_id"])


def lock_state(conn: sa.Connection) -> tuple[int, int]:
    """The high-water mark and rows counter, locked until commit (one mirror at a time)."""
    s = ledger_mirror_state
    insert_ignore(
        conn,
        s,
        [{"name": MIRROR_NAME, "cursor": -1, "rows_written": 0, "lag_seconds": 0.0}],
        ["name"],
    )
    row = conn.execute(
        sa.select(s.c.cursor, s.c.rows_written).where(s.c.name == MIRROR_NAME).with_for_update()
    ).one()
    return row.cursor, row.rows_written


def save_state(
    conn: sa.Connection,
    url: str,
    cursor: int,
    rows_written: int,
    lag: float,
    mirrored_at: datetime | None,
    now: datetime,
) -> None:
    values: dict[str, Any] = {
        "cursor": cursor,
        "rows_written": rows_written,
        "lag_seconds": lag,
        "synced_at": now,
    }
    if mirrored_at is not None:
        values["mirrored_event_at"] = mirrored_at
    pending = _unrecorded_errors.pop(url, None)
    if pending is not None:
        values["last_error"], values["last_error_at"] = pending
    s = ledger_mirror_state
    conn.execute(sa.update(s).where(s.c.name == MIRROR_NAME).values(**values))


def record_error(settings: Settings, message: str) -> None:
    """Keep a non-ledger failure (e.g. Dagster storage) where mirror_status can see it."""
    try:
        engine = ledger_engine(settings)
        with engine.begin() as conn:
            lock_state(conn)
            s = ledger_mirror_state
            conn.execute(
                sa.update(s)
                .where(s.c.name == MIRROR_NAME)
                .values(
                    last_error=sanitize(message, ERROR_SUMMARY_LENGTH, multiline=True),
                    last_error_at=datetime.now(UTC),
                )
            )
    except (LedgerUnavailable, sa.exc.SQLAlchemyError):
        remember_error(settings.ledger_url, message)


def remember_error(url: str, message: str) -> None:
    """Keep an error the ledger could not record (it is down) for mirror_status and the
    next state write."""
    _unrecorded_errors[url] = (message, datetime.now(UTC))


def mirror_status(settings: Settings) -> MirrorStatus:
    """The mirror's state from the ledger database (a few small reads); never raises for an
    unreachable ledger: that is reported as `available=False` with the error.

    Read only: a scrape never creates or migrates the ledger. One not created yet reads as
    a mirror that has not run."""
    url = settings.ledger_url
    pending = _unrecorded_errors.get(url)
    row, quarantined = None, 0
    if not sqlite_file_missing(url):
        try:
            with ledger_errors(url), engine_for(url).connect() as conn:
                tables = set(sa.inspect(conn).get_table_names())
                s = ledger_mirror_state
                if s.name in tables:
                    row = conn.execute(sa.select(s).where(s.c.name == MIRROR_NAME)).one_or_none()
                if ledger_quarantine.name in tables:
                    count = sa.select(sa.func.count()).select_from(ledger_quarantine)
                    quarantined = conn.execute(count).scalar_one()
        except LedgerUnavailable as exc:
            return MirrorStatus(False, -1, 0.0, 0, None, str(exc), datetime.now(UTC))
    if row is None:
        return MirrorStatus(True, -1, 0.0, 0, None, *(pending or (None, None)), quarantined)
    last_error, last_error_at = row.last_error, row.last_error_at
    if pending is not None:
        last_error, last_error_at = pending
    return MirrorStatus(
        available=True,
        cursor=row.cursor,
        lag_seconds=row.lag_seconds,
        rows_written=row.rows_written,
        synced_at=aware(row.synced_at) if row.synced_at else None,
        last_error=last_error,
        last_error_at=aware(last_error_at) if last_error_at else None,
        quarantined=quarantined,
    )
