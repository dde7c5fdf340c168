"""Tick latency: append -> handled and acknowledged, session loop vs the bare stream round trip.

    python -m benchmarks.ticks                  # 1,000 ticks/s for 30 s
    python -m benchmarks.ticks --seconds 10     # shorter run (--small = 5 s)

Needs Redis (ALPHASWARM_REDIS_URL, default redis://127.0.0.1:6379/15) and the ledger database
(ALPHASWARM_LEDGER_URL / ALPHASWARM_POSTGRES_URL, default the local Postgres `test` database).
A producer process appends ticks at a fixed rate, stamped with `sent_at`; the consumer in
this process measures `time.time() - sent_at` after the acknowledgement. The baseline is a
bare XREADGROUP + XACK consumer of the same stream shape; the session runs the real
SessionLoop with the paper simulator (every `--order-every`th tick carries an order, which
writes fills, positions and the tick id to the ledger database in one transaction).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid

import redis

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.ledger.db import engine_for, migrate
from alphaswarm_orch.sessions.loop import GROUP, SessionLoop
from alphaswarm_orch.sessions.simulator import PaperSimulator, metadata
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from alphaswarm_orch.settings import sqlalchemy_url
from benchmarks.stack import paper_start

DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
DEFAULT_LEDGER = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def produce(redis_url: str, session_id: str, rate: int, total: int, order_every: int) -> None:
    """Append `total` ticks at `rate` per second, on a fixed schedule (no catch-up bursts)."""
    client = redis.Redis.from_url(redis_url)
    interval = 1.0 / rate
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        orders = (OrderIntent("buy" if i % 2 else "sell", 1.0),) if i % order_every == 0 else ()
        append_tick(
            client, session_id, Tick(f"t{i}", "BENCH", 100.0 + (i % 7), orders, time.time())
        )


def bare(
    client: redis.Redis,
    producer: multiprocessing.Process,
    session_id: str,
    total: int,
    timeout: float,
) -> list[float]:
    stream = tick_stream(session_id)
    latencies: list[float] = []
    producer.start()
    deadline = time.monotonic() + timeout
    while len(latencies) < total and time.monotonic() < deadline:
        reply = client.xreadgroup(GROUP, "bare", {stream: ">"}, count=64, block=100)
        for entry_id, fields in reply[0][1] if reply else []:
            client.xack(stream, GROUP, entry_id)
            latencies.append(time.time() - float(fields[b"sent_at"]))
    return latencies


def session(
    client: redis.Redis,
    producer: multiprocessing.Process,
    ledger_url: str,
    session_id: str,
    total: int,
    timeout: float,
    with_orders: list[float],
) -> list[float]:
    """Latencies of all ticks; those of ticks with an order are also added to `with_orders`."""
    latencies: list[float] = []

    def acked(tick: Tick) -> None:
        latency = time.time() - (tick.sent_at or 0.0)
        latencies.append(latency)
        if tick.orders:
            with_orders.append(latency)
        if len(latencies) >= total:
            client.set(session_stop_key(session_id), "benchmark done")

    start = paper_start(session_id, f"bench-{session_id}", symbol="BENCH")
    migrate(ledger_url)
    simulator = PaperSimulator(engine_for(ledger_url), "paper", start)
    kill_switch = KillSwitch(client, f"bench:kill:{session_id}")
    loop = SessionLoop(
        client,
        session_id,
        "paper",
        kill_switch,
        simulator.handle,
        after_ack=acked,
        on_acquire=lambda lease: simulator.take_over(lease.fence),  # ~10 ms, once
    )
    timer = threading.Timer(timeout, lambda: client.set(session_stop_key(session_id), "timeout"))
    timer.start()
    producer.start()  # after the simulator's setup: measure ticks, not the session's start
    try:
        loop.run()
    finally:
        timer.cancel()
    simulator.close("stopped")
    return latencies


def measure(
    kind: str,
    args: argparse.Namespace,
    redis_url: str,
    ledger_url: str,
    with_orders: list[float],
) -> list[float]:
    client = redis.Redis.from_url(redis_url)
    session_id = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(tick_stream(session_id), GROUP, id="0", mkstream=True)
    total = args.rate * args.seconds
    producer = multiprocessing.Process(
        target=produce, args=(redis_url, session_id, args.rate, total, args.order_every)
    )
    timeout = args.seconds * 3 + 10
    try:
        if kind == "bare":
            latencies = bare(client, producer, session_id, total, timeout)
        else:
            latencies = session(
                client, producer, ledger_url, session_id, total, timeout, with_orders
            )
    finally:
        if producer.pid is not None:
            producer.join()
        client.delete(tick_stream(session_id), session_stop_key(session_id))
    return latencies


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] * 1000
        if len(values) > 1
        else float("nan")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="ticks per second")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--small", action="store_true", help="5 s instead of --seconds")
    parser.add_argument("--order-every", type=int, default=10, help="every Nth tick has an order")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/session rounds")
    args = parser.parse_args(argv)
    if args.small:
        args.seconds = 5
    redis_url = os.environ.get("ALPHASWARM_REDIS_URL", DEFAULT_REDIS)
    ledger_url = sqlalchemy_url(
        os.environ.get("ALPHASWARM_LEDGER_URL")
        or os.environ.get("ALPHASWARM_POSTGRES_URL")
        or DEFAULT_LEDGER
    )
    # Alternate short rounds so both consumers see the same machine load (2 shared cores).
    rounds = max(1, min(args.rounds, args.seconds // 5))
    per_round = argparse.Namespace(**{**vars(args), "seconds": args.seconds // rounds})
    total = per_round.seconds * args.rate * rounds
    load_before = os.getloadavg()[0]
    results: dict[str, list[float]] = {"bare": [], "session": []}
    with_orders: list[float] = []
    for _ in range(rounds):
        for kind in results:
            results[kind] += measure(kind, per_round, redis_url, ledger_url, with_orders)
    with engine_for(ledger_url).begin() as conn:  # benchmark sessions leave no rows behind
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete().where(table.c.session_id.like("bench-%")))

    print(
        f"{args.rate} ticks/s for {args.seconds} s ({total} ticks per consumer, {rounds} "
        f"alternating rounds), 1 in {args.order_every} with an order; load average "
        f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}; latency append -> handled + acked"
    )
    print(f"{'consumer':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'handled':>9}{'lost':>6}")
    rows = {"bare XREADGROUP+XACK": results["bare"], "session loop + simulator": results["session"]}
    for name, values in rows.items():
        print(
            f"{name:<28}{pct(values, 50):>9.3f}{pct(values, 99):>9.3f}"
            f"{max(values) * 1000:>9.3f}{len(values):>9}{total - len(values):>6}"
        )
    if with_orders:  # the share of the session's tail that is the ledger write
        print(
            f"{'  of which ticks w/ orders':<28}{pct(with_orders, 50):>9.3f}"
            f"{pct(with_orders, 99):>9.3f}{max(with_orders) * 1000:>9.3f}{len(with_orders):>9}"
        )
    base50, base99 = pct(results["bare"], 50), pct(results["bare"], 99)
    p50, p99 = pct(results["session"], 50), pct(results["session"], 99)
    print(f"{'ratio session/bare':<28}{p50 / base50:>8.2f}x{p99 / base99:>8.2f}x")
    ok = p99 <= 5.0 and p50 <= 3 * base50 and len(results["session"]) == total
    print(f"targets p99 <= 5 ms, p50 <= 3x bare, no tick lost: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
