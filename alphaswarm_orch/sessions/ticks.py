"""The tick (or event) a session consumes from `ticks:<session>`, and how it is written."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from alphaswarm_orch.broker.keys import tick_stream


class InvalidTick(ValueError):
    """A tick entry the handler cannot use; the message says why."""


@dataclass(frozen=True)
class OrderIntent:
    """Immediate-or-cancel: fills against this tick or not at all."""

    side: Literal["buy", "sell"]
    qty: float
    limit: float | None = None


@dataclass(frozen=True)
class Tick:
    tick_id: str
    symbol: str
    price: float
    orders: tuple[OrderIntent, ...] = field(default_factory=tuple)
    sent_at: float | None = None
    """Producer's `time.time()` at append (optional; the benchmark uses it)."""


def parse_tick(entry_id: str, fields: Mapping[bytes | str, bytes | str]) -> Tick:
    """A tick from a stream entry: `symbol`, `price`, optional `tick_id`, `orders`, `sent_at`.

    `tick_id` defaults to the entry id; a producer that retries an append should set it so
    the duplicate is recognised.
    """
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        price = float(values["price"])
        symbol = values["symbol"]
        orders = tuple(_order(o) for o in json.loads(values.get("orders", "[]")))
        sent_at = float(values["sent_at"]) if "sent_at" in values else None
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidTick(f"tick {entry_id} is malformed ({exc!r}): {values}") from None
    if not math.isfinite(price) or price <= 0:
        raise InvalidTick(f"tick {entry_id} has price {values['price']!r}; expected > 0")
    return Tick(values.get("tick_id", entry_id), symbol, price, orders, sent_at)


def append_tick(client: redis.Redis, session_id: str, tick: Tick) -> str:
    """Append `tick` to the session's stream (producer side; tests, benchmark, CLI)."""
    fields: dict[str, str] = {
        "tick_id": tick.tick_id,
        "symbol": tick.symbol,
        "price": repr(tick.price),
    }
    if tick.orders:
        fields["orders"] = json.dumps(
            [{"side": o.side, "qty": o.qty, "limit": o.limit} for o in tick.orders]
        )
    if tick.sent_at is not None:
        fields["sent_at"] = repr(tick.sent_at)
    return _text(client.xadd(tick_stream(session_id), fields))


def _order(raw: Any) -> OrderIntent:
    if not isinstance(raw, dict) or raw.get("side") not in ("buy", "sell"):
        raise ValueError(f"order {raw!r} needs side buy|sell")
    qty = float(raw["qty"])
    limit = raw.get("limit")
    if not math.isfinite(qty) or qty <= 0:
        raise ValueError(f"order qty {raw['qty']!r} must be > 0")
    return OrderIntent(raw["side"], qty, None if limit is None else float(limit))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
