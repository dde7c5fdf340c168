"""Read one family's request stream from a cursor: validate, dead-letter, move on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from alphaswarm_orch.control.keys import dead_letter_stream, request_stream
from alphaswarm_orch.requests.models import SCHEMA_VERSIONS, Request, request_adapter, type_names

PAYLOAD_FIELD = "payload"
"""The stream entry field that holds the request's JSON."""

MAX_REQUEST_BYTES = 64 * 1024
"""Larger payloads are dead-lettered unparsed: a request is a command, not a data transfer."""

Check = Callable[[Request], str | None]
"""A semantic check after schema validation; returns a dead-letter reason or None."""


@dataclass(frozen=True)
class ReceivedRequest:
    stream_id: str
    request: Request


@dataclass(frozen=True)
class DeadLetter:
    stream_id: str
    reason: str
    payload: str


@dataclass(frozen=True)
class ReadBatch:
    requests: list[ReceivedRequest] = field(default_factory=list)
    cursor: str | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)


class InvalidRequest(ValueError):
    """A payload that is not a valid request of its family; the message is the reason."""


def parse_request(family: str, payload: bytes | str, max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """Parse and validate one payload, or raise InvalidRequest saying exactly what is wrong."""
    adapter = request_adapter(family)
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        raise InvalidRequest(f"payload is {len(raw)} bytes; the limit is {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"payload is not UTF-8 ({exc})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"payload is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"payload is a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        raise InvalidRequest(
            f"unsupported schema_version {version!r}: this code location accepts "
            f"{', '.join(map(str, SCHEMA_VERSIONS))}"
        )
    kind = data.get("type")
    expected = type_names(family)
    if kind not in expected:
        raise InvalidRequest(
            f"unknown type {kind!r} on the {family} stream: expected one of {', '.join(expected)}"
        )
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(err['loc'], kind) or '(request)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise InvalidRequest(f"invalid {kind} request: {problems}") from None


def read_requests(
    client: redis.Redis,
    family: str,
    cursor: str | None,
    *,
    count: int = 100,
    check: Check | None = None,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> ReadBatch:
    """Read up to `count` entries after `cursor` from `family`'s stream.

    Valid requests are returned in stream order; every other entry is dead-lettered (reason +
    original payload) and skipped. The returned cursor is the last entry read, valid or not,
    so the caller moves past bad input. Dead-lettering is idempotent: the dead-letter entry
    reuses the source entry's id, so re-reading from an old cursor does not duplicate it.
    """
    request_adapter(family)
    start = "-" if cursor is None else f"({cursor}"
    entries = client.xrange(request_stream(family), min=start, max="+", count=count)
    batch = ReadBatch(cursor=cursor)
    for raw_id, fields in entries:
        stream_id = _text(raw_id)
        batch = ReadBatch(batch.requests, stream_id, batch.dead_letters)
        values = {_text(k): v for k, v in fields.items()}
        payload = values.get(PAYLOAD_FIELD)
        try:
            if payload is None:
                raise InvalidRequest(
                    f"entry has no {PAYLOAD_FIELD!r} field (fields: {', '.join(values) or 'none'})"
                )
            request = parse_request(family, payload, max_bytes)
            reason = check(request) if check is not None else None
            if reason is not None:
                raise InvalidRequest(reason)
        except InvalidRequest as exc:
            original = _original(values, payload)
            dead_letter(client, family, stream_id, str(exc), original)
            batch.dead_letters.append(DeadLetter(stream_id, str(exc), original))
            continue
        batch.requests.append(ReceivedRequest(stream_id, request))
    return batch


def dead_letter(
    client: redis.Redis, family: str, stream_id: str, reason: str, payload: str
) -> None:
    """Append to the family's dead-letter stream under the source id (a repeat is a no-op)."""
    fields = {
        "reason": reason,
        PAYLOAD_FIELD: payload,
        "source_stream": request_stream(family),
        "source_id": stream_id,
        "dead_lettered_at": f"{time.time():.3f}",
    }
    try:
        client.xadd(dead_letter_stream(family), fields, id=stream_id)
    except redis.ResponseError as exc:
        if "equal or smaller" not in str(exc):
            raise


def _original(values: Mapping[str, Any], payload: Any) -> str:
    if payload is None:
        return json.dumps({k: _text(v) for k, v in values.items()})
    return _text(payload)


def _field_path(loc: tuple[Any, ...], kind: str) -> str:
    """`symbols.0` from pydantic's location, without the union's tag (`paper.start`)."""
    parts = loc[1:] if loc and loc[0] == kind else loc
    return ".".join(str(p) for p in parts)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def append_request(client: redis.Redis, request: Request) -> str:
    """Append a valid request to its family's stream (what alphaswarm-core does); its id."""
    payload = request.model_dump_json()
    return _text(client.xadd(request_stream(request.family), {PAYLOAD_FIELD: payload}))
