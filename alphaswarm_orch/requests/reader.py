"""Read one family's request stream from a cursor: validate, dead-letter, move on.

The cursor a batch returns passes only entries that are resolved: returned as valid requests
(recorded under their request id) or dead-lettered. An entry whose dead letter cannot be
written, or whose check cannot reach Redis, stops the batch before it, so the next read
retries it; nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from alphaswarm_orch.broker.keys import dead_letter_stream, request_ids, request_stream
from alphaswarm_orch.requests.models import SCHEMA_VERSIONS, Request, request_adapter, type_names
from alphaswarm_orch.text import sanitize

PAYLOAD_FIELD = "payload"
"""The stream entry field that holds the request's JSON."""

MAX_REQUEST_BYTES = 64 * 1024
"""Larger payloads are dead-lettered unparsed: a request is a command, not a data transfer."""

DEAD_LETTER_MAXLEN = 10_000
"""Dead-letter streams are trimmed to about this many entries (`XADD MAXLEN ~`: Redis trims
whole macro nodes, so a stream may hold somewhat more, never fewer)."""

DEAD_LETTER_PAYLOAD_BYTES = 4 * 1024
"""A dead letter keeps at most this much of the payload (and its full size in bytes)."""

REASON_MAX_LENGTH = 1_000
"""Longest dead-letter reason; reasons are sanitised (`text.sanitize`) before stored or logged."""

REPEAT_SCAN_ENTRIES = 1_000
"""How far past a source id `dead_letter` looks for an earlier letter of the same entry."""

REDACTED = "[redacted]"
"""What a terraform request's variable values read as in a dead letter."""

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
    """Sanitised and bounded, safe to log."""
    payload: str
    """What the dead letter keeps: a bounded prefix, terraform variable values redacted."""


@dataclass(frozen=True)
class Unresolved:
    """The entry a batch stopped before (Redis refused its dead letter or its check)."""

    stream_id: str
    error: str


@dataclass
class ReadBatch:
    requests: list[ReceivedRequest] = field(default_factory=list)
    cursor: str | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    unresolved: Unresolved | None = None


class InvalidRequest(ValueError):
    """A payload that is not a valid request of its family; the message is the reason."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


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
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise InvalidRequest(
            f"payload repeats the key '{sanitize(exc.key, 64)}' in one object: each key may "
            "appear once (which one would count is ambiguous)"
        ) from None
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


class RequestIds:
    """Which content each request id of a family was first accepted with (a Redis hash).

    A request id names one request: the same content again is a duplicate delivery (the
    caller dedups it by run_key), different content under a used id is refused.
    """

    def __init__(self, client: redis.Redis, family: str) -> None:
        self.client = client
        self.key = request_ids(family)

    def conflict(self, request: Request) -> str | None:
        stored = self.client.hget(self.key, request.request_id)
        if stored is None:
            return None
        digest, _, entry = _text(stored).partition(" ")
        if digest == _digest(request):
            return None
        return (
            f"request id {request.request_id!r} was already used by entry {entry} with "
            "different content; request ids are single-use: send this request with a new id"
        )

    def record(self, request: Request, stream_id: str) -> None:
        self.client.hsetnx(self.key, request.request_id, f"{_digest(request)} {stream_id}")


def _digest(request: Request) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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

    Valid requests are returned in stream order; every other entry (malformed, a request id
    reused with different content, or refused by `check`) is dead-lettered with its reason
    and skipped. The returned cursor is the last entry resolved either way, so the caller
    moves past bad input, but never past an entry Redis would not let it resolve
    (`batch.unresolved`: the next read starts there). Dead-lettering is idempotent.
    """
    request_adapter(family)
    start = "-" if cursor is None else f"({cursor}"
    entries = client.xrange(request_stream(family), min=start, max="+", count=count)
    ids = RequestIds(client, family)
    batch = ReadBatch(cursor=cursor)
    for raw_id, fields in entries:
        stream_id = _text(raw_id)
        values = {_text(k): v for k, v in fields.items()}
        payload = values.get(PAYLOAD_FIELD)
        try:
            try:
                if payload is None:
                    raise InvalidRequest(
                        f"entry has no {PAYLOAD_FIELD!r} field "
                        f"(fields: {', '.join(values) or 'none'})"
                    )
                request = parse_request(family, payload, max_bytes)
                reason = ids.conflict(request)
                if reason is None and check is not None:
                    reason = check(request)
                if reason is not None:
                    raise InvalidRequest(reason)
                ids.record(request, stream_id)
            except InvalidRequest as exc:
                letter = dead_letter(client, family, stream_id, str(exc), values)
                batch.dead_letters.append(letter)
                batch.cursor = stream_id
                continue
        except redis.RedisError as exc:
            batch.unresolved = Unresolved(
                stream_id, sanitize(f"{type(exc).__name__}: {exc}", REASON_MAX_LENGTH)
            )
            break
        batch.requests.append(ReceivedRequest(stream_id, request))
        batch.cursor = stream_id
    return batch


