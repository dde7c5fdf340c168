"""Request schemas: valid requests parse, every kind of bad input names what is wrong."""

from __future__ import annotations

import json

import pytest

from alphaswarm_orch.requests import (
    HftStart,
    InvalidRequest,
    PaperStart,
    PaperStop,
    TerraformRequest,
    parse_request,
)
from alphaswarm_orch.tags import ACTOR_TAG, workload_tags
from alphaswarm_orch.text import TAG_MAX_LENGTH


def paper_start(**overrides: object) -> dict[str, object]:
    return {
        "schema_version": 1,
        "type": "paper.start",
        "request_id": "req-1",
        "actor": "alice",
        "session_id": "s1",
        "symbols": ["BTC-USD"],
        **overrides,
    }


def test_valid_requests_of_each_family() -> None:
    start = parse_request("paper", json.dumps(paper_start(starting_cash=5000)))
    assert isinstance(start, PaperStart) and start.starting_cash == 5000
    stop = parse_request(
        "paper",
        json.dumps(
            {
                "schema_version": 1,
                "type": "paper.stop",
                "request_id": "r2",
                "actor": "a",
                "session_id": "s1",
            }
        ),
    )
    assert isinstance(stop, PaperStop) and stop.reason == "stop requested"
    hft = parse_request("hft", json.dumps({**paper_start(), "type": "hft.start"}))
    assert isinstance(hft, HftStart) and hft.family == "hft"
    apply = parse_request(
        "terraform",
        json.dumps(
            {
                "schema_version": 1,
                "type": "terraform.action",
                "request_id": "t1",
                "actor": "ci",
                "workspace": "paper-infra",
                "action": "apply",
                "plan_id": "plan-7",
                "variables": {"replicas": 2},
            }
        ),
    )
    assert isinstance(apply, TerraformRequest) and apply.plan_id == "plan-7"


@pytest.mark.parametrize(
    ("family", "payload", "reason"),
    [
        ("paper", b"\xff\xfe", "not UTF-8"),
        ("paper", "{not json", "not valid JSON"),
        ("paper", '{"schema_version": NaN}', "not valid JSON"),
        ("paper", "[1, 2]", "JSON list, not an object"),
        ("paper", json.dumps(paper_start(schema_version=2)), "unsupported schema_version 2"),
        ("paper", json.dumps(paper_start(schema_version=True)), "unsupported schema_version"),
        ("paper", json.dumps(paper_start(type="paper.pause")), "unknown type 'paper.pause'"),
        ("hft", json.dumps(paper_start()), "unknown type 'paper.start' on the hft stream"),
        ("paper", json.dumps(paper_start(symbols=[])), "symbols: List should have at least 1"),
        ("paper", json.dumps(paper_start(session_id="../x")), "session_id: String should match"),
        ("paper", json.dumps(paper_start(starting_cash=-1)), "starting_cash: Input should be"),
        ("paper", json.dumps(paper_start(colour="red")), "colour: Extra inputs"),
        (
            "paper",
            json.dumps({k: v for k, v in paper_start().items() if k != "actor"}),
            "actor: Field required",
        ),
        ("paper", json.dumps(paper_start(actor="x" * 70_000)), "the limit is 65536 bytes"),
        (
            "terraform",
            json.dumps(
                {
                    "schema_version": 1,
                    "type": "terraform.action",
                    "request_id": "t",
                    "actor": "a",
                    "workspace": "w",
                    "action": "apply",
                }
            ),
            "action 'apply' needs plan_id",
        ),
        (
            "terraform",
            json.dumps(
                {
                    "schema_version": 1,
                    "type": "terraform.action",
                    "request_id": "t",
                    "actor": "a",
                    "workspace": "w",
                    "action": "destroy",
                    "plan_id": "p",
                }
            ),
            "plan_id is only for action 'apply'",
        ),
        (
            "terraform",
            json.dumps(
                {
                    "schema_version": 1,
                    "type": "terraform.action",
                    "request_id": "t",
                    "actor": "a",
                    "workspace": "W!",
                    "action": "plan",
                }
            ),
            "workspace: String should match",
        ),
    ],
)
def test_malformed_payloads_name_the_problem(
    family: str, payload: str | bytes, reason: str
) -> None:
    with pytest.raises(InvalidRequest, match=None) as info:
        parse_request(family, payload)
    assert reason in str(info.value)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown request family 'crypto'"):
        parse_request("crypto", "{}")


