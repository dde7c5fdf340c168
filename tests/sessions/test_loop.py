"""The session loop on the real Redis and Postgres: ack, stop, kill switch, crash and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.sessions.loop import CONSUMER, GROUP, SessionLoop
from alphaswarm_orch.sessions.simulator import PaperSimulator, paper_fills, paper_ticks
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from tests.sessions.conftest import paper_start
from tests.support.ops import RedisServer
from tests.support.runs import wait_for
from tests.support.switches import KEY_TYPES, write_switch

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 60
LEASE_TTL_MS = 1000
"""Short: a SIGKILLed session's successor waits this long for the lease."""


def order_ticks(n: int, start: int = 0) -> list[Tick]:
    """Ticks that each fill one order, alternating buy 2 / sell 1, so the position drifts up."""
    return [
        Tick(
            f"t{i}",
            "BTC-USD",
            100.0 + i % 5,
            (OrderIntent("buy", 2) if i % 2 else OrderIntent("sell", 1),),
        )
        for i in range(start, start + n)
    ]


def pending(client: redis.Redis, session_id: str) -> int:
    return client.xpending(tick_stream(session_id), GROUP)["pending"]


def test_ticks_are_handled_in_order_acked_and_a_stop_request_ends_the_loop(
    redis_client: redis.Redis, session_id: str, kill_switch: KillSwitch
) -> None:
    for tick in order_ticks(5):
        append_tick(redis_client, session_id, tick)
    handled: list[str] = []

    def handle(tick: Tick) -> None:
        handled.append(tick.tick_id)
        if len(handled) == 5:
            redis_client.set(session_stop_key(session_id), "end of day")

    outcome = SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run()

    assert handled == [f"t{i}" for i in range(5)]
    assert (outcome.stopped_by, outcome.reason, outcome.ticks) == ("stop_request", "end of day", 5)
    assert not outcome.resumable
    assert pending(redis_client, session_id) == 0


def test_kill_switch_stops_within_one_tick_and_clearing_resumes(
    redis_client: redis.Redis, session_id: str, kill_switch: KillSwitch
) -> None:
    for tick in order_ticks(10):
        append_tick(redis_client, session_id, tick)
    handled: list[str] = []

    def handle(tick: Tick) -> None:
        handled.append(tick.tick_id)
        if len(handled) == 3:
            kill_switch.engage("risk limit breached", queue="paper")
        if len(handled) == 10:
            redis_client.set(session_stop_key(session_id), "done")

    outcome = SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run()
    assert handled == ["t0", "t1", "t2"]
    assert outcome.stopped_by == "kill_switch" and outcome.resumable
    assert outcome.reason == "risk limit breached"
    refusal = outcome.refusal("session s")
    assert refusal is not None and "risk limit breached" in str(refusal)

    # Still set: a new loop stops before touching a tick. An hft-only switch does not apply.
    assert SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run().ticks == 0
    kill_switch.clear("paper")
    kill_switch.engage("hft only", queue="hft")
    resumed = SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run()
    assert resumed.stopped_by == "stop_request"
    assert handled == [f"t{i}" for i in range(10)]


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_a_switch_key_of_any_type_stops_the_session(
    redis_client: redis.Redis, session_id: str, kill_switch: KillSwitch, kind: str
) -> None:
    for tick in order_ticks(6):
        append_tick(redis_client, session_id, tick)
    handled: list[str] = []
    reasons: list[str] = []

    def handle(tick: Tick) -> None:
        handled.append(tick.tick_id)
        if len(handled) == 2:
            reasons.append(write_switch(redis_client, kill_switch.key_for("paper"), kind))
        if len(handled) == 6:  # a loop that ignored the switch ends here, not never
            redis_client.set(session_stop_key(session_id), "end of test")

    outcome = SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run()
    assert handled == ["t0", "t1"]
    assert (outcome.stopped_by, outcome.reason) == ("kill_switch", reasons[0])
    assert outcome.kill_key == kill_switch.key_for("paper") and outcome.resumable
    # A new loop under the same switch stops before touching a tick.
    assert SessionLoop(redis_client, session_id, "paper", kill_switch, handle).run().ticks == 0


def test_a_session_whose_redis_goes_away_stops_as_killed(session_id: str, tmp_path: Path) -> None:
    server = RedisServer.start_in(tmp_path / "redis")
    client = redis.Redis.from_url(server.url(), socket_connect_timeout=1)
    try:
        for tick in order_ticks(4):
            append_tick(client, session_id, tick)
        handled: list[str] = []

        def handle(tick: Tick) -> None:
            handled.append(tick.tick_id)
            server.stop()  # the ack and the switch read after this tick cannot reach Redis

        switch = KillSwitch(client, "alphaswarm:kill_switch")
        outcome = SessionLoop(client, session_id, "paper", switch, handle).run()
    finally:
        client.close()
        server.stop()
    assert handled == ["t0"]
    assert outcome.stopped_by == "kill_switch" and outcome.resumable
    assert outcome.reason.startswith("kill switch unreadable: ConnectionError")


