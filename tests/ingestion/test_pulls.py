"""dlt connector pulls end to end: real HTTP on 127.0.0.1 and real Postgres as source and
destination; the shipped sample into duckdb on the embedded default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg2
import pytest
from dagster_dlt import DagsterDltResource

from alphaswarm_orch.defs import ingestion
from alphaswarm_orch.defs.ingestion.assets import (
    market_data_pull_assets,
    reference_data_pull_assets,
)
from alphaswarm_orch.defs.ingestion.config import SqlTable
from alphaswarm_orch.defs.ingestion.resources import MarketDataApi, PullStorage, ReferenceDatabase
from alphaswarm_orch.settings import Settings
from tests.ingestion.market_api import MarketApi, daily_bars, running_market_api
from tests.support import services

OWNERS = ("team:ingestion",)


@pytest.fixture
def market_api() -> Iterator[MarketApi]:
    with running_market_api() as api:
        yield api


def settings_for(storage: Path, postgres_url: str | None = None) -> Settings:
    env = {"ALPHASWARM_STORAGE_DIR": str(storage)}
    if postgres_url:
        env["ALPHASWARM_POSTGRES_URL"] = postgres_url
    return Settings.from_env(env)


def pull_market_data(settings: Settings, api: MarketApi) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [market_data_pull_assets(PullStorage(settings), OWNERS)],
        resources={
            "dlt": DagsterDltResource(),
            "market_data_api": MarketDataApi(base_url=api.base_url, backoff_factor=0.05),
        },
        raise_on_error=False,
    )


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def table_exists(url: str, schema: str, table: str) -> bool:
    rows = query(
        url,
        "SELECT 1 FROM information_schema.tables "
        f"WHERE table_schema = '{schema}' AND table_name = '{table}'",
    )
    return bool(rows)


def counts(url: str) -> tuple[int, int]:
    return (
        query(url, "SELECT count(*) FROM market_data.instruments")[0][0],
        query(url, "SELECT count(*) FROM market_data.daily_bars")[0][0],
    )


def step_error(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = result.get_step_failure_events()
    return failure.step_failure_data.error.to_string()


def bars_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == "daily_bars"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_rest_pull_lands_in_postgres_and_a_rerun_merges(tmp_path, postgres_url, market_api):
    settings = settings_for(tmp_path, postgres_url)

    first = pull_market_data(settings, market_api)
    assert first.success
    assert counts(postgres_url) == (5, 40)
    materializations = {
        tuple(m.asset_key.path): m.materialization.metadata
        for m in first.get_asset_materialization_events()
    }
    assert set(materializations) == {
        ("ingestion", "market_data", "instruments"),
        ("ingestion", "market_data", "daily_bars"),
    }
    bars = materializations[("ingestion", "market_data", "daily_bars")]
    assert bars["dagster/row_count"].value == 40
    assert bars["rows_loaded"].value == 40
    columns = {c.name: c.type for c in bars["dagster/column_schema"].value.columns}
    assert {"symbol": "text", "date": "date", "close": "double"}.items() <= columns.items()

    assert bars["rows_fetched"].value == 40
    assert bars["rows_written"].value == 40
    assert bars["incremental_since"].value == "full read"

    # Upstream corrects every close: only the lookback window (3 days before the last loaded
    # date, 2026-11-09) is read again and merged; older dates keep their loaded values.
    market_api.data["daily_bars"] = daily_bars(close_bump=10.0)
    marker = len(market_api.requests)
    second = pull_market_data(settings, market_api)
    assert second.success
    assert counts(postgres_url) == (5, 40)  # merged on the keys, not appended
    close = "SELECT close FROM market_data.daily_bars WHERE symbol = 'AAPL' AND date = '{}'"
    assert query(postgres_url, close.format("2026-11-06")) == [(114.5,)]
    assert query(postgres_url, close.format("2026-11-05")) == [(103.5,)]
    again = bars_metadata(second)
    assert again["incremental_since"] == "2026-11-06"
    assert again["rows_fetched"] == again["rows_written"] == 4 * 5
    bar_pages = [r for r in market_api.requests[marker:] if "daily_bars" in r]
    assert len(bar_pages) == 2 and all("start=2026-11-06" in r for r in bar_pages)


def test_next_day_fetches_only_the_window_and_the_new_day(tmp_path, postgres_url, market_api):
    settings = settings_for(tmp_path, postgres_url)
    assert pull_market_data(settings, market_api).success
    new_day = [dict(b, date="2026-11-10") for b in daily_bars() if b["date"] == "2026-11-09"]
    market_api.data["daily_bars"] = daily_bars() + new_day
    served = market_api.rows_served["daily_bars"]

    result = pull_market_data(settings, market_api)

    assert result.success
    assert counts(postgres_url) == (5, 45)
    assert market_api.rows_served["daily_bars"] - served == 5 * 5  # 11-06 .. 11-10
    assert bars_metadata(result)["rows_fetched"] == 25


def test_a_500_on_page_2_is_retried_not_fatal(tmp_path, postgres_url, market_api):
    market_api.fail_once = {("daily_bars", 2)}

    result = pull_market_data(settings_for(tmp_path, postgres_url), market_api)

    assert result.success
    assert counts(postgres_url) == (5, 40)
    assert not market_api.fail_once  # the fault was served, then the page again


def test_duplicate_keys_in_one_load_are_a_warning_with_the_count(
    tmp_path, postgres_url, market_api
):
    bars = daily_bars()
    market_api.data["daily_bars"] = [*bars, dict(bars[3]), dict(bars[17])]

    result = pull_market_data(settings_for(tmp_path, postgres_url), market_api)

    assert result.success
    metadata = bars_metadata(result)
    assert metadata["duplicate_keys"] == 2
    assert "2 row(s) of daily_bars repeated a key" in metadata["warning"]
    assert metadata["rows_fetched"] == 42
    assert counts(postgres_url) == (5, 40)


def test_bad_json_page_fails_the_step_and_loads_nothing(tmp_path, postgres_url, market_api):
    market_api.corrupt = ("daily_bars", 2, "json")

    result = pull_market_data(settings_for(tmp_path, postgres_url), market_api)

    assert not result.success
    message = step_error(result)
    assert f"{market_api.base_url}/daily_bars?page=2: response is not JSON" in message
    # Instruments were fully extracted before the bad page, yet nothing was committed.
    assert not table_exists(postgres_url, "market_data", "instruments")
    assert not table_exists(postgres_url, "market_data", "daily_bars")


def test_missing_key_field_fails_and_keeps_the_previous_load(tmp_path, postgres_url, market_api):
    settings = settings_for(tmp_path, postgres_url)
    assert pull_market_data(settings, market_api).success

    market_api.data["daily_bars"] = daily_bars(close_bump=10.0)
    market_api.corrupt = ("daily_bars", 2, "missing_key")
    result = pull_market_data(settings, market_api)

    assert not result.success
    assert (
        "daily_bars?page=2&start=2026-11-06: record 1 has no symbol (the merge key symbol+date)"
        in step_error(result)
    )
    assert counts(postgres_url) == (5, 40)
    # Page 1 of the failed pull carried new closes: none of them was committed.
    assert query(postgres_url, "SELECT max(close) FROM market_data.daily_bars") == [(111.5,)]


def test_sql_pull_reads_by_cursor_and_replaces_tables_without_one(tmp_path, postgres_url):
    """`cursor` tables: only rows at/after the last cursor value are read, merged on the key.
    Tables without one are read whole and replaced, so rows deleted upstream disappear."""
    with services.temporary_database("as_refcur") as source_url:
        conn = psycopg2.connect(source_url.replace("postgresql+psycopg2://", "postgresql://"))
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE venues (mic text PRIMARY KEY, name text, updated int)")
            cur.execute("INSERT INTO venues VALUES ('XNAS', 'Nasdaq', 1), ('XETR', 'Xetra', 2)")
            cur.execute("CREATE TABLE holidays (day text PRIMARY KEY, name text)")
            cur.execute("INSERT INTO holidays VALUES ('2026-12-25', 'Xmas'), ('2026-01-01', 'NY')")
        assets = reference_data_pull_assets(
            PullStorage(settings_for(tmp_path, postgres_url)),
            (SqlTable("venues", ("mic",), cursor="updated"), SqlTable("holidays", ("day",))),
            OWNERS,
        )
        resources = {
            "dlt": DagsterDltResource(),
            "reference_database": ReferenceDatabase(url=source_url),
        }
        assert dg.materialize([assets], resources=resources).success

        with conn, conn.cursor() as cur:
            # Below the cursor: not read again. At/after it: merged.
            cur.execute("UPDATE venues SET name = 'ignored' WHERE mic = 'XNAS'")
            cur.execute("INSERT INTO venues VALUES ('XCME', 'CME', 3)")
            cur.execute("DELETE FROM holidays WHERE day = '2026-01-01'")
        conn.close()
        second = dg.materialize([assets], resources=resources)
        assert second.success

    assert query(postgres_url, "SELECT mic, name FROM reference_data.venues ORDER BY mic") == [
        ("XCME", "CME"),
        ("XETR", "Xetra"),
        ("XNAS", "Nasdaq"),
    ]
    assert query(postgres_url, "SELECT day FROM reference_data.holidays") == [("2026-12-25",)]


def test_sql_pull_copies_a_postgres_table_and_a_rerun_merges(tmp_path, postgres_url):
    with services.temporary_database("as_refsrc") as source_url:
        conn = psycopg2.connect(source_url.replace("postgresql+psycopg2://", "postgresql://"))
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE exchanges (mic text PRIMARY KEY, name text, tz text)")
            cur.execute(
                "INSERT INTO exchanges VALUES ('XNAS', 'Nasdaq', 'America/New_York'),"
                " ('XETR', 'Xetra', 'Europe/Berlin'), ('XCME', 'CME', 'America/Chicago')"
            )
        assets = reference_data_pull_assets(
            PullStorage(settings_for(tmp_path, postgres_url)),
            (SqlTable("exchanges", ("mic",)),),
            OWNERS,
        )
        resources = {
            "dlt": DagsterDltResource(),
            "reference_database": ReferenceDatabase(url=source_url),
        }

        first = dg.materialize([assets], resources=resources)
        (event,) = first.get_asset_materialization_events()
        assert event.asset_key == dg.AssetKey(["ingestion", "reference_data", "exchanges"])
        assert event.materialization.metadata["dagster/row_count"].value == 3

        with conn, conn.cursor() as cur:
            cur.execute("UPDATE exchanges SET name = 'Nasdaq Stock Market' WHERE mic = 'XNAS'")
        conn.close()
        assert dg.materialize([assets], resources=resources).success

    assert query(postgres_url, "SELECT mic, name FROM reference_data.exchanges ORDER BY mic") == [
        ("XCME", "CME"),
        ("XETR", "Xetra"),
        ("XNAS", "Nasdaq Stock Market"),
    ]


def test_sample_job_loads_the_shipped_sample_into_duckdb(tmp_path):
    settings = settings_for(tmp_path)
    defs = ingestion.build_defs(settings)
    job = defs.resolve_job_def("ingestion_sample_job")

    for _ in range(2):  # the rerun merges
        assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success

    storage = PullStorage(settings)
    with duckdb.connect(str(storage.duckdb_path), read_only=True) as db:
        assert db.sql("SELECT count(*) FROM sample.instruments").fetchall() == [(5,)]
        assert db.sql("SELECT count(*) FROM sample.daily_bars").fetchall() == [(50,)]
    assert not any((storage.root / "dlt" / "runs").iterdir())  # per-run dirs removed
