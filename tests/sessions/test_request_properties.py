"""Property: every request ends as a run carrying its tags or a dead letter with a reason.

Arbitrary payloads (valid requests, random JSON and bytes, hostile strings in every field,
duplicate keys, reused request ids) go through the real stream, the real sensor evaluation and
the run creation the daemon does, on real Redis and Postgres. The cursor may only pass an entry
that is resolved: a run Dagster created with the request's tags and config, a stop applied,
or a dead letter with a reason.
"""

from __future__ import annotations

import functools
import json
import uuid

import dagster as dg
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alphaswarm_orch.broker.keys import dead_letter_stream, request_stream, session_stop_key
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.defs.paper import paper_request_sensor
from alphaswarm_orch.defs.terraform.sensors import terraform_request_sensor, terraform_run_request
from alphaswarm_orch.requests import (
    DEAD_LETTER_PAYLOAD_BYTES,
    InvalidRequest,
    SessionStart,
    SessionStop,
    TerraformRequest,
    parse_request,
)
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, SESSION_ID_TAG
from alphaswarm_orch.text import TAG_MAX_LENGTH, unsafe_reason
from tests.support.runs import REPO
from tests.support.settings import settings_resources

HOSTILE = [
    "ops\x00team",
    "adm\u202enim",
    "\u2066x\u2069",
    "tab\there",
    "line\nbreak",
    "\x1b[2J",
    "\ud800lone",
    "zero\u200bwidth",
    "a" * 129,
    "a" * 300,
    "x" * 70_000,  # the payload is then over the 64 KiB limit
    "",
    "Zoë ☃",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=16))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)


@functools.cache
def definitions() -> dg.Definitions:
    """The code location as the daemon loads it (jobs with their resources bound)."""
    return build_definitions(Settings.from_env())


def evaluate(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None]:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=definitions(),
        resources=settings_resources(),
    )
    result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


def launch(instance: dg.DagsterInstance, job_name: str, request: dg.RunRequest) -> None:
    """What the daemon does with a RunRequest; if this raises, the request was lost."""
    job = definitions().resolve_job_def(job_name)
    tags = {**request.tags, "dagster/run_key": request.run_key or ""}
    instance.create_run_for_job(job_def=job, run_config=request.run_config, tags=tags)


def dead_letters(client: redis.Redis, family: str) -> dict[str, dict[str, str]]:
    letters: dict[str, dict[str, str]] = {}
    for _id, fields in client.xrange(dead_letter_stream(family)):
        letter = {k.decode(): v.decode() for k, v in fields.items()}
        assert letter["source_id"] not in letters, "a dead letter repeated"
        letters[letter["source_id"]] = letter
    return letters


def stream_entries(client: redis.Redis, family: str, after: str | None) -> list[tuple[str, bytes]]:
    start = "-" if after is None else f"({after}"
    return [
        (entry_id.decode(), fields.get(b"payload", b""))
        for entry_id, fields in client.xrange(request_stream(family), min=start, max="+")
    ]


def last_id(client: redis.Redis, family: str) -> str | None:
    last = client.xrevrange(request_stream(family), count=1)
    return last[0][0].decode() if last else None


def the_run(instance: dg.DagsterInstance, request_id: str) -> dg.DagsterRun:
    runs = list(instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: request_id})))
    assert len(runs) == 1, f"request {request_id}: {len(runs)} runs"
    return runs[0]


def assert_tags_storable(run: dg.DagsterRun) -> None:
    for name, value in run.tags.items():
        if name.startswith("alphaswarm/"):
            assert unsafe_reason(value) is None and len(value) <= TAG_MAX_LENGTH, (name, value)


def assert_resolved(
    client: redis.Redis,
    instance: dg.DagsterInstance,
    family: str,
    entries: list[tuple[str, bytes]],
    check_run: object,
) -> None:
    """Every entry has a dead letter with a reason, or is a valid request whose run (or stop)
    carries exactly its content; a request id never stands for two contents."""
    letters = dead_letters(client, family)
    content: dict[str, object] = {}
    for entry_id, payload in entries:
        if entry_id in letters:
            letter = letters[entry_id]
            assert letter["reason"].strip() and unsafe_reason(letter["reason"]) is None, letter
            assert len(letter["payload"].encode()) <= DEAD_LETTER_PAYLOAD_BYTES + 64, entry_id
            continue
        try:
            request = parse_request(family, payload)
        except InvalidRequest as exc:
            raise AssertionError(f"{entry_id} is invalid ({exc}) but not dead-lettered") from exc
        assert content.setdefault(request.request_id, request) == request, entry_id
        check_run(request)


small = st.integers(0, 4)
paper_specs = st.one_of(
    st.tuples(
        st.just("start"),
        small,
        st.one_of(st.just("tester"), hostile_text),
        st.sampled_from([1.0, 2.0]),
    ),
    st.tuples(st.just("stop"), small, st.one_of(st.just("eod"), hostile_text)),
    st.tuples(st.just("duplicate_key"), small, st.sampled_from(["actor", "session_id", "symbols"])),
    st.tuples(st.just("raw"), st.binary(max_size=40) | st.text(max_size=40)),
    st.tuples(st.just("raw"), json_values.map(json.dumps)),
)


