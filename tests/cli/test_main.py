"""`alphaswarm-orch`: commands load lazily, so operator commands that only talk to Redis
(`kill-switch`, `submit`) never import Dagster or Celery. Run as the operator runs them: a fresh
interpreter per command, on the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import click
import pytest
import redis

from alphaswarm_orch.broker.keys import request_stream
from alphaswarm_orch.cli.main import LAZY_COMMANDS, main

HEAVY = ("dagster", "dagster_celery", "celery", "kombu", "sqlalchemy", "alembic")
"""Packages a Redis-only operator command must not import (the ledger's SQLAlchemy/Alembic
included: only a refused step records to the ledger)."""


def run_cli(env: dict[str, str], *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime -m alphaswarm_orch.cli ARGV`; its result and every module
    it imported (importtime reports each module the first time it is imported)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "alphaswarm_orch.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "alphaswarm_orch.cli.main" in modules, result.stderr[-2000:]
    return result, modules


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


@pytest.fixture
def cli_env(redis_urls: tuple[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHASWARM_")}
    return {
        **env,
        "ALPHASWARM_REDIS_URL": redis_urls[0],
        "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex}",
    }


def test_kill_switch_commands_do_not_import_dagster(cli_env: dict[str, str]) -> None:
    key = cli_env["ALPHASWARM_KILL_SWITCH_KEY"]
    client = redis.Redis.from_url(cli_env["ALPHASWARM_REDIS_URL"], decode_responses=True)
    try:
        on, modules = run_cli(cli_env, "kill-switch", "on", "--reason", "incident 7")
        assert on.returncode == 0, on.stderr[-2000:]
        assert client.get(key) == "incident 7"
        assert heavy(modules) == set()
        status, modules = run_cli(cli_env, "kill-switch", "status")
        assert status.returncode == 0, status.stderr[-2000:]
        assert f"global     ON (incident 7) [{key}]" in status.stdout
        assert heavy(modules) == set()
        off, modules = run_cli(cli_env, "kill-switch", "off")
        assert off.returncode == 0 and client.get(key) is None
        assert heavy(modules) == set()
    finally:
        client.delete(key)
        client.close()


def test_submit_does_not_import_dagster(cli_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(cli_env["ALPHASWARM_REDIS_URL"], decode_responses=True)
    stream = request_stream("paper")
    client.delete(stream)
    request_id = f"r-{uuid.uuid4().hex}"
    try:
        argv = ["submit", "paper", "start", "--session", "lazy-1", "--symbols", "BTC-USD"]
        submitted, modules = run_cli(cli_env, *argv, "--request-id", request_id)
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        [(_id, fields)] = client.xrange(stream)
        assert f'"request_id":"{request_id}"' in fields["payload"].replace(" ", "")
        assert heavy(modules) == set()
    finally:
        client.delete(stream)
        client.close()


def test_the_import_check_sees_dagster_where_a_command_needs_it(cli_env: dict[str, str]) -> None:
    """`daemon` runs Dagster's daemon: loading it imports Dagster, and the check above sees it."""
    result, modules = run_cli(cli_env, "daemon", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dagster" in heavy(modules)


def test_every_lazy_command_resolves_to_its_click_command() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(LAZY_COMMANDS)
    for name in LAZY_COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(ctx, "no-such-command") is None
