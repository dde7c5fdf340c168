"""A paginated market-data REST API on 127.0.0.1 (real HTTP, threads) for the pull tests.

Pages look like `{"data": [...], "next": "/v1/<endpoint>?page=N" | null}`; one page can be
corrupted on purpose (not JSON, or a record without its key field).
"""

from __future__ import annotations

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
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def pages(self, endpoint: str) -> int:
        size = PAGE_SIZES[endpoint]
        return -(-len(self.data[endpoint]) // size)

    def page(self, endpoint: str, number: int) -> bytes:
        size = PAGE_SIZES[endpoint]
        records = [dict(r) for r in self.data[endpoint][(number - 1) * size : number * size]]
        following = f"/v1/{endpoint}?page={number + 1}" if number < self.pages(endpoint) else None
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
            number = int(parse_qs(parts.query).get("page", ["1"])[0])
            if endpoint not in api.data:
                self.send_error(404)
                return
            body = api.page(endpoint, number)
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
