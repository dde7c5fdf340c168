"""The kill switch: one Redis key (plus optional per-queue keys) shared with alphaswarm-core.

The key's value is the reason (free text, or JSON with a `reason` field). While it is set,
sensors skip, steps refuse to start, session loops stop and terraform apply is refused.

It fails closed: a key that exists, of any Redis type and value, and any error reading it,
means engaged. `engaged_states` is that rule; every reader of the switch goes through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from alphaswarm_orch.broker.keys import queue_kill_switch_key
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.text import sanitize

REASON_FIELD = "reason"
"""The field a hash-typed switch is read for its reason (as JSON values are)."""
VALUE_READ_BYTES = 4096
"""How much of a string switch is read: enough for any reason, bounded against a huge value."""
REASON_MAX_LENGTH = 1000
"""Longest reason carried into errors, logs and the ledger (sanitised: no control chars)."""
READS_PER_KEY = 3
"""Commands `read_states` sends per key: TYPE, GETRANGE, HGET reason."""


class KillSwitchEngaged(RuntimeError):
    """Raised where work refuses to start because the kill switch is set."""

    def __init__(self, key: str, reason: str, where: str) -> None:
        self.key = key
        self.reason = reason
        self.where = where
        super().__init__(
            f"kill switch {key!r} is set ({reason}): {where} refused. "
            "Clear it with `alphaswarm-orch kill-switch off` once it is safe to resume."
        )


@dataclass(frozen=True)
class KillSwitchState:
    key: str
    reason: str
    episode: str
    """Identity of what was read (key, type, value or error): it changes when the switch is
    set to another value or type. Refusals are recorded once per episode (`guard`)."""
    unreadable: bool = False
    """Engaged because the key could not be read (Redis down, an error reply ...)."""


class KillSwitch:
    """Read and set the kill-switch keys on the shared Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> KillSwitch:
        url = settings.require_redis("the kill switch")
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, settings.kill_switch_key)

    def key_for(self, queue: str | None) -> str:
        return self.key if queue is None else queue_kill_switch_key(self.key, queue)

    def keys_for(self, queue: str | None) -> list[str]:
        """The keys that apply to `queue`: the global one first."""
        return [self.key] if queue is None else [self.key, self.key_for(queue)]

    def state(self, queue: str | None = None) -> KillSwitchState | None:
        """The engaged switch that applies to `queue` (global first), or None."""
        return next((s for s in self.states(self.keys_for(queue)) if s is not None), None)

    def states(self, keys: Sequence[str]) -> list[KillSwitchState | None]:
        """Each of `keys` read in one round trip, under the fail-closed rule."""
        states, _ = read_states(self.client.pipeline(transaction=False), keys)
        return states

    def check(self, where: str, queue: str | None = None) -> None:
        """Raise KillSwitchEngaged if a switch that applies to `queue` is set."""
        state = self.state(queue)
        if state is not None:
            raise KillSwitchEngaged(state.key, state.reason, where)

    def engage(self, reason: str, queue: str | None = None) -> None:
        if not reason.strip():
            raise ValueError("a kill switch needs a reason (--reason ...)")
        self.client.set(self.key_for(queue), reason)

    def clear(self, queue: str | None = None) -> bool:
        return bool(self.client.delete(self.key_for(queue)))


def read_states(
    pipe: Pipeline, keys: Sequence[str]
) -> tuple[list[KillSwitchState | None], list[Any] | Exception]:
    """Read `keys` on `pipe` after the commands it already holds.

    Returns the switch states (`engaged_states`) and the replies to the earlier commands (each
    reply may be an error), or the error that stopped the pipeline, in which case every switch
    is engaged as unreadable. Lets a caller check the switch with no extra round trip: only a
    TYPE per key goes with the caller's commands; the values are read, in a second round trip,
    only when a key exists (or TYPE failed).
    """
    before = len(pipe)
    for key in keys:
        pipe.type(key)
    try:
        replies = pipe.execute(raise_on_error=False)
    except Exception as exc:  # any failure to read means engaged
        return engaged_states(keys, exc), exc
    if all(kind in (b"none", "none") for kind in replies[before:]):
        return [None] * len(keys), replies[:before]
    for key in keys:  # `pipe` is empty again after execute()
        pipe.type(key)
        pipe.getrange(key, 0, VALUE_READ_BYTES - 1)
        pipe.hget(key, REASON_FIELD)
    try:
        # WRONGTYPE replies to GETRANGE/HGET are expected for keys of other types.
        states = engaged_states(keys, pipe.execute(raise_on_error=False))
    except Exception as exc:  # any failure to read means engaged
        states = engaged_states(keys, exc)
    return states, replies[:before]


def engaged_states(
    keys: Sequence[str], replies: Sequence[Any] | BaseException
) -> list[KillSwitchState | None]:
    """The fail-closed rule: for each key, its engaged state, or None if it does not exist.

    `replies` are what `read_states` asked for, or the error that stopped the read. A key that
    exists, of any type or value, is engaged; so is every key when the read failed (connection
    refused, timeout, an error reply...). The reason is the best that can be read: a string's
    value (JSON `reason` if it has one), a hash's `reason` field, else the key's type.
    """
    if isinstance(replies, BaseException):
        return [_unreadable(key, replies) for key in keys]
    if len(replies) != READS_PER_KEY * len(keys):
        error = RuntimeError(f"{len(replies)} replies for {len(keys)} keys")
        return [_unreadable(key, error) for key in keys]
    states: list[KillSwitchState | None] = []
    for index, key in enumerate(keys):
        kind, value, field = replies[READS_PER_KEY * index : READS_PER_KEY * (index + 1)]
        try:
            states.append(_state(key, kind, value, field))
        except Exception as exc:  # undecodable or unexpected: fail closed
            states.append(_unreadable(key, exc))
    return states


def _state(key: str, kind: Any, value: Any, field: Any) -> KillSwitchState | None:
    if isinstance(kind, BaseException):
        raise kind
    kind = kind.decode("ascii") if isinstance(kind, bytes) else str(kind)
    if kind == "none":
        return None
    read = {"string": value, "hash": field}.get(kind)
    if isinstance(read, BaseException):
        raise read  # e.g. the key changed type between the reads
    if kind == "string" and read:
        raw, reason = read, parse_reason(read)
    elif kind == "hash" and read:
        raw, reason = read, _text(read)
    else:
        raw = b""
        reason = f"key of type {kind} exists" + (" (empty)" if kind == "string" else "")
    raw_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    digest = hashlib.sha256(raw_bytes).hexdigest()[:16]
    return KillSwitchState(key, _bounded(reason), f"{key}|{kind}|{digest}")


def _unreadable(key: str, exc: BaseException) -> KillSwitchState:
    error = f"{type(exc).__name__}: {exc}"
    reason = _bounded(f"kill switch unreadable: {error}")
    return KillSwitchState(key, reason, f"{key}|unreadable|{error}", unreadable=True)


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def _bounded(reason: str) -> str:
    return sanitize(reason.strip() or "(no reason given)", REASON_MAX_LENGTH)


def parse_reason(raw: bytes | str) -> str:
    """The reason stored in a kill-switch key: free text, or JSON with a `reason` field."""
    text = _text(raw)
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    if isinstance(payload, dict) and REASON_FIELD in payload:
        return str(payload[REASON_FIELD])
    return text