def paper_payload(tag: str, spec: tuple) -> str | bytes:
    """Request ids `<tag>-r<n>` are shared by starts with the same n (different cash or actor
    is a reused id); session ids `<tag>-s<n % 3>` are shared by several starts and stops."""
    kind, *args = spec
    if kind == "raw":
        return args[0]
    n = args[0]
    if kind == "stop":
        return json.dumps(
            {
                "schema_version": 1,
                "type": "paper.stop",
                "request_id": f"{tag}-stop{n}",
                "actor": "ops",
                "session_id": f"{tag}-s{n % 3}",
                "reason": args[1],
            }
        )
    actor, cash = (args[1], args[2]) if kind == "start" else ("ops", 1.0)
    payload = json.dumps(
        {
            "schema_version": 1,
            "type": "paper.start",
            "request_id": f"{tag}-r{n}",
            "actor": actor,
            "session_id": f"{tag}-s{n % 3}",
            "symbols": ["BTC-USD"],
            "starting_cash": cash,
        }
    )
    if kind == "duplicate_key":
        payload = payload[:-1] + f", {json.dumps(args[1])}: {json.dumps('again')}}}"
    return payload


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(paper_specs, min_size=1, max_size=10))
@example(specs=[("start", 0, "ops\x00team", 1.0), ("start", 3, "tester", 1.0)])
def test_every_paper_request_becomes_a_run_with_its_tags_or_a_dead_letter(
    instance: dg.DagsterInstance, redis_client: redis.Redis, specs: list[tuple]
) -> None:
    tag = uuid.uuid4().hex[:8]  # fresh request and session ids for every example
    before = last_id(redis_client, "paper")
    for spec in specs:
        redis_client.xadd(request_stream("paper"), {"payload": paper_payload(tag, spec)})

    requests, cursor = evaluate(paper_request_sensor, instance, before)
    for request in requests:
        launch(instance, "paper_session_job", request)

    entries = stream_entries(redis_client, "paper", before)
    assert cursor == entries[-1][0], "the cursor must pass exactly the entries it resolved"

    def check_run(request: object) -> None:
        if isinstance(request, SessionStop):
            assert redis_client.exists(session_stop_key(request.session_id))
            return
        assert isinstance(request, SessionStart)
        run = the_run(instance, request.request_id)
        assert_tags_storable(run)
        assert (run.tags[ACTOR_TAG], run.tags[SESSION_ID_TAG]) == (
            request.actor,
            request.session_id,
        )
        config = run.run_config["ops"]["paper_session"]["config"]
        assert config == request.model_dump(exclude={"schema_version", "type"})

    assert_resolved(redis_client, instance, "paper", entries, check_run)

    # A sensor that lost its cursor re-reads everything: no second run, no second letter.
    again, _ = evaluate(paper_request_sensor, instance, before)
    assert again == []
    dead_letters(redis_client, "paper")
    for session in range(3):
        redis_client.delete(session_stop_key(f"{tag}-s{session}"))


variable_names = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), hostile_text)
terraform_specs = st.one_of(
    st.tuples(
        st.just("action"),
        small,
        st.sampled_from(["plan", "destroy", "apply"]),
        st.sampled_from(["basic", "prod"]),
        st.dictionaries(variable_names, json_values, max_size=3),
        st.none() | st.integers(10, 200),
    ),
    st.tuples(st.just("raw"), st.binary(max_size=40) | st.text(max_size=40)),
)


def terraform_payload(tag: str, spec: tuple) -> str | bytes:
    """Every action carries the secret `<tag>-secret` in its variables; `cut` truncates the
    JSON (unparseable, so its variables cannot be found to redact)."""
    kind, *args = spec
    if kind == "raw":
        return args[0]
    n, action, workspace, variables, cut = args
    payload = json.dumps(
        {
            "schema_version": 1,
            "type": "terraform.action",
            "request_id": f"{tag}-r{n}",
            "actor": "ops-bot",
            "workspace": workspace,
            "action": action,
            "variables": {**variables, "token": f"{tag}-secret"},
            **({"plan_id": f"{tag}-plan"} if action == "apply" else {}),
        }
    )
    return payload if cut is None else payload[:cut]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(terraform_specs, min_size=1, max_size=8))
@example(specs=[("action", 0, "plan", "basic", {"name": None}, None)])
@example(specs=[("action", 0, "plan", "prod", {}, None), ("action", 1, "plan", "basic", {}, 90)])
def test_every_terraform_request_becomes_a_run_or_a_dead_letter_without_its_variables(
    instance: dg.DagsterInstance,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    specs: list[tuple],
) -> None:
    monkeypatch.setenv("ALPHASWARM_TERRAFORM_WORKSPACES", "basic")
    monkeypatch.setenv(
        "ALPHASWARM_TERRAFORM_ROOT", str(REPO / "tests" / "terraform" / "workspaces")
    )
    tag = uuid.uuid4().hex[:8]
    before = last_id(redis_client, "terraform")
    for spec in specs:
        redis_client.xadd(request_stream("terraform"), {"payload": terraform_payload(tag, spec)})

    requests, cursor = evaluate(terraform_request_sensor, instance, before)
    for request in requests:
        launch(instance, request.job_name, request)

    entries = stream_entries(redis_client, "terraform", before)
    assert cursor == entries[-1][0], "the cursor must pass exactly the entries it resolved"

    def check_run(request: object) -> None:
        assert isinstance(request, TerraformRequest)
        run = the_run(instance, request.request_id)
        assert_tags_storable(run)
        assert run.tags[ACTOR_TAG] == request.actor
        expected = terraform_run_request(request)
        assert (run.job_name, run.run_config) == (expected.job_name, expected.run_config)

    assert_resolved(redis_client, instance, "terraform", entries, check_run)
    for letter in dead_letters(redis_client, "terraform").values():
        assert f"{tag}-secret" not in letter["payload"]
