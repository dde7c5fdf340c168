"""The paper simulator fills, marks and persists, and a replayed tick has no second effect."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.sessions.simulator import (
    PaperSimulator,
    paper_fills,
    paper_positions,
    paper_sessions,
)
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick
from tests.sessions.conftest import paper_start


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    if request.param == "postgres":
        return request.getfixturevalue("ledger")
    migrate(f"sqlite:///{tmp_path / 'ledger.db'}")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    request.addfinalizer(engine.dispose)
    return engine


def buy(qty: float, limit: float | None = None) -> OrderIntent:
    return OrderIntent("buy", qty, limit)


def sell(qty: float, limit: float | None = None) -> OrderIntent:
    return OrderIntent("sell", qty, limit)


def test_fills_positions_and_pnl_are_persisted(engine: sa.Engine) -> None:
    start = paper_start("s1", starting_cash=10_000, fee_bps=10, max_position=5)
    sim = PaperSimulator(engine, "paper", start)
    sim.take_over(1)

    assert sim.handle(Tick("t1", "BTC-USD", 100.0, (buy(2),))) == 1
    assert sim.handle(Tick("t2", "BTC-USD", 103.0, (buy(1), buy(1, limit=102.0)))) == 1
    assert sim.handle(Tick("t3", "BTC-USD", 104.0, (buy(3),))) == 0  # over max_position 5
    assert sim.handle(Tick("t4", "BTC-USD", 110.0)) == 0  # a mark, no order
    assert sim.handle(Tick("t5", "BTC-USD", 110.0, (sell(3),))) == 1
    sim.close("stopped")

    fees = (200 + 103 + 330) * 0.001
    with engine.connect() as conn:
        fills = conn.execute(sa.select(paper_fills).order_by(paper_fills.c.tick_id)).all()
        position = conn.execute(sa.select(paper_positions)).one()
        session = conn.execute(sa.select(paper_sessions)).one()
    assert [(f.tick_id, f.seq, f.side, f.qty, f.price) for f in fills] == [
        ("t1", 0, "buy", 2.0, 100.0),
        ("t2", 0, "buy", 1.0, 103.0),
        ("t5", 0, "sell", 3.0, 110.0),
    ]
    assert position.qty == 0 and position.last_price == 110.0
    assert session.cash == pytest.approx(10_000 - 200 - 103 + 330 - fees)
    assert session.realized_pnl == pytest.approx((110 - 101) * 3 - fees)
    assert session.equity == pytest.approx(session.cash)
    assert session.status == "stopped"


def test_replayed_tick_has_no_second_effect_even_after_a_restart(engine: sa.Engine) -> None:
    start = paper_start("s2")
    sim = PaperSimulator(engine, "paper", start)
    sim.take_over(1)
    tick = Tick("t1", "BTC-USD", 50.0, (buy(4), sell(1)))
    assert sim.handle(tick) == 2
    assert sim.handle(tick) == 0
    cash = sim.cash

    restarted = PaperSimulator(engine, "paper", start)
    restarted.take_over(2)
    assert restarted.cash == cash and restarted.positions["BTC-USD"].qty == 3
    assert restarted.handle(tick) == 0
    assert restarted.handle(Tick("t2", "BTC-USD", 60.0, (sell(3),))) == 1
    assert restarted.realized == pytest.approx(3 * 10)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(paper_fills)).scalar() == 3
