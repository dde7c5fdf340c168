"""A paginated market-data REST API on 127.0.0.1 (real HTTP, threads) for the pull tests.

Pages look like `{"data": [...], "next": "/v1/<endpoint>?page=N[&start=D]" | null}`;
`?start=YYYY-MM-DD` keeps daily bars from that date on (bars are kept sorted by date, so a
start is a binary search). One page can be corrupted on purpose (not JSON, or a record
without its key field), and the next request to a page can be answered 500 once.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE_SIZES = {"instruments": 2, "daily_bars": 15}


def instruments() -> list[dict[str, Any]]:
    return [
        {"symbol": s, "name": f"{s} Corp.", "exchange": "XNAS", "currency": "USD"}
        for s in ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG")
    ]


def daily_bars(close_bump: float = 0.0) -> list[dict[str, Any]]:
    start = date(2026, 11, 2)
    return [
        {
            "symbol": s,
            "date": (start + timedelta(days=d)).isoformat(),
            "open": 100.0 + i + d,
            "high": 101.0 + i + d,
            "low": 99.0 + i + d,
            "close": 100.5 + i + d + close_bump,
            "volume": 1_000 * (i + 1) + d,
        }
        for i, s in enumerate(("AAPL", "MSFT", "NVDA", "AMZN", "GOOG"))
        for d in range(8)
    ]


class MarketApi:
    def __init__(self) -> None:
        self.data: dict[str, list[dict[str, Any]]] = {
            "instruments": instruments(),
            "daily_bars": daily_bars(),
        }
        self.corrupt: tuple[str, int, str] | None = None
        """(endpoint, page number, "json" | "missing_key")"""
        self.fail_once: set[tuple[str, int]] = set()
        """(endpoint, page number) answered 500 the next time it is asked for."""
        self.page_sizes = dict(PAGE_SIZES)
        self.requests: list[str] = []
        self.rows_served: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def selected(self, endpoint: str, start: str | None) -> list[dict[str, Any]]:
        rows = self.data[endpoint]
        if endpoint != "daily_bars" or not start:
            return rows
        if getattr(self, "_sorted_for", None) is not rows:  # sort once per data set
            rows.sort(key=lambda r: r["date"])
            self._dates = [r["date"] for r in rows]
            self._sorted_for = rows
        return rows[bisect.bisect_left(self._dates, start) :]

    def page(self, endpoint: str, number: int, start: str | None = None) -> bytes:
        size = self.page_sizes[endpoint]
        rows = self.selected(endpoint, start)
        records = [dict(r) for r in rows[(number - 1) * size : number * size]]
        self.rows_served[endpoint] = self.rows_served.get(endpoint, 0) + len(records)
        following = None
        if number * size < len(rows):
            following = f"/v1/{endpoint}?page={number + 1}" + (f"&start={start}" if start else "")
        if self.corrupt and self.corrupt[:2] == (endpoint, number):
            if self.corrupt[2] == "json":
                return b'{"data": [{"symbol": "AAPL", '
            records[1]["symbol"] = None
        return json.dumps({"data": records, "next": following}).encode()


def _handler(api: MarketApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            endpoint = parts.path.removeprefix("/v1/")
            query = parse_qs(parts.query)
            number = int(query.get("page", ["1"])[0])
            start = query.get("start", [None])[0]
            if endpoint not in api.data:
                self.send_error(404)
                return
            api.requests.append(self.path)
            if (endpoint, number) in api.fail_once:
                api.fail_once.discard((endpoint, number))
                self.send_error(500)
                return
            body = api.page(endpoint, number, start)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_market_api() -> Iterator[MarketApi]:
    api = MarketApi()
    api.thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        api.thread.join(timeout=10)
