"""One writer per session, on the real Redis and Postgres: two steps of one session at once.

A second step waits for the lease and writes nothing; a step whose lease was taken over while
it stalled (as in a long GC pause or a frozen process) has its next database write or tick
acknowledgement refused and stops, and the new owner's books match its fills.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.keys import session_stop_key
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.sessions.jobs import record_outcome
from alphaswarm_orch.sessions.lease import SessionLease, owner_of
from alphaswarm_orch.sessions.loop import SessionLoop, SessionOutcome
from alphaswarm_orch.sessions.simulator import (
    PaperSimulator,
    paper_fills,
    paper_session_events,
    paper_sessions,
    paper_ticks,
)
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from tests.sessions.conftest import paper_start
from tests.support.runs import wait_for

DEADLINE = 60


class Step:
    """One session step (loop + simulator) in a thread, as a Celery pool process runs it."""

    def __init__(
        self,
        client: redis.Redis,
        ledger: sa.Engine,
        session_id: str,
        kill_switch: KillSwitch,
        name: str,
        ttl_ms: int = 10_000,
        before_tick: Callable[[Tick], None] | None = None,
        writes: bool = True,
    ) -> None:
        self.simulator = PaperSimulator(ledger, "paper", paper_start(session_id))
        self.handled: list[str] = []

        def handle(tick: Tick) -> None:
            if before_tick is not None:
                before_tick(tick)
            if writes:
                self.simulator.handle(tick)
            self.handled.append(tick.tick_id)

        self.loop = SessionLoop(
            client,
            session_id,
            "paper",
            kill_switch,
            handle,
            worker=name,
            on_acquire=lambda lease: self.simulator.take_over(lease.fence, name),
            fence_floor=self.simulator.stored_fence,
            on_stop=lambda outcome: record_outcome(self.simulator, outcome),
            lease_ttl_ms=ttl_ms,
        )
        self.outcome: SessionOutcome | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.outcome = self.loop.run()

    def join(self) -> SessionOutcome:
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()
        assert self.outcome is not None
        return self.outcome


def order_tick(i: int) -> Tick:
    order = OrderIntent("buy", 2) if i % 2 else OrderIntent("sell", 1)
    return Tick(f"t{i}", "BTC-USD", 100.0 + i % 7, (order,))


def fence_of_ticks(ledger: sa.Engine, session_id: str) -> dict[str, int]:
    with ledger.connect() as conn:
        rows = conn.execute(
            sa.select(paper_ticks.c.tick_id, paper_ticks.c.fence).where(
                paper_ticks.c.session_id == session_id
            )
        ).all()
    return {tick_id: fence for tick_id, fence in rows}


def assert_books_match_fills(ledger: sa.Engine, session_id: str) -> None:
    """Cash and position equal what the recorded fills add up to (no lost or doubled fill)."""
    with ledger.connect() as conn:
        session = conn.execute(
            sa.select(paper_sessions).where(paper_sessions.c.session_id == session_id)
        ).one()
        fills = conn.execute(
            sa.select(paper_fills).where(paper_fills.c.session_id == session_id)
        ).all()
    signed = [f.qty if f.side == "buy" else -f.qty for f in fills]
    cash = session.starting_cash - sum(
        s * f.price + f.fee for s, f in zip(signed, fills, strict=True)
    )
    assert session.cash == pytest.approx(cash)


def test_a_second_step_waits_for_the_lease_and_writes_nothing_until_handed_on(
    redis_client: redis.Redis, session_id: str, kill_switch: KillSwitch, ledger: sa.Engine
) -> None:
    first = Step(redis_client, ledger, session_id, kill_switch, "first")
    for i in range(10):
        append_tick(redis_client, session_id, order_tick(i))
    wait_for(lambda: len(first.handled) == 10, DEADLINE, "the first step's ticks")

    second = Step(redis_client, ledger, session_id, kill_switch, "second")
    for i in range(10, 20):
        append_tick(redis_client, session_id, order_tick(i))
    wait_for(lambda: len(first.handled) == 20, DEADLINE, "the first step keeps consuming")
    assert second.handled == [] and second.simulator.fence == 0
    owner = owner_of(redis_client, session_id)
    assert owner is not None and (owner.fence, owner.worker) == (1, "first")

    first.loop.request_shutdown()  # a handoff: the second takes over at once
    assert first.join().stopped_by == "shutdown"
    wait_for(lambda: second.simulator.fence == 2, DEADLINE, "the second step's take-over")
    for i in range(20, 30):
        append_tick(redis_client, session_id, order_tick(i))
    wait_for(lambda: len(second.handled) == 10, DEADLINE, "the second step's ticks")
    redis_client.set(session_stop_key(session_id), "done")
    assert second.join().stopped_by == "stop_request"

    fences = fence_of_ticks(ledger, session_id)
    assert fences == {f"t{i}": 1 if i < 20 else 2 for i in range(30)}
    assert first.handled + second.handled == [f"t{i}" for i in range(30)]
    assert_books_match_fills(ledger, session_id)


@pytest.mark.parametrize(
    "writes", [True, False], ids=["postgres-write-refused", "redis-ack-refused"]
)
def test_a_stalled_step_whose_lease_was_taken_over_cannot_write(
    redis_client: redis.Redis,
    session_id: str,
    kill_switch: KillSwitch,
    ledger: sa.Engine,
    writes: bool,
) -> None:
    """`writes`: the stalled step's handler writes the ledger (its tick write is refused by
    Postgres); else it only consumes (its acknowledgement is refused by Redis)."""
    stalled, resume = threading.Event(), threading.Event()

    def stall_on_t5(tick: Tick) -> None:
        if tick.tick_id == "t5" and not stalled.is_set():
            stalled.set()
            resume.wait(DEADLINE)  # frozen mid-tick, before its write

    first = Step(redis_client, ledger, session_id, kill_switch, "first", 500, stall_on_t5, writes)
    for i in range(10):
        append_tick(redis_client, session_id, order_tick(i))
    wait_for(stalled.is_set, DEADLINE, "the first step to stall on t5")

    # Its lease lapses while it is frozen; a second step of the same session takes over.
    second = Step(redis_client, ledger, session_id, kill_switch, "second")
    wait_for(lambda: len(second.handled) == 5, DEADLINE, "the second step's ticks t5-t9")
    resume.set()
    outcome = first.join()
    assert outcome.stopped_by == "lease_lost" and outcome.fence == 1
    assert ("write of tick t5" if writes else "tick ack") in outcome.reason

    redis_client.set(session_stop_key(session_id), "done")
    assert second.join().stopped_by == "stop_request"
    # Without writes, its handler saw t5 (in memory only); what it could not do is ack it.
    assert first.handled == [f"t{i}" for i in range(5 if writes else 6)]
    assert second.handled == [f"t{i}" for i in range(5, 10)]
    fences = fence_of_ticks(ledger, session_id)
    expected = {f"t{i}": 1 if i < 5 else 2 for i in range(10) if writes or i >= 5}
    assert fences == expected
    assert_books_match_fills(ledger, session_id)
    with ledger.connect() as conn:
        status, losses, resumes = conn.execute(
            sa.select(paper_sessions.c.status, paper_sessions.c.losses, paper_sessions.c.resumes)
        ).one()
        events = conn.execute(
            sa.select(paper_session_events.c.event, paper_session_events.c.fence).order_by(
                paper_session_events.c.id
            )
        ).all()
    # The superseded step could not write its status either: the owner's stop stands.
    assert (status, losses, resumes) == ("stopped", 1, 1)
    assert [tuple(e) for e in events] == [
        ("running", 1),
        ("lost", 1),
        ("resumed", 2),
        ("superseded", 1),
        ("stopped", 2),
    ]


def test_fence_stays_above_what_the_ledger_saw_when_redis_lost_the_counter(
    redis_client: redis.Redis, session_id: str, ledger: sa.Engine
) -> None:
    simulator = PaperSimulator(ledger, "paper", paper_start(session_id))
    simulator.take_over(41)
    lease = SessionLease(redis_client, session_id, "w")
    assert lease.try_acquire(floor=simulator.stored_fence())
    assert lease.fence == 42
    assert not SessionLease(redis_client, session_id, "other").try_acquire()
    assert lease.release()
