"""A stand-in for alphaswarm-executor: a real Celery app whose worker consumes `backtest`.

Run as `celery -A tests.workflows.executor_stub worker -Q backtest`. It records every
revocation in Redis (`revoked_key(task_id)`), so tests observe termination on the executor side.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import task_revoked

# Read when the worker starts; the tests import this module only for `revoked_key`.
app = Celery(
    "executor_stub",
    broker=os.environ.get("ALPHASWARM_BROKER_URL"),
    backend=os.environ.get("ALPHASWARM_RESULT_BACKEND"),
)
app.conf.worker_prefetch_multiplier = 1


class BacktestFailed(RuntimeError):
    """What a failing executor task raises."""


def revoked_key(task_id: str) -> str:
    return f"executor_stub:revoked:{task_id}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ALPHASWARM_BROKER_URL"], decode_responses=True)


@app.task(name="backtest.run")
def run_backtest(strategy: str, days: int) -> dict[str, Any]:
    return {"strategy": strategy, "days": days, "pnl": round(days * 1.5, 2)}


@app.task(name="backtest.fail")
def fail_backtest(reason: str) -> None:
    raise BacktestFailed(f"backtest rejected its input: {reason}")


@app.task(name="backtest.wait_for_flag", bind=True)
def wait_for_flag(self: Task, flag_key: str, started_key: str, max_seconds: int = 120) -> str:
    """Announce the task id under `started_key`, then block until `flag_key` is pushed."""
    client = _redis()
    client.set(started_key, self.request.id)
    return "flag seen" if client.blpop([flag_key], timeout=max_seconds) else "gave up"


@task_revoked.connect
def record_revocation(
    request: Any, terminated: bool, signum: int | None, expired: bool, **_: Any
) -> None:
    _redis().hset(
        revoked_key(request.id),
        mapping={"terminated": int(bool(terminated)), "signum": int(signum or 0)},
    )
