"""The two-queue job on real worker processes: each step runs on a worker of its queue."""

from __future__ import annotations

import subprocess

import dagster as dg
import pytest
import redis
from celery import Celery

from alphaswarm_orch.broker.redis_queues import queue_length
from tests.support.runs import (
    REPO,
    execute_job,
    execute_job_argv,
    step_outcomes,
    step_workers,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_cli_job_execute_runs_each_step_on_a_worker_of_its_queue(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance
) -> None:
    default = start_worker("default", "w-default")
    workflows = start_worker("workflows", "w-workflows")

    execute_job(orch_env, "smoke_route_job")

    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert step_outcomes(instance, run.run_id) == {
        "smoke_lookup": "SUCCESS",
        "smoke_orchestrate": "SUCCESS",
        "smoke_callback": "SUCCESS",
    }
    assert step_workers(instance, run.run_id) == {
        "smoke_lookup": default.node,
        "smoke_orchestrate": workflows.node,
        "smoke_callback": default.node,
    }


def test_step_whose_queue_has_no_worker_is_not_taken_by_another_queue(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance
) -> None:
    default = start_worker("default", "w-default-only")
    broker = redis.Redis.from_url(orch_env["ALPHASWARM_BROKER_URL"])
    run = subprocess.Popen(
        execute_job_argv("smoke_route_job"),
        env=orch_env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        [dagster_run] = wait_for(instance.get_runs, 120, "the run to be created")
        run_id = dagster_run.run_id
        # The default step ran on the default worker...
        wait_for(
            lambda: step_outcomes(instance, run_id).get("smoke_lookup") == "SUCCESS",
            120,
            "smoke_lookup to succeed on the default worker",
        )
        # ...and the workflows step was sent and sits in the `workflows` list, unconsumed.
        wait_for(
            lambda: queue_length(broker, "workflows") == 1, 60, "the workflows step to be queued"
        )
        app = Celery(broker=orch_env["ALPHASWARM_BROKER_URL"])
        active = wait_for(
            lambda: app.control.inspect(destination=[default.node], timeout=2).active(),
            30,
            "the default worker to answer inspect",
        )
        app.close()
        assert active[default.node] == []
        assert queue_length(broker, "workflows") == 1
        assert "smoke_orchestrate" not in step_outcomes(instance, run_id)
        assert step_workers(instance, run_id) == {"smoke_lookup": default.node}
    finally:
        run.kill()
        run.wait()
        broker.close()
