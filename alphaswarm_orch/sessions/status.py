"""What every session is doing, for `alphaswarm-orch sessions` and the worker metrics.

The stored status is written by the session's owner. A session whose owner vanished
(SIGKILL, node loss) cannot say so itself: a session stored as running or resumed whose
lease lapsed is reported `lost` until a new owner resumes it. `handing_off` and `lost`
sessions wait for a worker slot (their step is back on the queue). Lag is the stream's
ticks not yet acknowledged: pending (delivered, not acked) plus not yet delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.keys import session_lease_key, tick_stream
from alphaswarm_orch.sessions.lease import Owner
from alphaswarm_orch.sessions.loop import GROUP
from alphaswarm_orch.sessions.schema import ACTIVE, paper_session_events, paper_sessions

WAITING = ("handing_off", "lost")
"""Sessions whose step waits for a worker slot."""


@dataclass
class SessionView:
    session_id: str
    family: str
    status: str
    """The stored status, or `lost` (see the module doc)."""
    stored_status: str
    worker: str | None
    fence: int
    run_id: str | None
    owner: Owner | None
    """The lease holder now (None: nobody owns the session at this moment)."""
    status_at: datetime | None
    status_detail: str | None
    last_tick_at: datetime | None
    handoffs: int
    losses: int
    resumes: int
    cash: float
    equity: float
    realized_pnl: float
    pending: int | None = None
    undelivered: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        if self.pending is None:
            return None
        return self.pending + (self.undelivered or 0)

    def last_tick_age(self, now: datetime | None = None) -> float | None:
        if self.last_tick_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.last_tick_at).total_seconds()


def truthful(stored: str, owner: Owner | None) -> str:
    if stored in ("running", "resumed") and owner is None:
        return "lost"
    return stored


def list_sessions(
    engine: sa.Engine,
    client: redis.Redis,
    *,
    family: str | None = None,
    session_id: str | None = None,
    active_only: bool = False,
) -> list[SessionView]:
    query = sa.select(paper_sessions).order_by(paper_sessions.c.session_id)
    if family is not None:
        query = query.where(paper_sessions.c.family == family)
    if session_id is not None:
        query = query.where(paper_sessions.c.session_id == session_id)
    if active_only:
        query = query.where(paper_sessions.c.status.in_(ACTIVE))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return []
    with client.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.get(session_lease_key(row.session_id))
            pipe.xinfo_groups(tick_stream(row.session_id))
        replies = pipe.execute(raise_on_error=False)
    views = []
    for index, row in enumerate(rows):
        owner_raw, groups = replies[2 * index], replies[2 * index + 1]
        owner = Owner.parse(owner_raw) if not isinstance(owner_raw, Exception) else None
        view = SessionView(
            session_id=row.session_id,
            family=row.family,
            status=truthful(row.status, owner),
            stored_status=row.status,
            worker=row.worker,
            fence=row.fence,
            run_id=row.run_id,
            owner=owner,
            status_at=row.status_at,
            status_detail=row.status_detail,
            last_tick_at=row.last_tick_at,
            handoffs=row.handoffs,
            losses=row.losses,
            resumes=row.resumes,
            cash=row.cash,
            equity=row.equity,
            realized_pnl=row.realized_pnl,
        )
        _add_lag(view, groups)
        views.append(view)
    return views


def _add_lag(view: SessionView, groups: Any) -> None:
    if isinstance(groups, Exception):
        return  # no stream yet
    for group in groups:
        name = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == GROUP:
            view.pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            view.undelivered = int(lag) if lag is not None else None


def session_events(engine: sa.Engine, session_id: str, limit: int = 20) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(paper_session_events)
            .where(paper_session_events.c.session_id == session_id)
            .order_by(paper_session_events.c.id.desc())
            .limit(limit)
        ).all()
    return [dict(r._mapping) for r in reversed(rows)]


@dataclass(frozen=True)
class QueueCounts:
    by_state: dict[str, int]
    waiting: int
    handoffs: int
    losses: int
    resumes: int


def counts_by_queue(
    engine: sa.Engine, client: redis.Redis, families: list[str]
) -> dict[str, QueueCounts]:
    """Per family: sessions per (truthful) state, waiting for a slot, and the handoff, loss
    and resume totals (every session's counts summed: they only grow)."""
    c = paper_sessions.c
    with engine.connect() as conn:
        totals = {
            row.family: row
            for row in conn.execute(
                sa.select(
                    c.family,
                    sa.func.sum(c.handoffs).label("handoffs"),
                    sa.func.sum(c.losses).label("losses"),
                    sa.func.sum(c.resumes).label("resumes"),
                )
                .where(c.family.in_(families))
                .group_by(c.family)
            )
        }
        active = conn.execute(
            sa.select(c.session_id, c.family, c.status).where(
                c.family.in_(families) & c.status.in_(ACTIVE)
            )
        ).all()
    owners = client.mget([session_lease_key(r.session_id) for r in active]) if active else []
    result = {}
    for family in families:
        by_state = {state: 0 for state in ("running", "resumed", "handing_off", "lost")}
        for row, raw in zip(active, owners, strict=True):
            if row.family == family:
                state = truthful(row.status, Owner.parse(raw))
                by_state[state] = by_state.get(state, 0) + 1
        total = totals.get(family)
        result[family] = QueueCounts(
            by_state=by_state,
            waiting=sum(by_state[s] for s in WAITING),
            handoffs=int(total.handoffs or 0) if total else 0,
            losses=int(total.losses or 0) if total else 0,
            resumes=int(total.resumes or 0) if total else 0,
        )
    return result