def _terraform(**overrides: object) -> dict[str, object]:
    return {
        "schema_version": 1,
        "type": "terraform.action",
        "request_id": "t",
        "actor": "a",
        "workspace": "w",
        "action": "plan",
        **overrides,
    }


@pytest.mark.parametrize(
    ("family", "payload", "field", "char"),
    [
        ("paper", paper_start(actor="ops\x00team"), "actor", "\\x00 (control character)"),
        ("paper", paper_start(request_id="r\u202e1"), "request_id", "\\u202e (RIGHT-TO-LEFT"),
        ("paper", paper_start(session_id="s\u20661"), "session_id", "\\u2066 (LEFT-TO-RIGHT"),
        ("paper", paper_start(symbols=["BTC", "X\x1b"]), "symbols.1", "\\x1b (control"),
        ("paper", paper_start(actor="zero\u200bwidth"), "actor", "\\u200b (ZERO WIDTH SPACE)"),
        ("paper", paper_start(actor="lone\ud800"), "actor", "\\ud800"),
        (
            "paper",
            {**paper_start(type="paper.stop", reason="eod\n"), "symbols": None},
            "reason",
            "\\x0a",
        ),
        ("terraform", _terraform(workspace="w\x00"), "workspace", "\\x00"),
        ("terraform", _terraform(variables={"n\u202e": 1}), "variables.n\\u202e.[key]", "\\u202e"),
        ("terraform", _terraform(variables={"n": "a\x00"}), "variables: n", "\\x00"),
        (
            "terraform",
            _terraform(variables={"n": [{"k": "\u2067"}]}),
            "variables: n.0.k",
            "\\u2067",
        ),
        ("terraform", _terraform(variables={"n": {"k\x07": 1}}), "variables: n key", "\\x07"),
    ],
)
def test_unsafe_characters_are_refused_naming_the_field_and_the_character(
    family: str, payload: dict[str, object], field: str, char: str
) -> None:
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(InvalidRequest) as info:
        parse_request(family, json.dumps(payload))
    reason = str(info.value)
    assert f"{field}: character {char}" in reason, reason
    assert all(c.isprintable() for c in reason), reason


def test_duplicate_keys_are_refused_at_any_depth_naming_the_key() -> None:
    top = json.dumps(paper_start())[:-1] + ', "actor": "mallory"}'
    with pytest.raises(InvalidRequest, match="repeats the key 'actor' in one object"):
        parse_request("paper", top)
    nested = json.dumps(_terraform())[:-1] + ', "variables": {"a": 1, "a": 2}}'
    with pytest.raises(InvalidRequest, match="repeats the key 'a' in one object"):
        parse_request("terraform", nested)


def test_lengths_stay_within_what_the_ledger_stores() -> None:
    with pytest.raises(InvalidRequest, match="actor: String should have at most 128 characters"):
        parse_request("paper", json.dumps(paper_start(actor="a" * 129)))
    with pytest.raises(InvalidRequest, match="request_id: String should match pattern"):
        parse_request("paper", json.dumps(paper_start(request_id="r" * 129)))
    assert parse_request("paper", json.dumps(paper_start(actor="Zoë ☃ " * 18))).actor


def test_a_null_terraform_variable_is_refused_nested_nulls_are_values() -> None:
    with pytest.raises(InvalidRequest, match="variables: n: null is not a value"):
        parse_request("terraform", json.dumps(_terraform(variables={"n": None})))
    request = parse_request("terraform", json.dumps(_terraform(variables={"n": [None]})))
    assert request.variables == {"n": [None]}


def test_run_tags_are_built_only_from_valid_values() -> None:
    assert workload_tags("paper", actor="alice")[ACTOR_TAG] == "alice"
    with pytest.raises(ValueError, match="tag alphaswarm/actor: character \\\\x00"):
        workload_tags("paper", actor="a\x00")
    with pytest.raises(ValueError, match="tag alphaswarm/actor is 256 characters"):
        workload_tags("paper", actor="a" * (TAG_MAX_LENGTH + 1))
