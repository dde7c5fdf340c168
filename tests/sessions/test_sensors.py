"""Request sensors against a real Postgres-backed DagsterInstance and the real Redis."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alphaswarm_orch.broker.keys import dead_letter_stream, request_stream, session_stop_key
from alphaswarm_orch.defs.hft import hft_request_sensor, hft_session_job
from alphaswarm_orch.defs.paper import paper_request_sensor, paper_session_job
from alphaswarm_orch.requests import HftStart, PaperStop, append_request
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, SESSION_ID_TAG, WORKLOAD_TAG
from tests.sessions.conftest import paper_start
from tests.support.settings import settings_resources


def evaluate(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=settings_resources()
    )
    result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor, result.skip_message


def launch(instance: dg.DagsterInstance, job: dg.JobDefinition, request: dg.RunRequest) -> None:
    """What the daemon does with a RunRequest: a run with its config and tags."""
    instance.create_run_for_job(job_def=job, run_config=request.run_config, tags=request.tags)


def runs_for(instance: dg.DagsterInstance, request_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: request_id})))


def dead_letters(client: redis.Redis, family: str = "paper") -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(dead_letter_stream(family))
    ]


def test_request_launches_one_run_across_duplicates_and_restarts(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    append_request(redis_client, paper_start("s1"))
    requests, cursor, _ = evaluate(paper_request_sensor, instance, None)
    assert [r.run_key for r in requests] == ["req-s1"]
    run = requests[0]
    assert run.tags[WORKLOAD_TAG] == "paper" and run.tags["alphaswarm/queue"] == "paper"
    assert (run.tags[ACTOR_TAG], run.tags[SESSION_ID_TAG]) == ("tester", "s1")
    assert run.run_config["ops"]["paper_session"]["config"]["symbols"] == ["BTC-USD"]
    launch(instance, paper_session_job, run)

    append_request(redis_client, paper_start("s1"))  # duplicate delivery
    append_request(redis_client, paper_start("s2"))
    append_request(redis_client, paper_start("s2"))  # duplicate inside one batch
    requests, cursor, _ = evaluate(paper_request_sensor, instance, cursor)
    assert [r.run_key for r in requests] == ["req-s2"]
    launch(instance, paper_session_job, requests[0])

    # A restarted sensor that lost its cursor re-reads everything and launches nothing.
    again, restart_cursor, _ = evaluate(paper_request_sensor, instance, None)
    assert again == [] and restart_cursor == cursor
    assert [len(runs_for(instance, f"req-s{i}")) for i in (1, 2)] == [1, 1]
    assert dead_letters(redis_client) == []


def test_malformed_and_unknown_requests_are_dead_lettered_and_the_sensor_moves_on(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    stream = request_stream("paper")
    redis_client.xadd(stream, {"payload": '{"schema_version": 1, "type": "paper.start"'})
    stop = PaperStop(
        schema_version=1,
        type="paper.stop",
        request_id="stop-1",
        actor="ops",
        session_id="ghost",
        reason="eod",
    )
    append_request(redis_client, stop)
    append_request(redis_client, paper_start("s1"))
    append_request(redis_client, paper_start("s1").model_copy(update={"request_id": "req-other"}))
    append_request(
        redis_client, stop.model_copy(update={"session_id": "s1", "request_id": "stop-2"})
    )
    last = redis_client.xadd(stream, {"payload": "x" * 70_000}).decode()

    requests, cursor, _ = evaluate(paper_request_sensor, instance, None)

    assert [r.run_key for r in requests] == ["req-s1"]
    assert cursor == last
    reasons = [d["reason"] for d in dead_letters(redis_client)]
    assert len(reasons) == 4
    assert "not valid JSON" in reasons[0]
    assert "unknown session 'ghost'" in reasons[1]
    assert "session 's1' was already started by request 'req-s1'" in reasons[2]
    assert "the limit is 65536 bytes" in reasons[3]
    assert redis_client.get(session_stop_key("s1")) == b"eod"
    redis_client.delete(session_stop_key("s1"))


def test_each_family_reads_its_own_stream(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    hft = HftStart(
        schema_version=1,
        type="hft.start",
        request_id="h1",
        actor="desk",
        session_id="h1",
        symbols=["ES"],
        max_position=10,
    )
    append_request(redis_client, hft)
    assert evaluate(paper_request_sensor, instance, None)[0] == []
    requests, _, _ = evaluate(hft_request_sensor, instance, None)
    assert [r.run_key for r in requests] == ["h1"]
    assert requests[0].tags[WORKLOAD_TAG] == "hft"
    launch(instance, hft_session_job, requests[0])
    assert runs_for(instance, "h1")[0].job_name == "hft_session_job"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
entries = st.lists(
    st.one_of(
        st.builds(lambda n: ("start", n), st.integers(0, 9)),
        st.builds(lambda n: ("stop", n), st.integers(0, 9)),
        st.binary(max_size=40).map(lambda b: ("raw", b)),
        json_values.map(lambda v: ("raw", json.dumps(v))),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=entries)
@example(entries=[("start", 0), ("stop", 0), ("stop", 0), ("stop", 1), ("start", 1)])
def test_generated_requests_never_crash_the_sensor_nor_lose_a_valid_one(
    instance: dg.DagsterInstance, redis_client: redis.Redis, entries: list[tuple[str, object]]
) -> None:
    tag = uuid.uuid4().hex[:8]  # fresh request and session ids for every example
    stream = request_stream("paper")
    start_cursor = redis_client.xrevrange(stream, count=1)
    cursor = start_cursor[0][0].decode() if start_cursor else None
    expected_runs, expected_stops, started = [], set(), set()
    valid = 0  # starts (a repeat is a duplicate delivery) and stops of already started sessions
    for kind, value in entries:
        if kind == "start":
            append_request(redis_client, paper_start(f"{tag}-{value}"))
            valid += 1
            if value not in started:
                expected_runs.append(f"req-{tag}-{value}")
            started.add(value)
        elif kind == "stop":
            sid = f"{tag}-{value}"
            append_request(
                redis_client,
                PaperStop(
                    schema_version=1,
                    type="paper.stop",
                    request_id=f"stop-{sid}",
                    actor="ops",
                    session_id=sid,
                ),
            )
            if value in started:
                expected_stops.add(sid)
                valid += 1
        else:
            redis_client.xadd(stream, {"payload": value})
    before = redis_client.xlen(dead_letter_stream("paper"))

    requests, new_cursor, _ = evaluate(paper_request_sensor, instance, cursor)

    assert [r.run_key for r in requests] == expected_runs
    assert new_cursor == redis_client.xrevrange(stream, count=1)[0][0].decode()
    stops = {
        k.decode().split(":")[2] for k in redis_client.keys(f"alphaswarm:sessions:{tag}-*:stop")
    }
    assert stops == expected_stops
    assert redis_client.xlen(dead_letter_stream("paper")) - before == len(entries) - valid
    for sid in expected_stops:
        redis_client.delete(session_stop_key(sid))


def raw_start(request_id: str, session_id: str, **fields: object) -> str:
    """A paper.start payload as alphaswarm-core could write it (no model on the way)."""
    return json.dumps(
        {
            "schema_version": 1,
            "type": "paper.start",
            "request_id": request_id,
            "actor": "tester",
            "session_id": session_id,
            "symbols": ["BTC-USD"],
            **fields,
        }
    )


def launch_all(
    instance: dg.DagsterInstance, job: dg.JobDefinition, requests: list[dg.RunRequest]
) -> None:
    """Create every requested run as the daemon does; a refusal here is a lost request."""
    for request in requests:
        launch(instance, job, request)


def letter_for(client: redis.Redis, entry_id: str, family: str = "paper") -> dict[str, str]:
    [letter] = [d for d in dead_letters(client, family) if d.get("source_id") == entry_id]
    return letter


def test_a_request_postgres_cannot_store_is_dead_lettered_and_its_session_stays_free(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    stream = request_stream("paper")
    nul = redis_client.xadd(stream, {"payload": raw_start("r-nul", "s-x", actor="ops\x00team")})
    bidi = redis_client.xadd(stream, {"payload": raw_start("r-bidi", "s-x", actor="adm\u202enim")})
    long = redis_client.xadd(stream, {"payload": raw_start("r-long", "s-x", actor="a" * 300)})
    last = redis_client.xadd(stream, {"payload": raw_start("r-ok", "s-x")}).decode()

    requests, cursor, _ = evaluate(paper_request_sensor, instance, None)
    launch_all(instance, paper_session_job, requests)

    assert cursor == last
    assert [r.run_key for r in requests] == ["r-ok"]  # the session id was not burned
    assert runs_for(instance, "r-ok")[0].tags[ACTOR_TAG] == "tester"
    for entry, request_id in ((nul, "r-nul"), (bidi, "r-bidi"), (long, "r-long")):
        assert runs_for(instance, request_id) == []
        reason = letter_for(redis_client, entry.decode())["reason"]
        assert reason.startswith("invalid paper.start request: actor: "), reason
    assert (
        "character \\x00 (control character) at position 3"
        in letter_for(redis_client, nul.decode())["reason"]
    )
    assert "\\u202e (RIGHT-TO-LEFT OVERRIDE)" in letter_for(redis_client, bidi.decode())["reason"]
    assert "at most 128 characters" in letter_for(redis_client, long.decode())["reason"]


def test_duplicate_keys_and_reused_request_ids_are_dead_lettered_naming_them(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    stream = request_stream("paper")
    duplicate = redis_client.xadd(
        stream,
        {"payload": raw_start("r-dup", "s-dup")[:-1] + ', "actor": "someone else"}'},
    ).decode()
    append_request(redis_client, paper_start("s1"))
    same = append_request(redis_client, paper_start("s1"))  # a duplicate delivery: idempotent
    reused = append_request(redis_client, paper_start("s1").model_copy(update={"session_id": "s2"}))
    last = append_request(
        redis_client, paper_start("s2").model_copy(update={"request_id": "req-s2b"})
    )

    requests, cursor, _ = evaluate(paper_request_sensor, instance, None)
    launch_all(instance, paper_session_job, requests)

    assert cursor == last
    assert [r.run_key for r in requests] == ["req-s1", "req-s2b"]
    assert runs_for(instance, "r-dup") == []
    assert "repeats the key 'actor'" in letter_for(redis_client, duplicate)["reason"]
    reason = letter_for(redis_client, reused)["reason"]
    assert reason.startswith("request id 'req-s1' was already used by entry "), reason
    assert "different content" in reason
    assert same not in {d["source_id"] for d in dead_letters(redis_client)}
    assert runs_for(instance, "req-s1")[0].tags[SESSION_ID_TAG] == "s1"


def test_a_dead_letter_is_written_even_when_its_stream_moved_past_the_request_id(
    instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    bad = redis_client.xadd(request_stream("paper"), {"payload": "{oops"}).decode()
    # Another writer (an operator's note, a tool) appended to the dead-letter stream since.
    redis_client.xadd(dead_letter_stream("paper"), {"note": "replayed by hand"})

    _, cursor, _ = evaluate(paper_request_sensor, instance, None)

    assert cursor == bad
    assert "not valid JSON" in letter_for(redis_client, bad)["reason"]
    evaluate(paper_request_sensor, instance, None)  # a re-read does not lose it either
    assert letter_for(redis_client, bad)["payload"] == "{oops"


def test_when_redis_refuses_a_dead_letter_the_cursor_waits_before_that_request(
    instance: dg.DagsterInstance, redis_client: redis.Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    stream = request_stream("paper")
    first = append_request(redis_client, paper_start("s1"))
    bad = redis_client.xadd(stream, {"payload": "{oops"}).decode()
    append_request(redis_client, paper_start("s2"))
    redis_client.set(dead_letter_stream("paper"), "not a stream")  # XADD now fails: WRONGTYPE

    requests, cursor, _ = evaluate(paper_request_sensor, instance, None)

    assert [r.run_key for r in requests] == ["req-s1"]  # what precedes it still launches
    assert cursor == first
    log = capfd.readouterr().err  # the sensor's log (Dagster's handler writes to stderr)
    assert f"dead-lettered paper request {bad}" not in log
    assert f"paper request {bad} is not resolved yet" in log and "WRONGTYPE" in log
    launch_all(instance, paper_session_job, requests)

    redis_client.delete(dead_letter_stream("paper"))
    requests, cursor, _ = evaluate(paper_request_sensor, instance, cursor)
    assert [r.run_key for r in requests] == ["req-s2"]
    assert "not valid JSON" in letter_for(redis_client, bad)["reason"]


def test_control_and_bidi_characters_never_reach_dead_letter_reasons_or_logs(
    instance: dg.DagsterInstance, redis_client: redis.Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    payload = raw_start("r-1", "s-1")[:-1] + ', "note\\u202e\\u001b[2J": 1}'  # JSON escapes
    entry = redis_client.xadd(request_stream("paper"), {"payload": payload}).decode()

    evaluate(paper_request_sensor, instance, None)

    reason = letter_for(redis_client, entry)["reason"]
    log = capfd.readouterr().err
    assert "note\\u202e\\x1b[2J: Extra inputs are not permitted" in reason, reason
    for text in (reason, log):
        assert "\u202e" not in text and "\x1b" not in text
    assert "note\\u202e\\x1b[2J" in log
