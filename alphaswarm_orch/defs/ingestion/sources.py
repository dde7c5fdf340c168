"""dlt sources for the connector pulls: market data over REST, reference data over SQL.

The market-data API pages as `{"data": [...], "next": <url or null>}`. The same reader logic
serves the sample shipped in `sample/` (files that page the same way), so the embedded
default's main job exercises the real pull path without a network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import dlt
import requests
from dlt.extract.source import DltSource
from dlt.sources.sql_database import sql_table

from alphaswarm_orch.defs.ingestion.config import SqlTable

SAMPLE_DIR = Path(__file__).with_name("sample")

PageReader = Callable[[str], Iterator[tuple[str, Any]]]
"""endpoint name -> (location, decoded page) for each page, following `next`."""

INSTRUMENTS_KEY = ("symbol",)
DAILY_BARS_KEY = ("symbol", "date")


class MalformedPage(ValueError):
    """A page that is not JSON or lacks a record's key field; names the page and record."""


def http_pages(
    base_url: str, *, api_key: str | None = None, timeout_seconds: float = 30.0
) -> PageReader:
    """Read `<base_url>/<endpoint>` and its `next` pages over HTTP."""
    session = requests.Session()
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"

    def read(endpoint: str) -> Iterator[tuple[str, Any]]:
        url: str | None = f"{base_url.rstrip('/')}/{endpoint}"
        while url is not None:
            response = session.get(url, timeout=timeout_seconds)
            response.raise_for_status()
            try:
                payload = response.json()
            except ValueError as exc:
                raise MalformedPage(
                    f"{url}: response is not JSON ({exc}); nothing from this pull was loaded"
                ) from exc
            yield url, payload
            url = _next(url, payload, urljoin)

    return read


def file_pages(directory: Path = SAMPLE_DIR) -> PageReader:
    """Read `<directory>/<endpoint>.json` and the files its `next` names."""

    def read(endpoint: str) -> Iterator[tuple[str, Any]]:
        path: Path | None = directory / f"{endpoint}.json"
        while path is not None:
            try:
                payload = json.loads(path.read_text())
            except ValueError as exc:
                raise MalformedPage(f"{path}: not JSON ({exc})") from exc
            yield str(path), payload
            path = _next(path, payload, lambda here, name: here.with_name(name))

    return read


def _next(here: Any, payload: Any, resolve: Callable[[Any, str], Any]) -> Any:
    following = payload.get("next") if isinstance(payload, dict) else None
    return resolve(here, following) if following else None


def _records(pages: PageReader, endpoint: str, key: Sequence[str]) -> Iterator[list[dict]]:
    """Each page's records, after checking every record carries its key fields."""
    for where, payload in pages(endpoint):
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise MalformedPage(
                f"{where}: expected an object with a 'data' list, got {str(payload)[:200]}"
            )
        for index, record in enumerate(payload["data"]):
            missing = [
                field
                for field in key
                if not isinstance(record, dict) or record.get(field) in (None, "")
            ]
            if missing:
                raise MalformedPage(
                    f"{where}: record {index} has no {', '.join(missing)} (the merge key "
                    f"{'+'.join(key)}): {str(record)[:200]}; nothing from this pull was loaded"
                )
        yield payload["data"]


def market_data_source(pages: PageReader, name: str = "market_data") -> DltSource:
    """Instruments and daily bars, merged on their keys so a rerun replaces, never duplicates."""

    @dlt.resource(name="instruments", primary_key=INSTRUMENTS_KEY, write_disposition="merge")
    def instruments() -> Iterator[list[dict]]:
        """Tradable instruments: symbol, name, exchange, currency, asset class."""
        yield from _records(pages, "instruments", INSTRUMENTS_KEY)

    @dlt.resource(
        name="daily_bars",
        primary_key=DAILY_BARS_KEY,
        write_disposition="merge",
        columns={"date": {"data_type": "date"}},
    )
    def daily_bars() -> Iterator[list[dict]]:
        """Daily OHLCV bars per instrument and trading date."""
        yield from _records(pages, "daily_bars", DAILY_BARS_KEY)

    @dlt.source(name=name)
    def source() -> list:
        return [instruments, daily_bars]

    return source()


SPEC_ONLY_DATABASE = "sqlite://"
"""Used to declare the reference-data assets at load time; never read (reflection deferred)."""


def reference_data_source(url: str, tables: Sequence[SqlTable]) -> DltSource:
    """Whole tables of a SQL database, merged on their primary keys."""

    @dlt.source(name="reference_data")
    def source() -> list:
        return [
            sql_table(
                credentials=url,
                table=table.name,
                primary_key=list(table.primary_key),
                write_disposition="merge",
                defer_table_reflect=True,
            )
            for table in tables
        ]

    return source()
