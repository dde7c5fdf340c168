"""dlt sources for the connector pulls: market data over REST, reference data over SQL.

The market-data API pages as `{"data": [...], "next": <url or null>}` and filters daily bars
with `?start=YYYY-MM-DD`. Pages are read with dlt's REST client (its JSON-link paginator and
its retrying session: 429/5xx and connection errors are retried with backoff). The same record
logic serves the sample shipped in `sample/` (files that page the same way), so the embedded
default's main job exercises the real pull path without a network.

Incremental state lives in dlt's pipeline state, which dlt stores in the destination with the
data: daily bars keep the last loaded date and the next pull asks only for dates from that
date minus `lookback_days` (so corrections inside the window are merged again); reference
tables with a `cursor` column read rows whose cursor is at or after the last one loaded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dlt
from dlt.extract.source import DltSource
from dlt.sources.helpers.requests import Client
from dlt.sources.helpers.rest_client import RESTClient
from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
from dlt.sources.helpers.rest_client.paginators import JSONLinkPaginator
from dlt.sources.sql_database import sql_table
from requests import Response

from alphaswarm_orch.defs.ingestion.config import SqlTable

SAMPLE_DIR = Path(__file__).with_name("sample")

PageReader = Callable[[str, dict[str, str]], Iterator[tuple[str, Any]]]
"""(endpoint name, query params) -> (location, decoded page) for each page, following `next`."""

INSTRUMENTS_KEY = ("symbol",)
DAILY_BARS_KEY = ("symbol", "date")
DEFAULT_LOOKBACK_DAYS = 3


class MalformedPage(ValueError):
    """A page that is not JSON or lacks a record's key field; names the page and record."""


@dataclass
class PullStats:
    """What one pull read, per table: rows fetched and duplicate keys among them."""

    fetched: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    since: dict[str, str] = field(default_factory=dict)
    """The incremental start each table asked for (absent: a full read)."""


def http_pages(
    base_url: str,
    *,
    api_key: str | None = None,
    timeout_seconds: float = 30.0,
    max_attempts: int = 5,
    backoff_factor: float = 1.0,
) -> PageReader:
    """Read `<base_url>/<endpoint>` and its `next` pages with dlt's REST client."""
    session = Client(
        request_timeout=timeout_seconds,
        request_max_attempts=max_attempts,
        request_backoff_factor=backoff_factor,
        raise_for_status=False,  # the page hook raises, after the session's retries
    ).session
    client = RESTClient(
        base_url=base_url.rstrip("/"),
        auth=BearerTokenAuth(api_key) if api_key else None,
        paginator=JSONLinkPaginator(next_url_path="next"),
        data_selector="data",
        session=session,
    )

    def read(endpoint: str, params: dict[str, str]) -> Iterator[tuple[str, Any]]:
        for page in client.paginate(
            endpoint, params=params or None, hooks={"response": [_check_page]}
        ):
            yield str(page.response.url), {"data": list(page)}

    return read


