"""ForkserverRunLauncher: runs launched through the instance execute in forked run workers."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from alphaswarm_orch.launch import ForkserverRunLauncher
from alphaswarm_orch.launch.launcher import RUN_WORKER_HOST_TAG, RUN_WORKER_PID_TAG
from tests.launch import jobs
from tests.support.runs import wait_for

pytestmark = pytest.mark.integration


def launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    """Create a run of `job` (code origin: tests.launch.jobs) and launch it, as the daemon does."""
    origin = dg.reconstructable(getattr(jobs, job.name)).get_python_origin()
    run = instance.create_run_for_job(job_def=job, job_code_origin=origin)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited, not yet reaped one counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> dg.DagsterRun:
    """The run once it finished and its worker exited (it writes events until it exits)."""
    run = wait_for(
        lambda: (run := instance.get_run_by_id(run_id)) is not None and run.is_finished and run,
        timeout,
        f"run {run_id} to finish",
    )
    pid = int(run.tags[RUN_WORKER_PID_TAG])
    wait_for(lambda: not running(pid), 30, f"run worker {pid} to exit")
    return run


def messages(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's event log as text, with the errors that events carry."""
    lines = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        lines.append(event.message or "" if event else record.user_message)
        error = getattr(event and event.event_specific_data, "error", None)
        if error is not None:
            lines.append(error.to_string())
    return "\n".join(lines)


def test_the_instance_uses_the_forkserver_launcher(instance: dg.DagsterInstance) -> None:
    assert isinstance(instance.run_launcher, ForkserverRunLauncher)


def test_a_launched_run_succeeds_in_its_own_recorded_worker(instance: dg.DagsterInstance) -> None:
    run_id = launch(instance, jobs.launch_hello_job)
    run = finished(instance, run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, messages(instance, run_id)
    pid = int(run.tags[RUN_WORKER_PID_TAG])
    assert pid != os.getpid()
    assert run.tags[RUN_WORKER_HOST_TAG] == os.uname().nodename
    assert f"Started process for run (pid: {pid})" in messages(instance, run_id)


def test_code_that_fails_to_load_ends_the_run_failure_with_the_error(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run worker sees the launcher's environment at launch: tests.launch.jobs now raises.
    monkeypatch.setenv(jobs.BROKEN_CODE, "1")
    run_id = launch(instance, jobs.launch_hello_job)
    run = finished(instance, run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    log = messages(instance, run_id)
    assert "Could not load job definition" in log
    assert "fails to load on purpose" in log


def test_terminate_cancels_the_run_and_its_worker_exits(instance: dg.DagsterInstance) -> None:
    run_id = launch(instance, jobs.launch_wait_job)
    wait_for(
        lambda: instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START),
        120,
        "the waiting step to start",
    )
    pid = int(instance.get_run_by_id(run_id).tags[RUN_WORKER_PID_TAG])
    assert running(pid)
    assert instance.run_launcher.terminate(run_id)
    run = finished(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.CANCELED, messages(instance, run_id)
    assert not instance.run_launcher.terminate(run_id)
