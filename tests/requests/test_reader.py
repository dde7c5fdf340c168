"""The stream reader on the real Redis: valid requests out, bad ones dead-lettered, cursor on."""

from __future__ import annotations

import contextlib
import json

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaswarm_orch.broker.keys import dead_letter_stream, request_ids, request_stream
from alphaswarm_orch.requests import (
    DEAD_LETTER_MAXLEN,
    DEAD_LETTER_PAYLOAD_BYTES,
    PaperStart,
    append_request,
    parse_request,
    read_requests,
)


def start(request_id: str, session_id: str = "s1") -> PaperStart:
    return PaperStart(
        schema_version=1,
        type="paper.start",
        request_id=request_id,
        actor="alice",
        session_id=session_id,
        symbols=["BTC-USD"],
    )


def dead_letters(client: redis.Redis, family: str = "paper") -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} | {"id": entry_id.decode()}
        for entry_id, fields in client.xrange(dead_letter_stream(family))
    ]


def test_valid_requests_returned_bad_ones_dead_lettered(redis_client: redis.Redis) -> None:
    first = append_request(redis_client, start("r1"))
    bad_json = redis_client.xadd(request_stream("paper"), {"payload": "{oops"}).decode()
    no_payload = redis_client.xadd(request_stream("paper"), {"body": "x"}).decode()
    second = append_request(redis_client, start("r2", "s2"))

    batch = read_requests(redis_client, "paper", None)

    assert [(r.stream_id, r.request.request_id) for r in batch.requests] == [
        (first, "r1"),
        (second, "r2"),
    ]
    assert batch.cursor == second
    letters = dead_letters(redis_client)
    assert [(d["id"], d["source_id"]) for d in letters] == [
        (bad_json, bad_json),
        (no_payload, no_payload),
    ]
    assert "not valid JSON" in letters[0]["reason"] and letters[0]["payload"] == "{oops"
    assert "no 'payload' field (fields: body)" in letters[1]["reason"]
    assert json.loads(letters[1]["payload"]) == {"body": "x"}
    assert letters[0]["source_stream"] == request_stream("paper")

    # Reading again from the start (a sensor restart without its cursor) duplicates nothing.
    again = read_requests(redis_client, "paper", None)
    assert [r.request.request_id for r in again.requests] == ["r1", "r2"]
    assert len(dead_letters(redis_client)) == 2
    assert read_requests(redis_client, "paper", batch.cursor).requests == []
    assert read_requests(redis_client, "paper", batch.cursor).cursor == batch.cursor


def test_cursor_pages_through_the_stream(redis_client: redis.Redis) -> None:
    ids = [append_request(redis_client, start(f"r{i}", f"s{i}")) for i in range(5)]
    cursor, seen = None, []
    for _ in range(10):
        batch = read_requests(redis_client, "paper", cursor, count=2)
        if not batch.requests:
            break
        seen += [r.stream_id for r in batch.requests]
        cursor = batch.cursor
    assert seen == ids and cursor == ids[-1]


def test_check_hook_dead_letters_with_its_reason(redis_client: redis.Redis) -> None:
    append_request(redis_client, start("r1", "known"))
    append_request(redis_client, start("r2", "ghost"))

    batch = read_requests(
        redis_client,
        "paper",
        None,
        check=lambda r: None if r.session_id == "known" else f"unknown session {r.session_id!r}",
    )

    assert [r.request.request_id for r in batch.requests] == ["r1"]
    assert [d["reason"] for d in dead_letters(redis_client)] == ["unknown session 'ghost'"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
valid_starts = st.builds(
    lambda n, cash, symbols: start(f"req-{n}", f"s{n}").model_copy(
        update={"starting_cash": cash, "symbols": symbols}
    ),
    st.integers(0, 10**6),
    st.floats(min_value=0.01, max_value=1e9),
    st.lists(st.from_regex(r"[A-Z]{1,6}", fullmatch=True), min_size=1, max_size=3),
)
mutated = st.builds(
    lambda base, key, value: json.dumps({**base.model_dump(), key: value}),
    valid_starts,
    st.sampled_from(["schema_version", "type", "request_id", "symbols", "starting_cash", "x"]),
    json_values,
)
junk = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(json.dumps),
    mutated,
)
payloads = st.lists(
    st.one_of(valid_starts.map(lambda r: r.model_dump_json()), junk), min_size=1, max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=payloads, page=st.integers(1, 5))
def test_generated_payloads_never_crash_nor_lose_a_valid_request(
    redis_client: redis.Redis, payloads: list[str | bytes], page: int
) -> None:
    redis_client.delete(request_stream("paper"), dead_letter_stream("paper"), request_ids("paper"))
    ids = [redis_client.xadd(request_stream("paper"), {"payload": p}).decode() for p in payloads]
    expected_valid: dict[str, str] = {}
    first_content: dict[str, object] = {}  # a request id reused for other content is refused
    for entry_id, payload in zip(ids, payloads, strict=True):
        with contextlib.suppress(ValueError):
            request = parse_request("paper", payload)
            if first_content.setdefault(request.request_id, request) == request:
                expected_valid[entry_id] = request.request_id

    cursor, got = None, {}
    for _ in range(len(payloads) + 1):
        batch = read_requests(redis_client, "paper", cursor, count=page)
        got |= {r.stream_id: r.request.request_id for r in batch.requests}
        if batch.cursor == cursor:
            break
        cursor = batch.cursor

    assert got == expected_valid
    assert cursor == ids[-1]
    letters = {d["source_id"]: d for d in dead_letters(redis_client)}
    assert set(letters) == set(ids) - set(expected_valid)
    assert all(d["reason"] for d in letters.values())


def test_dead_letters_keep_a_bounded_payload_prefix_and_the_stream_is_trimmed(
    redis_client: redis.Redis,
) -> None:
    dead = dead_letter_stream("paper")
    pipe = redis_client.pipeline(transaction=False)
    for i in range(DEAD_LETTER_MAXLEN + 2_000):
        pipe.xadd(dead, {"reason": "old", "source_id": f"0-{i + 1}"}, id=f"0-{i + 1}")
    pipe.execute()
    huge = redis_client.xadd(request_stream("paper"), {"payload": "é" * 600_000}).decode()

    batch = read_requests(redis_client, "paper", None)

    assert batch.cursor == huge
    [letter] = [d for d in dead_letters(redis_client) if d["source_id"] == huge]
    assert "payload is 1200000 bytes; the limit is 65536 bytes" in letter["reason"]
    assert letter["payload_bytes"] == "1200000"
    kept, marker = letter["payload"].split("...[cut: ")
    assert len(kept.encode()) <= DEAD_LETTER_PAYLOAD_BYTES and set(kept) == {"é"}
    assert marker == "1200000 bytes in all]"
    # MAXLEN ~: Redis trims whole nodes of up to 100 entries, so about the limit is kept.
    assert DEAD_LETTER_MAXLEN <= redis_client.xlen(dead) <= DEAD_LETTER_MAXLEN + 100
