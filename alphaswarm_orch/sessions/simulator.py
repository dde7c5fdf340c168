"""The paper-trading simulator: order intents fill against the tick; state lives in SQL.

Exactly-once effect per tick: a tick with orders is recorded in `paper_ticks` in the same
transaction as its fills, positions and cash, so a tick replayed after a crash (claimed from
the pending list) is recognised and skipped. Ticks without orders only move the mark price,
which is idempotent, so they cost no database write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from alphaswarm_orch.requests.models import SessionStart
from alphaswarm_orch.sessions.ticks import Tick

metadata = sa.MetaData()

paper_sessions = sa.Table(
    "paper_sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("starting_cash", sa.Float, nullable=False),
    sa.Column("cash", sa.Float, nullable=False),
    sa.Column("realized_pnl", sa.Float, nullable=False),
    sa.Column("equity", sa.Float, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
paper_positions = sa.Table(
    "paper_positions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("qty", sa.Float, nullable=False),
    sa.Column("avg_price", sa.Float, nullable=False),
    sa.Column("last_price", sa.Float, nullable=False),
)
paper_ticks = sa.Table(
    "paper_ticks",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("tick_id", sa.String(64), primary_key=True),
    sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
paper_fills = sa.Table(
    "paper_fills",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("tick_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("qty", sa.Float, nullable=False),
    sa.Column("price", sa.Float, nullable=False),
    sa.Column("fee", sa.Float, nullable=False),
)


_APPLY_TICK = "alphaswarm_apply_tick"
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
)

_APPLY_TICK_SQL = f"""
PREPARE {_APPLY_TICK}({", ".join(kind for _name, kind in _APPLY_TICK_PARAMS)}) AS
WITH t AS (
    INSERT INTO paper_ticks (session_id, tick_id) VALUES ($1, $2)
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
    UPDATE paper_sessions SET cash = $9, realized_pnl = $10, equity = $11
    WHERE session_id = $1 AND $5 AND EXISTS (SELECT 1 FROM t)
)
SELECT count(*) FROM t
"""

_EXECUTE_APPLY_TICK = (
    f"EXECUTE {_APPLY_TICK}({', '.join(f'%({name})s' for name, _kind in _APPLY_TICK_PARAMS)})"
)


@dataclass
class Position:
    qty: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0


class PaperSimulator:
    """Handles ticks for one session; positions, PnL and fills persisted through `engine`."""

    def __init__(self, engine: sa.Engine, family: str, start: SessionStart) -> None:
        self.engine = engine
        self.session_id = start.session_id
        self.symbols = frozenset(start.symbols)
        self.fee_rate = start.fee_bps / 10_000
        self.max_position = start.max_position
        metadata.create_all(engine, checkfirst=True)
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
        with engine.begin() as conn:
            conn.execute(
                self._insert(paper_sessions)
                .values(
                    session_id=self.session_id,
                    family=family,
                    starting_cash=start.starting_cash,
                    cash=start.starting_cash,
                    realized_pnl=0.0,
                    equity=start.starting_cash,
                    status="running",
                )
                .on_conflict_do_nothing()
            )
            row = conn.execute(
                sa.select(paper_sessions).where(paper_sessions.c.session_id == self.session_id)
            ).one()
            conn.execute(
                paper_sessions.update()
                .where(paper_sessions.c.session_id == self.session_id)
                .values(status="running")
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
        # Prepared once: a tick with orders is one short transaction on a held connection.
        self._tick_stmt = self._insert(paper_ticks).on_conflict_do_nothing()
        upsert = self._insert(paper_positions)
        self._position_stmt = upsert.on_conflict_do_update(
            index_elements=["session_id", "symbol"],
            set_={c: upsert.excluded[c] for c in ("qty", "avg_price", "last_price")},
        )
        self._session_stmt = (
            paper_sessions.update()
            .where(paper_sessions.c.session_id == sa.bindparam("sid"))
            .values(
                cash=sa.bindparam("new_cash"),
                realized_pnl=sa.bindparam("new_realized"),
                equity=sa.bindparam("new_equity"),
            )
        )
        self._postgres = engine.dialect.name == "postgresql"
        self.conn = engine.connect()
        if self._postgres:  # one statement per tick, atomic by itself
            self.conn = self.conn.execution_options(isolation_level="AUTOCOMMIT")
            prepared = self.conn.exec_driver_sql(
                "SELECT 1 FROM pg_prepared_statements WHERE name = %(name)s",
                {"name": _APPLY_TICK},
            ).first()
            if prepared is None:  # a pooled connection may carry it from an earlier session
                self.conn.exec_driver_sql(_APPLY_TICK_SQL)

    @property
    def equity(self) -> float:
        return self.cash + sum(p.qty * p.last_price for p in self.positions.values())

    def _equity(self, cash: float, symbol: str, after: Position) -> float:
        others = sum(p.qty * p.last_price for s, p in self.positions.items() if s != symbol)
        return cash + others + after.qty * after.last_price

    def handle(self, tick: Tick) -> int:
        """Apply one tick; returns the number of fills it produced (0 for a replayed tick)."""
        position = self.positions.setdefault(tick.symbol, Position())
        position.last_price = tick.price
        if not tick.orders or tick.symbol not in self.symbols:
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
        inserted = self.conn.exec_driver_sql(
            _EXECUTE_APPLY_TICK, {**params, "fills": json.dumps(rows), "has_fills": bool(fills)}
        ).scalar_one()
        return bool(inserted)

    def _apply_generic(self, params: dict[str, object], fills: list[dict[str, object]]) -> bool:
        """The same effect as `_apply_postgres`, statement by statement (SQLite)."""
        with self.conn.begin():
            if not self.conn.execute(
                self._tick_stmt, {"session_id": params["sid"], "tick_id": params["tick"]}
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
                self.conn.execute(self._session_stmt, params)
        return True

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

    def close(self, status: str) -> None:
        """Persist the final marks and the session's status (stopped, interrupted, killed)."""
        self.conn.close()
        with self.engine.begin() as conn:
            for symbol, p in self.positions.items():
                conn.execute(
                    paper_positions.update()
                    .where(
                        (paper_positions.c.session_id == self.session_id)
                        & (paper_positions.c.symbol == symbol)
                    )
                    .values(last_price=p.last_price)
                )
            conn.execute(
                paper_sessions.update()
                .where(paper_sessions.c.session_id == self.session_id)
                .values(status=status, equity=self.equity, updated_at=sa.func.now())
            )
