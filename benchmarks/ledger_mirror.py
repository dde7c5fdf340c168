"""Ledger mirror: drain a backlog of N runs' events vs reading the same events alone.

    python -m benchmarks.ledger_mirror            # 10,000 runs
    python -m benchmarks.ledger_mirror --small    # 700 runs

Needs the machine's Postgres (127.0.0.1:5432, trust auth). Builds a Dagster history on a
throw-away Postgres database: 8 template runs (executed: success with partitioned assets,
op retry, failure, kill-switch refusal, re-execution; recorded: a cancel, a launch) copied
under new run ids inside Postgres (100,000 runs in about 20 s), then analysed. The cache is
warmed by reading the events' text once in SQL before the read and the drain.
The floor is `read_events` over the whole backlog with the same batch size (the same
queries and deserialisation the mirror does); the mirror adds run lookups, derivation and the
ledger writes. Targets: >= 500 runs/s and <= 2x the floor. Steady state: a tick after 8 new
runs arrive on an up-to-date ledger.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alphaswarm_orch.ledger.db import ledger_engine
from alphaswarm_orch.ledger.events import READ_TYPES, read_events
from alphaswarm_orch.ledger.mirror import DEFAULT_BATCH_SIZE, LedgerMirror
from alphaswarm_orch.ledger.store import mirror_status
from alphaswarm_orch.settings import Settings
from tests.ledger import workloads
from tests.support import services


def bare_read(instance: dg.DagsterInstance, batch_size: int) -> int:
    """Read every mirrored event type from storage, batch by batch: the floor."""
    after, total = -1, 0
    while True:
        events, drained = read_events(instance, after, batch_size)
        total += len(events)
        if events:
            after = events[-1][0]
        if drained:
            return total


def warm(instance: dg.DagsterInstance) -> None:
    """Read every stored event's text once, in Postgres (seconds, not a bare read's
    minutes): the read and the mirror that follow both find the backlog in the cache."""
    with instance.event_log_storage.index_connection() as conn:
        conn.execute(sa.text("SELECT sum(length(event)) FROM event_logs")).scalar()


@dataclass
class Drain:
    runs: int
    events: int
    read_s: float
    mirror_s: float
    batches: int
    ticks: list[float]
    lag_s: float

    @property
    def read_rate(self) -> float:
        return self.runs / self.read_s

    @property
    def mirror_rate(self) -> float:
        return self.runs / self.mirror_s

    @property
    def ratio(self) -> float:
        return self.mirror_s / self.read_s


def _stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def drains(
    sizes: list[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    check: Callable[[int], None] | None = None,
    log: Callable[[str], None] = _stderr,
) -> Iterator[Drain]:
    """One backlog per size (ascending, >= 8 runs), each drained into a new empty ledger. The
    history is built once and grown from one size to the next (copied inside Postgres:
    `workloads.grow_in_database`). `check(runs)` is called before each size is built (it may
    raise to stop there); `log` gets the progress."""
    with (
        services.temporary_database("as_bench_dagster") as dagster_url,
        dg.instance_for_test(
            overrides={"storage": {"postgres": {"postgres_url": dagster_url}}}
        ) as instance,
    ):
        started = time.perf_counter()
        history = workloads.execute_templates(instance)
        for runs in sizes:
            if check is not None:
                check(runs)
            copies = runs // len(history.templates) - len(history.run_ids) // len(history.templates)
            workloads.grow(instance, history, copies, event_types=frozenset(READ_TYPES), bulk=True)
            built = time.perf_counter() - started
            log(f"built {len(history.run_ids)} runs in {built:.1f} s")
            with services.temporary_database("as_bench_ledger") as ledger_url:
                yield _drain(instance, history, ledger_url, batch_size, log)
            started = time.perf_counter()


def _drain(
    instance: dg.DagsterInstance,
    history: workloads.History,
    ledger_url: str,
    batch_size: int,
    log: Callable[[str], None],
) -> Drain:
    total_runs = len(history.run_ids)
    warm(instance)  # both sides then read from a warm cache
    log(f"{total_runs} runs: cache warmed, the bare read")
    started = time.perf_counter()
    events = bare_read(instance, batch_size)
    read_s = time.perf_counter() - started
    log(f"{total_runs} runs: read {events} events in {read_s:.1f} s, the mirror")

    settings = Settings.from_env({"ALPHASWARM_LEDGER_URL": ledger_url})
    mirror = LedgerMirror(
        settings, instance, asset_graph=workloads.defs.resolve_asset_graph(), batch_size=batch_size
    )
    ledger_engine(settings)  # creates the ledger (migrations): not part of the drain
    started = time.perf_counter()
    batches = mirror.sync()
    mirror_s = time.perf_counter() - started

    ticks = []
    for _ in range(5):
        workloads.grow(instance, history, 1, event_types=frozenset(READ_TYPES))
        started = time.perf_counter()
        mirror.sync_once()
        ticks.append(time.perf_counter() - started)
    status = mirror_status(settings)
    return Drain(total_runs, events, read_s, mirror_s, len(batches), ticks, status.lag_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="backlog size in runs")
    parser.add_argument("--small", action="store_true", help="700 runs, for a quick check")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()
    runs = 700 if args.small else args.runs
    if runs < 8:
        parser.error(f"--runs {runs}: need at least 8 (one of each template)")
    (drain,) = drains([runs], args.batch_size)
    print(f"ledger mirror, {drain.runs} runs / {drain.events} events, batch {args.batch_size}/type")
    print(f"| {'measure':34} | {'bare read (floor)':>17} | {'mirror':>10} | {'ratio':>6} |")
    print(f"| {'-' * 34} | {'-' * 17}:| {'-' * 10}:| {'-' * 6}:|")
    print(f"| {'seconds per 1000 runs':34} | {1000 / drain.read_rate:17.3f} "
          f"| {1000 / drain.mirror_rate:10.3f} | {drain.ratio:5.2f}x |")  # fmt: skip
    print(f"| {'runs/s':34} | {drain.read_rate:17.0f} | {drain.mirror_rate:10.0f} | {'':6} |")
    print(f"| {'batches':34} | {'':17} | {drain.batches:10d} | {'':6} |")
    print(f"| {'steady tick, 8 new runs (median s)':34} | {'':17} "
          f"| {statistics.median(drain.ticks):10.3f} | {'':6} |")  # fmt: skip
    print(f"| {'lag after the last tick (s)':34} | {'':17} | {drain.lag_s:10.1f} | {'':6} |")
    verdict = "met" if drain.mirror_rate >= 500 and drain.ratio <= 2.0 else "NOT met"
    print(f"target (>= 500 runs/s, <= 2.00x the floor): {verdict}")


if __name__ == "__main__":
    main()