def test_restart_claims_pending_ticks_of_any_consumer(
    redis_client: redis.Redis, session_id: str, kill_switch: KillSwitch, ledger: sa.Engine
) -> None:
    stream = tick_stream(session_id)
    for tick in order_ticks(6):
        append_tick(redis_client, session_id, tick)
    redis_client.xgroup_create(stream, GROUP, id="0")
    # A crashed run read t0-t1 and an older deployment's consumer read t2-t3; none acked.
    redis_client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=2)
    redis_client.xreadgroup(GROUP, "old-consumer", {stream: ">"}, count=2)
    assert pending(redis_client, session_id) == 4

    crashed = PaperSimulator(ledger, "paper", paper_start(session_id))
    crashed.take_over(1)
    crashed.handle(order_ticks(1)[0])  # t0's effect was committed before the crash
    simulator = PaperSimulator(ledger, "paper", paper_start(session_id))
    handled: list[str] = []

    def handle(tick: Tick) -> None:
        handled.append(tick.tick_id)
        simulator.handle(tick)
        if len(handled) == 6:
            redis_client.set(session_stop_key(session_id), "done")

    SessionLoop(
        redis_client,
        session_id,
        "paper",
        kill_switch,
        handle,
        on_acquire=lambda lease: simulator.take_over(lease.fence),
        fence_floor=simulator.stored_fence,
    ).run()

    assert sorted(handled) == [f"t{i}" for i in range(6)]
    assert pending(redis_client, session_id) == 0
    with ledger.connect() as conn:
        fills = conn.execute(sa.select(paper_fills.c.tick_id)).scalars().all()
    assert sorted(fills) == [f"t{i}" for i in range(6)]


def start_session(
    redis_url: str, ledger_url: str, session_id: str, kill_key: str
) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sessions.session_process",
            redis_url,
            ledger_url,
            session_id,
            kill_key,
            str(LEASE_TTL_MS),
        ],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def handled_ticks(ledger: sa.Engine, session_id: str) -> int:
    with ledger.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(paper_ticks)
            .where(paper_ticks.c.session_id == session_id)
        ).scalar_one()


def expected_state(ticks: list[Tick], tmp_path: Path) -> tuple[float, float]:
    """Cash and position from one uninterrupted pass over `ticks` (on a scratch SQLite)."""
    migrate(f"sqlite:///{tmp_path / 'reference.db'}")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    reference = PaperSimulator(engine, "paper", paper_start("reference"))
    reference.take_over(1)
    for tick in ticks:
        reference.handle(tick)
    reference.close("stopped")
    engine.dispose()
    return reference.cash, reference.positions["BTC-USD"].qty


def test_crash_and_restart_lose_and_duplicate_no_fill(
    redis_urls: tuple[str, str],
    redis_client: redis.Redis,
    session_id: str,
    kill_switch: KillSwitch,
    ledger: sa.Engine,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    ticks = order_ticks(400)
    for tick in ticks:
        append_tick(redis_client, session_id, tick)

    for crash in range(1, 4):  # SIGKILL mid-stream, three times
        process = start_session(redis_urls[0], postgres_url, session_id, kill_switch.key)
        wait_for(
            lambda c=crash: handled_ticks(ledger, session_id) >= 80 * c,
            DEADLINE,
            f"progress before crash {crash}",
        )
        process.kill()
        process.wait(DEADLINE)
        process.stdout.close()

    process = start_session(redis_urls[0], postgres_url, session_id, kill_switch.key)
    wait_for(
        lambda: handled_ticks(ledger, session_id) == len(ticks), DEADLINE, "every tick handled"
    )
    wait_for(lambda: pending(redis_client, session_id) == 0, DEADLINE, "every tick acked")
    redis_client.set(session_stop_key(session_id), "done")
    out, _ = process.communicate(timeout=DEADLINE)
    assert json.loads(out)["stopped_by"] == "stop_request"

    with ledger.connect() as conn:
        fills = conn.execute(sa.select(paper_fills.c.tick_id, paper_fills.c.seq)).all()
    restarted = PaperSimulator(ledger, "paper", paper_start(session_id))
    restarted.take_over(restarted.stored_fence() + 1)
    assert sorted(fills) == sorted((t.tick_id, 0) for t in ticks)
    cash, qty = expected_state(ticks, tmp_path)
    assert restarted.cash == cash and restarted.positions["BTC-USD"].qty == qty
    restarted.close("stopped")


def test_sigterm_finishes_the_tick_and_stops_resumably(
    redis_urls: tuple[str, str],
    redis_client: redis.Redis,
    session_id: str,
    kill_switch: KillSwitch,
    ledger: sa.Engine,
    postgres_url: str,
) -> None:
    for tick in order_ticks(2000):
        append_tick(redis_client, session_id, tick)
    process = start_session(redis_urls[0], postgres_url, session_id, kill_switch.key)
    wait_for(lambda: handled_ticks(ledger, session_id) >= 50, DEADLINE, "session progress")
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=DEADLINE)

    assert process.returncode == 0
    outcome = json.loads(out)
    assert outcome["stopped_by"] == "shutdown" and outcome["resumable"]
    assert 0 < outcome["ticks"] == handled_ticks(ledger, session_id)
    # Nothing half-done: every handled tick is acked; later ones wait in the stream/pending list.
    acked = outcome["ticks"]
    info = redis_client.xinfo_groups(tick_stream(session_id))[0]
    assert info["entries-read"] - info["pending"] == acked
