"""`smoke_route_job`: ops on two light queues, each reporting the worker that ran it."""

import os
import socket

import dagster as dg

from alphaswarm_orch.queues import queue_tags


def _where() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


@dg.op(tags=queue_tags("default"))
def smoke_lookup(context: dg.OpExecutionContext) -> dict[str, int]:
    """A light lookup on the default queue."""
    context.add_output_metadata(_where())
    return {"instruments": 3}


@dg.op(tags=queue_tags("workflows"))
def smoke_orchestrate(context: dg.OpExecutionContext, lookup: dict[str, int]) -> int:
    """A coordination step on the workflows queue that consumes the lookup's output."""
    context.add_output_metadata(_where())
    return lookup["instruments"] * 2


@dg.op(tags=queue_tags("default"))
def smoke_callback(context: dg.OpExecutionContext, planned: int) -> None:
    """A callback back on the default queue."""
    context.log.info(f"smoke planned {planned} units")


@dg.job(description="Smoke test of Celery routing across the default and workflows queues.")
def smoke_route_job() -> None:
    smoke_callback(smoke_orchestrate(smoke_lookup()))