def _check_page(response: Response, *args: Any, **kwargs: Any) -> None:
    """A page must be a JSON object with a `data` list; an error status (after the session's
    retries) fails the pull naming the page."""
    response.raise_for_status()
    try:
        payload = response.json()
    except ValueError as exc:
        raise MalformedPage(
            f"{response.url}: response is not JSON ({exc}); nothing from this pull was loaded"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedPage(
            f"{response.url}: expected an object with a 'data' list, got {str(payload)[:200]}"
        )


def file_pages(directory: Path = SAMPLE_DIR) -> PageReader:
    """Read `<directory>/<endpoint>.json` and the files its `next` names (`start` filters)."""

    def read(endpoint: str, params: dict[str, str]) -> Iterator[tuple[str, Any]]:
        path: Path | None = directory / f"{endpoint}.json"
        start = params.get("start")
        while path is not None:
            try:
                payload = json.loads(path.read_text())
            except ValueError as exc:
                raise MalformedPage(f"{path}: not JSON ({exc})") from exc
            if start and isinstance(payload, dict) and isinstance(payload.get("data"), list):
                payload = {
                    **payload,
                    "data": [r for r in payload["data"] if str(r.get("date", "")) >= start],
                }
            yield str(path), payload
            following = payload.get("next") if isinstance(payload, dict) else None
            path = path.with_name(following) if following else None

    return read


def _records(
    pages: PageReader,
    endpoint: str,
    key: Sequence[str],
    stats: PullStats,
    params: dict[str, str] | None = None,
) -> Iterator[list[dict]]:
    """Each page's records, after checking every record carries its key fields (and a valid
    date where the key has one); duplicate keys are counted, not dropped here."""
    seen: set[tuple[Any, ...]] = set()
    for where, payload in pages(endpoint, params or {}):
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise MalformedPage(
                f"{where}: expected an object with a 'data' list, got {str(payload)[:200]}"
            )
        records = payload["data"]
        for index, record in enumerate(records):
            missing = [
                name
                for name in key
                if not isinstance(record, dict) or record.get(name) in (None, "")
            ]
            if missing:
                raise MalformedPage(
                    f"{where}: record {index} has no {', '.join(missing)} (the merge key "
                    f"{'+'.join(key)}): {str(record)[:200]}; nothing from this pull was loaded"
                )
            if "date" in key:
                try:
                    record["date"] = date.fromisoformat(str(record["date"]))
                except ValueError as exc:
                    raise MalformedPage(
                        f"{where}: record {index} has date {record['date']!r}, not YYYY-MM-DD; "
                        "nothing from this pull was loaded"
                    ) from exc
            identity = tuple(record[name] for name in key)
            if identity in seen:
                stats.duplicates[endpoint] += 1
            seen.add(identity)
        stats.fetched[endpoint] += len(records)
        yield records


def market_data_source(
    pages: PageReader,
    name: str = "market_data",
    *,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    stats: PullStats | None = None,
) -> DltSource:
    """Instruments (read whole, replacing the table) and daily bars (incremental by date,
    merged on symbol+date so a rerun or a correction replaces, never duplicates)."""
    stats = stats if stats is not None else PullStats()

    @dlt.resource(name="instruments", primary_key=INSTRUMENTS_KEY, write_disposition="replace")
    def instruments() -> Iterator[list[dict]]:
        """Tradable instruments: symbol, name, exchange, currency, asset class."""
        yield from _records(pages, "instruments", INSTRUMENTS_KEY, stats)

    @dlt.resource(
        name="daily_bars",
        primary_key=DAILY_BARS_KEY,
        write_disposition="merge",
        columns={"date": {"data_type": "date"}},
    )
    def daily_bars(
        bar_date: dlt.sources.incremental[date] = dlt.sources.incremental(  # noqa: B008
            "date", lag=lookback_days
        ),
    ) -> Iterator[list[dict]]:
        """Daily OHLCV bars per instrument and trading date."""
        params: dict[str, str] = {}
        if bar_date.last_value is not None:  # lag applied: the lookback window is re-read
            params["start"] = bar_date.last_value.isoformat()
            stats.since["daily_bars"] = params["start"]
        yield from _records(pages, "daily_bars", DAILY_BARS_KEY, stats, params)

    @dlt.source(name=name)
    def source() -> list:
        return [instruments, daily_bars]

    return source()


SPEC_ONLY_DATABASE = "sqlite://"
"""Used to declare the reference-data assets at load time; never read (reflection deferred)."""


def reference_data_source(url: str, tables: Sequence[SqlTable]) -> DltSource:
    """Tables of a SQL database: by their cursor column where one is configured (merged on
    the primary key), else read whole and replaced (rows deleted upstream disappear)."""

    @dlt.source(name="reference_data")
    def source() -> list:
        return [
            sql_table(
                credentials=url,
                table=table.name,
                primary_key=list(table.primary_key),
                write_disposition="merge" if table.cursor else "replace",
                incremental=dlt.sources.incremental(table.cursor) if table.cursor else None,
                defer_table_reflect=True,
            )
            for table in tables
        ]

    return source()
