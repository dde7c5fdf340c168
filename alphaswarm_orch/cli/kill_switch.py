"""`alphaswarm-orch kill-switch on|off|status [--queue Q]`: the switch alphaswarm-core shares."""

import click
import redis

from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.queues import LIGHT_QUEUES, check_light_queue
from alphaswarm_orch.settings import Settings

_QUEUE = click.option(
    "--queue", "-q", default=None, help="Only this light queue (default: the global switch)."
)


def _switch(queue: str | None) -> KillSwitch:
    with user_errors():
        if queue is not None:
            check_light_queue(queue, where="--queue")
        return KillSwitch.from_settings(Settings.from_env())


def _name(switch: KillSwitch, queue: str | None) -> str:
    return f"kill switch {switch.key_for(queue)!r}"


@click.group(name="kill-switch")
def kill_switch_group() -> None:
    """Stop work: sensors skip, steps refuse to start, session loops stop."""


@kill_switch_group.command(name="on")
@_QUEUE
@click.option("--reason", required=True, help="Why; shown in every refusal.")
def on(queue: str | None, reason: str) -> None:
    switch = _switch(queue)
    if not reason.strip():
        raise click.UsageError("--reason must not be empty: say why work is stopped")
    try:
        switch.engage(reason, queue)
    except redis.RedisError as exc:
        raise click.ClickException(f"could not set {_name(switch, queue)}: {exc}") from exc
    click.echo(f"{_name(switch, queue)} ON: {reason}")


@kill_switch_group.command(name="off")
@_QUEUE
@click.option("--reason", default=None, help="Why it is safe to resume (echoed).")
def off(queue: str | None, reason: str | None) -> None:
    switch = _switch(queue)
    try:
        was_set = switch.clear(queue)
    except redis.RedisError as exc:
        raise click.ClickException(f"could not clear {_name(switch, queue)}: {exc}") from exc
    state = "cleared" if was_set else "was not set"
    click.echo(f"{_name(switch, queue)} {state}" + (f": {reason}" if reason else ""))


@kill_switch_group.command(name="status")
@_QUEUE
def status(queue: str | None) -> None:
    """The global switch and every per-queue switch (or only what applies to --queue).

    Fails closed like every reader: a key of any type is ON, and a switch that cannot be read
    is ON (unreadable), with exit status 1.
    """
    switch = _switch(queue)
    scopes = ["global", *([queue] if queue is not None else LIGHT_QUEUES)]
    keys = [switch.key_for(None if scope == "global" else scope) for scope in scopes]
    states = switch.states(keys)
    for scope, key, state in zip(scopes, keys, states, strict=True):
        text = "off" if state is None else f"ON ({state.reason}) [{key}]"
        click.echo(f"{scope:<10} {text}")
    unreadable = [s for s in states if s is not None and s.unreadable]
    if unreadable:
        raise click.ClickException(f"could not read the kill switch: {unreadable[0].reason}")