def dead_letter(
    client: redis.Redis,
    family: str,
    stream_id: str,
    reason: str,
    fields: Mapping[str, Any],
) -> DeadLetter:
    """Append to the family's dead-letter stream under the source id; raises if Redis refuses.

    A repeat (the same source entry read again) is a no-op. If the dead-letter stream already
    holds a later id (another writer appended to it), the letter gets a new id and keeps
    `source_id`; a re-read finds it among the next `REPEAT_SCAN_ENTRIES` letters. A dead
    letter is never lost; it may repeat only if that many letters were written in between.
    """
    letter = DeadLetter(
        stream_id, sanitize(reason, REASON_MAX_LENGTH), _kept_payload(family, fields)
    )
    raw = fields.get(PAYLOAD_FIELD)
    entry = {
        "reason": letter.reason,
        PAYLOAD_FIELD: letter.payload,
        "payload_bytes": str(len(_bytes(raw)) if raw is not None else 0),
        "source_stream": request_stream(family),
        "source_id": stream_id,
        "dead_lettered_at": f"{time.time():.3f}",
    }
    stream = dead_letter_stream(family)
    trim = {"maxlen": DEAD_LETTER_MAXLEN, "approximate": True}
    try:
        client.xadd(stream, entry, id=stream_id, **trim)
    except redis.ResponseError as exc:
        if "equal or smaller" not in str(exc):
            raise
        # Already dead-lettered (a re-read), under its own id or a later one? Letters are
        # appended in time order, so it can only be at or after the source id.
        if not (
            _has_letter(client.xrange(stream, min=stream_id, max=stream_id), stream_id)
            or _has_letter(
                client.xrange(stream, min=stream_id, max="+", count=REPEAT_SCAN_ENTRIES),
                stream_id,
            )
        ):
            client.xadd(stream, entry, **trim)
    return letter


def _has_letter(entries: list[Any], source_id: str) -> bool:
    return any(_text(fields.get(b"source_id", b"")) == source_id for _id, fields in entries)


def _kept_payload(family: str, fields: Mapping[str, Any]) -> str:
    """What a dead letter keeps of an entry: a bounded prefix; for terraform, variable values
    redacted, and nothing of a payload whose variables cannot be found (it is not parsed)."""
    raw = fields.get(PAYLOAD_FIELD)
    if raw is None:
        if family == "terraform":
            return f"(no payload; fields {', '.join(fields) or 'none'}, values withheld)"
        return _prefix(json.dumps({k: _text(v) for k, v in fields.items()}))
    text = _text(raw)
    if family == "terraform":
        text = _redact_variables(_bytes(raw))
    return _prefix(text)


def _redact_variables(raw: bytes) -> str:
    withheld = (
        f"(payload withheld: {len(raw)} bytes that do not parse as a JSON object, so its "
        "terraform variables cannot be redacted)"
    )
    if len(raw) > MAX_REQUEST_BYTES:
        return withheld
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_Pairs
        )
        if not isinstance(data, _Pairs):
            return withheld
        redacted = _Pairs(
            (key, _redacted_value(value) if key == "variables" else value) for key, value in data
        )
        return _dump(redacted)
    except (ValueError, RecursionError):
        return withheld


class _Pairs(list):
    """A JSON object as its (key, value) pairs, duplicates kept, so every `variables` is seen."""


def _redacted_value(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return _Pairs((key, REDACTED) for key, _ in value)
    return REDACTED


def _dump(value: Any) -> str:
    if isinstance(value, _Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


def _prefix(text: str) -> str:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= DEAD_LETTER_PAYLOAD_BYTES:
        return text
    kept = raw[:DEAD_LETTER_PAYLOAD_BYTES].decode("utf-8", "ignore")
    return f"{kept}...[cut: {len(raw)} bytes in all]"


def _field_path(loc: tuple[Any, ...], kind: str) -> str:
    """`symbols.0` from pydantic's location, without the union's tag (`paper.start`)."""
    parts = loc[1:] if loc and loc[0] == kind else loc
    return sanitize(".".join(str(p) for p in parts), 200)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def append_request(client: redis.Redis, request: Request) -> str:
    """Append a valid request to its family's stream (what alphaswarm-core does); its id."""
    payload = request.model_dump_json()
    return _text(client.xadd(request_stream(request.family), {PAYLOAD_FIELD: payload}))
