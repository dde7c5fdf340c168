"""`alphaswarm-orch submit paper|hft|terraform ...`: append a valid request to its stream.

What alphaswarm-core does, for operators and tests. The request goes through the same
validation the sensors apply, so a command that succeeds appended a request they accept.
"""

import getpass
import json
import uuid
from typing import Any

import click
import redis

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.requests import InvalidRequest, append_request, parse_request
from alphaswarm_orch.settings import Settings


def _submit(family: str, fields: dict[str, Any]) -> None:
    payload = {
        "schema_version": 1,
        "request_id": fields.pop("request_id") or uuid.uuid4().hex,
        "actor": fields.pop("actor") or getpass.getuser(),
        **{k: v for k, v in fields.items() if v is not None},
    }
    try:
        request = parse_request(family, json.dumps(payload))
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from exc
    with user_errors():
        url = Settings.from_env().require_redis("submit")
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        stream_id = append_request(client, request)
    finally:
        client.close()
    click.echo(f"{request.type} {request.request_id} appended as {stream_id}")


def _common(command: Any) -> Any:
    command = click.option("--request-id", default=None, help="Default: a new uuid.")(command)
    return click.option("--actor", default=None, help="Default: the current user.")(command)


def _session_group(family: str) -> click.Group:
    @click.group(name=family)
    def group() -> None:
        pass

    group.help = f"Start or stop a {family} session."

    @group.command(name="start")
    @click.option("--session", "session_id", required=True, help="Session id (single-use).")
    @click.option("--symbols", required=True, help="Comma-separated, e.g. BTC-USD,ETH-USD.")
    @click.option("--cash", "starting_cash", type=float, default=None)
    @click.option("--fee-bps", type=float, default=None)
    @click.option("--max-position", type=float, default=None)
    @_common
    def start(symbols: str, **fields: Any) -> None:
        """Append a start request; the sensor launches the session run."""
        symbol_list = [s.strip() for s in symbols.split(",") if s.strip()]
        _submit(family, {"type": f"{family}.start", "symbols": symbol_list, **fields})

    @group.command(name="stop")
    @click.option("--session", "session_id", required=True)
    @click.option("--reason", default=None, help="Shown in the run's result.")
    @_common
    def stop(**fields: Any) -> None:
        """Append a stop request; the session ends cleanly after its current tick."""
        _submit(family, {"type": f"{family}.stop", **fields})

    return group


def _parse_var(value: str) -> tuple[str, Any]:
    name, sep, raw = value.partition("=")
    if not sep:
        raise click.BadParameter(f"{value!r} is not NAME=VALUE, e.g. --var replicas=2")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


@click.command(name="terraform")
@click.option("--workspace", required=True)
@click.option("--action", type=click.Choice(["plan", "apply", "destroy"]), required=True)
@click.option("--var", "variables", multiple=True, help="NAME=VALUE (JSON or text), repeatable.")
@click.option("--plan-id", default=None, help="The saved plan to apply (apply only).")
@_common
def terraform_command(variables: tuple[str, ...], **fields: Any) -> None:
    """Plan, apply (a saved plan) or destroy an allow-listed workspace."""
    parsed = dict(_parse_var(v) for v in variables)
    _submit("terraform", {"type": "terraform.action", "variables": parsed, **fields})


@click.group(name="submit")
def submit_group() -> None:
    """Append a request to a request stream, as alphaswarm-core does."""


submit_group.add_command(_session_group("paper"))
submit_group.add_command(_session_group("hft"))
submit_group.add_command(terraform_command)
