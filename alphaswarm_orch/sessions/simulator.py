"""The paper-trading simulator: order intents fill against the tick; state lives in SQL.

Exactly-once effect per tick: a tick with orders is recorded in `paper_ticks` in the same
transaction as its fills, positions and cash, so a tick replayed after a crash (claimed from
the pending list) is recognised and skipped. Ticks without orders only move the mark price,
which is idempotent, so they cost no database write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from alphaswarm_orch.requests.models import SessionStart
from alphaswarm_orch.sessions.lease import LeaseLost
from alphaswarm_orch.sessions.schema import (
    metadata,
    paper_fills,
    paper_positions,
    paper_session_events,
    paper_sessions,
    paper_ticks,
)
from alphaswarm_orch.sessions.ticks import Tick

__all__ = [
    "PaperSimulator",
    "metadata",
    "paper_fills",
    "paper_positions",
    "paper_session_events",
    "paper_sessions",
    "paper_ticks",
]

_APPLY_TICK = "alphaswarm_apply_tick_fenced"
"""A server-side prepared statement (per connection): no parse and plan per order tick."""

_APPLY_TICK_PARAMS = (
    ("sid", "text"),
    ("tick", "text"),
    ("symbol", "text"),
    ("fills", "jsonb"),
    ("has_fills", "boolean"),
    ("qty", "float8"),
    ("avg_price", "float8"),
    ("price", "float8"),
    ("new_cash", "float8"),
    ("new_realized", "float8"),
    ("new_equity", "float8"),
    ("fence", "int8"),
)

# `g` locks the session row only while this step's fence is on it; FOR UPDATE re-reads a row
# a concurrent take-over changed, so a superseded step's statement writes nothing at all.
_APPLY_TICK_SQL = f"""
PREPARE {_APPLY_TICK}({", ".join(kind for _name, kind in _APPLY_TICK_PARAMS)}) AS
WITH g AS (
    SELECT 1 FROM paper_sessions WHERE session_id = $1 AND fence = $12 FOR UPDATE
), t AS (
    INSERT INTO paper_ticks (session_id, tick_id, fence)
    SELECT $1, $2, $12 WHERE EXISTS (SELECT 1 FROM g)
    ON CONFLICT DO NOTHING RETURNING 1
), f AS (
    INSERT INTO paper_fills (session_id, tick_id, seq, symbol, side, qty, price, fee)
    SELECT $1, $2, x.seq, $3, x.side, x.qty, x.price, x.fee
    FROM jsonb_to_recordset($4) AS x(seq int, side text, qty float8, price float8, fee float8)
    WHERE EXISTS (SELECT 1 FROM t)
), p AS (
    INSERT INTO paper_positions (session_id, symbol, qty, avg_price, last_price)
    SELECT $1, $3, $6, $7, $8 WHERE $5 AND EXISTS (SELECT 1 FROM t)
    ON CONFLICT (session_id, symbol) DO UPDATE SET qty = excluded.qty,
        avg_price = excluded.avg_price, last_price = excluded.last_price
), s AS (
    UPDATE paper_sessions SET
        cash = CASE WHEN $5 AND EXISTS (SELECT 1 FROM t) THEN $9 ELSE cash END,
        realized_pnl = CASE WHEN $5 AND EXISTS (SELECT 1 FROM t) THEN $10 ELSE realized_pnl END,
        equity = CASE WHEN $5 AND EXISTS (SELECT 1 FROM t) THEN $11 ELSE equity END,
        last_tick_at = now()
    WHERE session_id = $1 AND EXISTS (SELECT 1 FROM g)
)
SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM t)
"""

_EXECUTE_APPLY_TICK = (
    f"EXECUTE {_APPLY_TICK}({', '.join(f'%({name})s' for name, _kind in _APPLY_TICK_PARAMS)})"
)

TOUCH_SECONDS = 1.0
"""Ticks without orders write nothing but, this often, the time of the last tick."""

LOSS_STATES = ("running", "resumed")
"""A previous owner that left the session in one of these vanished without handing it on."""


@dataclass
class Position:
    qty: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0


@dataclass(frozen=True)
class TakeOver:
    """What a new owner found: the state it resumed from."""

    previous: str | None
    """The session's status before (None: a new session)."""
    previous_worker: str | None
    status: str
    lost: bool


