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
