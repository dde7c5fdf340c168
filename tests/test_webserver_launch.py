"""A run launched the way the Dagster UI launches it: GraphQL on a real webserver + daemon.

The daemon is `alphaswarm-orch daemon`, as deployed: it dequeues the run and launches it with
the ForkserverRunLauncher of the repo's dagster.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from alphaswarm_orch.launch.launcher import RUN_WORKER_PID_TAG
from tests.support.processes import background, free_port, read_log
from tests.support.runs import step_workers, wait_for

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def test_graphql_launch_runs_on_the_workers(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance
) -> None:
    worker = start_worker("default,workflows", "w-ui")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    webserver = [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml"]
    webserver += ["-h", "127.0.0.1", "-p", str(port)]
    daemon = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-w", "workspace.yaml"]
    with (
        background(webserver, orch_env, cwd=str(REPO)) as web,
        background(daemon, orch_env, cwd=str(REPO)) as dmn,
    ):
        try:
            wait_for(lambda: _up(f"http://127.0.0.1:{port}/server_info"), 120, "the webserver")
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            run_id = client.submit_job_execution("smoke_route_job")
            status = wait_for(
                lambda: (
                    (s := client.get_run_status(run_id))
                    in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                    and s
                ),
                240,
                "the launched run to finish",
                interval=0.5,
            )
        except AssertionError:
            print(read_log(web)[-4000:], read_log(dmn)[-4000:])
            raise
    assert status == dg.DagsterRunStatus.SUCCESS
    assert RUN_WORKER_PID_TAG in instance.get_run_by_id(run_id).tags
    assert set(step_workers(instance, run_id).values()) == {worker.node}
    assert len(step_workers(instance, run_id)) == 3