class PaperSimulator:
    """Handles ticks for one session; positions, PnL and fills persisted through `engine`.

    Writes only as the session's owner: `take_over(fence)` first (it loads the state as of
    that fence), then every write is conditional on the fence and raises LeaseLost once a
    newer owner exists. The tables come from the ledger's migrations (`ledger_engine`).
    """

    def __init__(self, engine: sa.Engine, family: str, start: SessionStart) -> None:
        self.engine = engine
        self.family = family
        self.start = start
        self.session_id = start.session_id
        self.symbols = frozenset(start.symbols)
        self.fee_rate = start.fee_bps / 10_000
        self.max_position = start.max_position
        self.fence = 0
        self.worker: str | None = None
        self.run_id: str | None = None
        self.starting_cash = start.starting_cash
        self.cash = start.starting_cash
        self.realized = 0.0
        self.positions: dict[str, Position] = {}
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
        self._postgres = engine.dialect.name == "postgresql"
        self._touched = 0.0
        self.conn: sa.Connection | None = None

    def stored_fence(self) -> int:
        """The fence of the session's last owner (0 for a new session)."""
        with self.engine.connect() as conn:
            fence = conn.execute(
                sa.select(paper_sessions.c.fence).where(
                    paper_sessions.c.session_id == self.session_id
                )
            ).scalar()
        return int(fence or 0)

    def take_over(
        self, fence: int, worker: str | None = None, run_id: str | None = None
    ) -> TakeOver:
        """Become the session's writer at `fence` and load its state (LeaseLost if a newer
        fence already owns it). Records a lost predecessor, a resume or a start."""
        with self.engine.begin() as conn:
            fresh = (
                conn.execute(
                    self._insert(paper_sessions)
                    .values(
                        session_id=self.session_id,
                        family=self.family,
                        starting_cash=self.start.starting_cash,
                        cash=self.start.starting_cash,
                        realized_pnl=0.0,
                        equity=self.start.starting_cash,
                        status="running",
                        fence=0,
                    )
                    .on_conflict_do_nothing()
                ).rowcount
                == 1
            )
            row = conn.execute(
                sa.select(paper_sessions)
                .where(paper_sessions.c.session_id == self.session_id)
                .with_for_update()
            ).one()
            if row.fence >= fence:
                raise LeaseLost(self.session_id, fence, f"take-over (fence {row.fence} owns it)")
            previous = None if fresh else row.status
            lost = previous in LOSS_STATES
            status = "running" if fresh else "resumed"
            conn.execute(
                paper_sessions.update()
                .where(paper_sessions.c.session_id == self.session_id)
                .values(
                    fence=fence,
                    worker=worker,
                    run_id=run_id,
                    status=status,
                    status_detail=None,
                    status_at=sa.func.now(),
                    updated_at=sa.func.now(),
                    losses=paper_sessions.c.losses + (1 if lost else 0),
                    resumes=paper_sessions.c.resumes + (0 if fresh else 1),
                )
            )
            if lost:
                self._event(
                    conn,
                    "lost",
                    row.fence,
                    row.worker,
                    row.run_id,
                    f"owner gone without handing on (last tick {row.last_tick_at})",
                )
            self._event(
                conn, status, fence, worker, run_id, f"after {previous}" if previous else None
            )
            self.starting_cash = row.starting_cash
            self.cash = row.cash
            self.realized = row.realized_pnl
            self.positions = {
                p.symbol: Position(p.qty, p.avg_price, p.last_price)
                for p in conn.execute(
                    sa.select(paper_positions).where(
                        paper_positions.c.session_id == self.session_id
                    )
                )
            }
        self.fence, self.worker, self.run_id = fence, worker, run_id
        self._open()
        return TakeOver(previous, row.worker, status, lost)

    def _open(self) -> None:
        """Statements prepared once: a tick with orders is one short transaction."""
        self._tick_stmt = self._insert(paper_ticks).on_conflict_do_nothing()
        upsert = self._insert(paper_positions)
        self._position_stmt = upsert.on_conflict_do_update(
            index_elements=["session_id", "symbol"],
            set_={c: upsert.excluded[c] for c in ("qty", "avg_price", "last_price")},
        )
        if self.conn is not None:
            self.conn.close()
        self.conn = self.engine.connect()
        if self._postgres:  # one statement per tick, atomic by itself
            self.conn = self.conn.execution_options(isolation_level="AUTOCOMMIT")
            prepared = self.conn.exec_driver_sql(
                "SELECT 1 FROM pg_prepared_statements WHERE name = %(name)s",
                {"name": _APPLY_TICK},
            ).first()
            if prepared is None:  # a pooled connection may carry it from an earlier session
                self.conn.exec_driver_sql(_APPLY_TICK_SQL)

    def _event(
        self,
        conn: sa.Connection,
        event: str,
        fence: int | None,
        worker: str | None,
        run_id: str | None,
        detail: str | None,
    ) -> None:
        conn.execute(
            paper_session_events.insert().values(
                session_id=self.session_id,
                event=event,
                fence=fence,
                worker=worker,
                run_id=run_id,
                detail=detail,
            )
        )

    def record_event(self, event: str, detail: str | None = None) -> None:
        """Append to the session's lifecycle without touching its state (a superseded step
        may still say so: it changes nothing the owner relies on)."""
        with self.engine.begin() as conn:
            self._event(conn, event, self.fence, self.worker, self.run_id, detail)

    @property
    def equity(self) -> float:
        return self.cash + sum(p.qty * p.last_price for p in self.positions.values())

    def _equity(self, cash: float, symbol: str, after: Position) -> float:
        others = sum(p.qty * p.last_price for s, p in self.positions.items() if s != symbol)
        return cash + others + after.qty * after.last_price

    def handle(self, tick: Tick) -> int:
        """Apply one tick; returns the number of fills it produced (0 for a replayed tick)."""
        if self.conn is None:
            raise LeaseLost(self.session_id, self.fence, "tick (no take_over yet)")
        position = self.positions.setdefault(tick.symbol, Position())
        position.last_price = tick.price
        if not tick.orders or tick.symbol not in self.symbols:
            now = time.monotonic()
            if now - self._touched >= TOUCH_SECONDS:
                self._touch()
                self._touched = now
            return 0
        fills, cash, realized, after = self._fills(tick, position)
        params = {
            "sid": self.session_id,
            "tick": tick.tick_id,
            "symbol": tick.symbol,
            "qty": after.qty,
            "avg_price": after.avg_price,
            "price": tick.price,
            "new_cash": cash,
            "new_realized": realized,
            "new_equity": self._equity(cash, tick.symbol, after),
            "fence": self.fence,
        }
        apply = self._apply_postgres if self._postgres else self._apply_generic
        if not apply(params, fills):
            return 0  # replayed: its effect is already in the database
        # Only after the commit: a failed transaction leaves memory matching the database.
        self.positions[tick.symbol] = after
        self.cash, self.realized = cash, realized
        return len(fills)

    def _apply_postgres(self, params: dict[str, object], fills: list[dict[str, object]]) -> bool:
        """Tick id, fills, position and cash in one statement: one round trip per order tick."""
        rows = [{k: f[k] for k in ("seq", "side", "qty", "price", "fee")} for f in fills]
        owned, inserted = self.conn.exec_driver_sql(
            _EXECUTE_APPLY_TICK, {**params, "fills": json.dumps(rows), "has_fills": bool(fills)}
        ).one()
        if not owned:
            raise LeaseLost(self.session_id, self.fence, f"write of tick {params['tick']}")
        return bool(inserted)

    def _apply_generic(self, params: dict[str, object], fills: list[dict[str, object]]) -> bool:
        """The same effect as `_apply_postgres`, statement by statement (SQLite)."""
        with self.conn.begin():
            if not self.conn.execute(self._guard(last_tick_at=sa.func.now())).rowcount:
                raise LeaseLost(self.session_id, self.fence, f"write of tick {params['tick']}")
            if not self.conn.execute(
                self._tick_stmt,
                {"session_id": params["sid"], "tick_id": params["tick"], "fence": self.fence},
            ).rowcount:
                return False
            if fills:
                self.conn.execute(paper_fills.insert(), fills)
                self.conn.execute(
                    self._position_stmt,
                    {
                        "session_id": params["sid"],
                        "symbol": params["symbol"],
                        "qty": params["qty"],
                        "avg_price": params["avg_price"],
                        "last_price": params["price"],
                    },
                )
                self.conn.execute(
                    self._guard(
                        cash=params["new_cash"],
                        realized_pnl=params["new_realized"],
                        equity=params["new_equity"],
                    )
                )
        return True

    def _guard(self, **values: object) -> sa.Update:
        """An update of this session's row that matches only while this step owns it."""
        return (
            paper_sessions.update()
            .where(
                (paper_sessions.c.session_id == self.session_id)
                & (paper_sessions.c.fence == self.fence)
            )
            .values(**values)
        )

    def _touch(self) -> None:
        """The time of the last tick (and a check that this step still owns the session)."""
        assert self.conn is not None
        owned = self.conn.execute(self._guard(last_tick_at=sa.func.now())).rowcount
        if not self._postgres:
            self.conn.commit()
        if not owned:
            raise LeaseLost(self.session_id, self.fence, "last-tick update")

    def _fills(
        self, tick: Tick, position: Position
    ) -> tuple[list[dict[str, object]], float, float, Position]:
        qty, avg, cash, realized = position.qty, position.avg_price, self.cash, self.realized
        fills: list[dict[str, object]] = []
        for seq, order in enumerate(tick.orders):
            if order.limit is not None and (
                (order.side == "buy" and tick.price > order.limit)
                or (order.side == "sell" and tick.price < order.limit)
            ):
                continue
            signed = order.qty if order.side == "buy" else -order.qty
            if abs(qty + signed) > self.max_position:
                continue
            fee = abs(signed) * tick.price * self.fee_rate
            if qty * signed < 0:  # reducing or flipping: realize PnL on the closed part
                closed = min(abs(signed), abs(qty))
                realized += closed * (tick.price - avg) * (1 if qty > 0 else -1)
            new_qty = qty + signed
            if new_qty == 0:
                avg = 0.0
            elif qty * new_qty <= 0 or abs(new_qty) > abs(qty):
                # opening, flipping, or adding: average in the new part
                base = qty if qty * new_qty > 0 else 0.0
                added = new_qty - base
                avg = (base * avg + added * tick.price) / new_qty
            qty = new_qty
            cash -= signed * tick.price + fee
            realized -= fee
            fills.append(
                {
                    "session_id": self.session_id,
                    "tick_id": tick.tick_id,
                    "seq": seq,
                    "symbol": tick.symbol,
                    "side": order.side,
                    "qty": order.qty,
                    "price": tick.price,
                    "fee": fee,
                }
            )
        return fills, cash, realized, Position(qty, avg, tick.price)

    def close(self, status: str, detail: str | None = None) -> bool:
        """Persist the final marks and the session's status (handing_off, stopped, ...) as
        its owner; False (nothing written) if a newer owner exists."""
        if self.fence == 0:
            return False  # never owned the session: nothing of it is ours to write
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        with self.engine.begin() as conn:
            owned = conn.execute(
                self._guard(
                    status=status,
                    status_detail=detail,
                    status_at=sa.func.now(),
                    equity=self.equity,
                    updated_at=sa.func.now(),
                    handoffs=paper_sessions.c.handoffs + (1 if status == "handing_off" else 0),
                )
            ).rowcount
            if not owned:
                return False
            for symbol, p in self.positions.items():
                conn.execute(
                    paper_positions.update()
                    .where(
                        (paper_positions.c.session_id == self.session_id)
                        & (paper_positions.c.symbol == symbol)
                    )
                    .values(last_price=p.last_price)
                )
            self._event(conn, status, self.fence, self.worker, self.run_id, detail)
        return True
