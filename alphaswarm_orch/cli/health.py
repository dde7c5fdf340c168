"""`alphaswarm-orch health`: exec probes for Kubernetes (exit 0 healthy, 1 not)."""

import json
import sys

import click

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.control.drain import DrainError, local_status
from alphaswarm_orch.control.health import (
    LIVENESS_MAX_AGE_SECONDS,
    READINESS_TIMEOUT_SECONDS,
    probe_broker,
)
from alphaswarm_orch.settings import Settings


@click.command(name="health")
@click.option(
    "--readiness",
    "mode",
    flag_value="readiness",
    default=True,
    help="Broker reachable on a fresh connection (default).",
)
@click.option(
    "--liveness",
    "mode",
    flag_value="liveness",
    help="The local worker's consumer loop beat its heartbeat recently.",
)
@click.option(
    "--timeout",
    type=float,
    default=READINESS_TIMEOUT_SECONDS,
    show_default=True,
    help="Readiness: seconds allowed for the broker probe.",
)
@click.option(
    "--max-age",
    type=float,
    default=LIVENESS_MAX_AGE_SECONDS,
    show_default=True,
    help="Liveness: oldest acceptable heartbeat, in seconds.",
)
def health_command(mode: str, timeout: float, max_age: float) -> None:
    """Probe this worker: readiness (the broker) or liveness (its heartbeat, via /healthz)."""
    with user_errors():
        settings = Settings.from_env()
        broker = settings.require_broker("the readiness probe")
    if mode == "readiness":
        result = probe_broker(broker, timeout)
        click.echo(
            f"{'ready' if result.ok else 'not ready'}: {result.detail} ({result.seconds:.2f}s)"
        )
        sys.exit(0 if result.ok else 1)
    try:
        status = local_status(settings.metrics_port)
    except DrainError as exc:
        click.echo(f"not alive: {exc}")
        sys.exit(1)
    alive = status["state"] == "draining" or status["heartbeat_age"] <= max_age
    click.echo(f"{'alive' if alive else 'not alive'}: {json.dumps(status)}")
    sys.exit(0 if alive else 1)
