"""`alphaswarm-orch submit ...` appends requests the sensors accept, and refuses bad ones."""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from alphaswarm_orch.broker.keys import request_stream
from alphaswarm_orch.cli.main import main
from alphaswarm_orch.requests import HftStop, PaperStart, TerraformRequest, read_requests


@pytest.fixture
def submit(redis_client: redis.Redis, redis_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ALPHASWARM_REDIS_URL", redis_urls[0])
    runner = CliRunner()
    return lambda *argv: runner.invoke(main, ["submit", *argv])


def test_submitted_requests_are_read_back_valid(redis_client: redis.Redis, submit) -> None:
    result = submit(
        "paper",
        "start",
        "--session",
        "s1",
        "--symbols",
        "BTC-USD, ETH-USD",
        "--cash",
        "5000",
        "--actor",
        "ops",
        "--request-id",
        "r-1",
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("paper.start r-1 appended as ")
    assert submit("hft", "stop", "--session", "h1", "--reason", "eod").exit_code == 0
    result = submit(
        "terraform",
        "--workspace",
        "paper-infra",
        "--action",
        "apply",
        "--plan-id",
        "p-9",
        "--var",
        "replicas=3",
        "--var",
        "region=eu",
    )
    assert result.exit_code == 0, result.output

    [paper] = read_requests(redis_client, "paper", None).requests
    assert isinstance(paper.request, PaperStart)
    assert (paper.request.symbols, paper.request.starting_cash) == (["BTC-USD", "ETH-USD"], 5000)
    assert paper.request.actor == "ops"
    [hft] = read_requests(redis_client, "hft", None).requests
    assert isinstance(hft.request, HftStop) and hft.request.reason == "eod"
    assert len(hft.request.request_id) == 32  # a fresh uuid
    [tf] = read_requests(redis_client, "terraform", None).requests
    assert isinstance(tf.request, TerraformRequest)
    assert tf.request.variables == {"replicas": 3, "region": "eu"}


def test_invalid_requests_are_refused_and_nothing_is_appended(
    redis_client: redis.Redis, submit
) -> None:
    bad_symbol = submit("paper", "start", "--session", "s1", "--symbols", "btc")
    assert bad_symbol.exit_code == 2
    assert "invalid paper.start request: symbols.0: String should match" in bad_symbol.output
    no_plan = submit("terraform", "--workspace", "w", "--action", "apply")
    assert no_plan.exit_code == 2 and "action 'apply' needs plan_id" in no_plan.output
    bad_var = submit("terraform", "--workspace", "w", "--action", "plan", "--var", "oops")
    assert bad_var.exit_code == 2 and "'oops' is not NAME=VALUE" in bad_var.output
    assert not any(redis_client.exists(request_stream(f)) for f in ("paper", "terraform"))


def test_submit_without_redis_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALPHASWARM_REDIS_URL", "ALPHASWARM_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["submit", "hft", "stop", "--session", "h1"])
    assert result.exit_code == 2 and "set ALPHASWARM_REDIS_URL" in result.output
