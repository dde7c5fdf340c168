"""Incremental daily-bars pull: the second run (one new day) vs a full reload, side by side.

    python -m benchmarks.incremental_pull            # 500 symbols x 5 years of weekdays
    python -m benchmarks.incremental_pull --small    # 50 symbols x 1 year, a quick check

A local HTTP market-data server (tests/ingestion/market_api.py: JSON pages following `next`,
`?start=` filtering) serves the bars; the pull is the market-data assets materialized in
process into the embedded duckdb (the code path of `ingestion_pull_market_data_job`).
1. initial: a fresh storage dir loads everything (state: last loaded date);
2. one trading day is added upstream;
3. incremental: the same storage dir pulls again (reads the lookback window + the new day);
4. full reload: a fresh storage dir loads the same data set (5 years + 1 day) from scratch.
Reported: wall time and rows fetched of each, and full reload / incremental.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dagster as dg
from dagster_dlt import DagsterDltResource

from alphaswarm_orch.defs.ingestion.assets import market_data_pull_assets
from alphaswarm_orch.defs.ingestion.resources import MarketDataApi, PullStorage
from alphaswarm_orch.defs.ingestion.sources import DEFAULT_LOOKBACK_DAYS
from alphaswarm_orch.settings import Settings
from tests.ingestion.market_api import running_market_api

PAGE_SIZE = 5_000


def weekdays(first: date, count: int) -> list[date]:
    days: list[date] = []
    day = first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def bars(symbols: int, days: list[date]) -> list[dict[str, Any]]:
    return [
        {
            "symbol": f"S{s:04d}",
            "date": day.isoformat(),
            "open": 100.0 + s,
            "high": 101.0 + s,
            "low": 99.0 + s,
            "close": 100.5 + s + d * 0.01,
            "volume": 1_000 + d,
        }
        for d, day in enumerate(days)
        for s in range(symbols)
    ]


def pull(storage: Path, base_url: str) -> tuple[float, dict[str, Any]]:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(storage)})
    started = time.perf_counter()
    result = dg.materialize(
        [market_data_pull_assets(PullStorage(settings), ("team:ingestion",))],
        resources={
            "dlt": DagsterDltResource(),
            "market_data_api": MarketDataApi(base_url=base_url),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    elapsed = time.perf_counter() - started
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "daily_bars"
    ]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    return elapsed, metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="50 symbols x 1 year")
    args = parser.parse_args(argv)
    symbols, years = (50, 1) if args.small else (args.symbols, args.years)
    days = weekdays(date(2021, 1, 4), 261 * years + 1)
    history = days[:-1]

    with running_market_api() as api, tempfile.TemporaryDirectory() as tmp:
        api.page_sizes["daily_bars"] = PAGE_SIZE
        api.data["daily_bars"] = bars(symbols, history)
        print(f"{symbols} symbols x {len(history)} days = {len(api.data['daily_bars']):,} bars")
        initial_s, initial = pull(Path(tmp) / "incremental", api.base_url)

        grown = bars(symbols, days)
        api.data["daily_bars"] = grown
        incremental_s, incremental = pull(Path(tmp) / "incremental", api.base_url)
        full_s, full = pull(Path(tmp) / "full", api.base_url)

    rows = [
        (f"initial load ({years} y)", initial_s, initial),
        ("second run: incremental (+1 day)", incremental_s, incremental),
        (f"full reload ({years} y + 1 day)", full_s, full),
    ]
    print("\n| run | wall (s) | rows fetched | rows written | since |")
    print("|---|---|---|---|---|")
    for name, seconds, meta in rows:
        print(
            f"| {name} | {seconds:.2f} | {meta['rows_fetched']:,} | {meta['rows_written']:,} "
            f"| {meta['incremental_since']} |"
        )
    ratio = full_s / incremental_s
    print(f"\nfull reload / incremental: {ratio:.1f}x (target >= 20x)")
    # The start is the last loaded date minus the lookback (calendar days, inclusive), so at
    # most lookback + 1 loaded days are read again for corrections, plus the new day.
    window_days = DEFAULT_LOOKBACK_DAYS + 2
    fetched_only_new = incremental["rows_fetched"] <= symbols * window_days
    print(
        f"incremental fetched only the {DEFAULT_LOOKBACK_DAYS}-day lookback window and the new "
        f"day (<= {symbols * window_days:,} rows): {fetched_only_new}"
    )
    return 0 if ratio >= 20 and fetched_only_new else 1


if __name__ == "__main__":
    sys.exit(main())
