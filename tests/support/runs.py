"""Read what happened in a run from the real Dagster instance."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
import sqlalchemy as sa

from alphaswarm_orch.ledger.db import engine_for
from alphaswarm_orch.ledger.mirror import LedgerMirror
from alphaswarm_orch.ledger.schema import workload_runs
from alphaswarm_orch.settings import Settings

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll `condition` until it returns a truthy value; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Map step key -> the Celery worker hostname that executed it (from engine events)."""
    workers: dict[str, str] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        metadata = event.engine_event_data.metadata or {}
        worker = metadata.get("Celery worker")
        if worker is not None:
            workers[event.step_key] = str(worker.value)
    return workers


def step_outcomes(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Map step key -> SUCCESS / FAILURE / SKIPPED from the run's step events."""
    outcomes: dict[str, str] = {}
    kinds = {
        dg.DagsterEventType.STEP_SUCCESS: "SUCCESS",
        dg.DagsterEventType.STEP_FAILURE: "FAILURE",
        dg.DagsterEventType.STEP_SKIPPED: "SKIPPED",
    }
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type in kinds and event.step_key:
            outcomes[event.step_key] = kinds[event.event_type]
    return outcomes


REPO = Path(__file__).resolve().parents[2]


def execute_job_argv(
    job: str, *args: str, module: str = "alphaswarm_orch.definitions"
) -> list[str]:
    """`dagster job execute` for `job` of `module`, as CI and operators run it."""
    return [sys.executable, "-m", "dagster", "job", "execute", "-m", module, "-j", job, *args]


def execute_job(
    env: dict[str, str], job: str, *args: str, module: str = "alphaswarm_orch.definitions"
) -> subprocess.CompletedProcess:
    """Run `job` to completion with `dagster job execute`; fail with its output if it fails."""
    result = subprocess.run(
        execute_job_argv(job, *args, module=module),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def mirrored_run(env: dict[str, str], instance: dg.DagsterInstance, run_id: str) -> dict:
    """Mirror the instance's event log into the ledger of `env`; return `run_id`'s row."""
    settings = Settings.from_env(env)
    LedgerMirror(settings, instance).sync()
    with engine_for(settings.ledger_url).connect() as conn:
        row = conn.execute(sa.select(workload_runs).where(workload_runs.c.run_id == run_id)).one()
    return dict(row._mapping)
