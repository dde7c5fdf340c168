"""Daemon rollouts never stop a running step: run monitoring resumes the run with a new run
worker, whose Celery executor re-attaches to the step instead of failing or re-sending it."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from tests.support.rollout import run_rollouts
from tests.support.runs import REPO

pytestmark = [pytest.mark.integration, pytest.mark.rollout]


@pytest.fixture
def env(orch_env: dict[str, str]) -> dict[str, str]:
    return {
        **orch_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), orch_env.get("PYTHONPATH")])),
    }


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        record.dagster_event.message or ""
        for record in instance.all_logs(run_id)
        if record.dagster_event is not None
    ]


def test_a_running_step_survives_three_daemon_rollouts_and_runs_once(
    env, start_worker, instance
) -> None:
    start_worker("default", "w-rollout", env=env)
    result = run_rollouts(env, instance, restarts=3)
    messages = _messages(instance, result.run_id)
    assert result.status == dg.DagsterRunStatus.SUCCESS, "\n".join(messages)
    # Started once, never interrupted, finished: the step was neither stopped nor re-executed.
    assert [r.split(" pid ")[0] for r in result.reports] == [
        "started held attempt 0",
        "finished held",
    ], result.reports
    assert sum(m == "Launching a new run worker to resume run" for m in messages) == 3
    assert sum(m.startswith('Re-attached to step "held"') for m in messages) == 3, "\n".join(
        messages
    )
    assert sum(m.startswith("Submitted celery task") for m in messages) == 1
    # It kept working through every rollout: progress after the last one.
    assert result.progress[-1] > result.restarts[-1]
