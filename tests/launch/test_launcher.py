"""ForkserverRunLauncher: runs launched through the instance execute in forked run workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher.base import WorkerStatus

from alphaswarm_orch.launch import ForkserverRunLauncher
from alphaswarm_orch.launch.launcher import RUN_WORKER_HOST_TAG, RUN_WORKER_PID_TAG
from tests.launch import jobs
from tests.launch.test_daemon import DAEMON
from tests.support.processes import background, read_log
from tests.support.runs import REPO, wait_for

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


def test_run_monitoring_fails_a_run_whose_worker_died(
    orch_env: dict[str, str], instance: dg.DagsterInstance
) -> None:
    home = Path(orch_env["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(home.read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1  # 5 s in the repo's dagster.yaml
    home.write_text(yaml.safe_dump(config))
    run_id = launch(instance, jobs.launch_wait_job)
    wait_for(
        lambda: instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START),
        120,
        "the waiting step to start",
    )
    run = instance.get_run_by_id(run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    pid = int(run.tags[RUN_WORKER_PID_TAG])
    os.kill(pid, signal.SIGKILL)  # what an OOM kill does
    wait_for(lambda: not running(pid), 30, f"run worker {pid} to die")
    with background([*DAEMON, "-m", "tests.launch.jobs"], orch_env, cwd=str(REPO)) as daemon:
        try:
            run = finished(instance, run_id)
        except AssertionError:
            print(read_log(daemon)[-4000:])
            raise
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert f"run worker {pid} on {os.uname().nodename} exited without finishing" in messages(
        instance, run_id
    )


@pytest.mark.parametrize(
    ("tags", "status", "says"),
    [
        ({}, WorkerStatus.RUNNING, "not launched by this launcher"),
        (
            {RUN_WORKER_PID_TAG: "4242", RUN_WORKER_HOST_TAG: "daemon-old-pod"},
            WorkerStatus.UNKNOWN,
            "ran on daemon-old-pod, not on this daemon's host",
        ),
    ],
)
def test_a_worker_this_host_cannot_see_is_judged_by_its_tags(
    instance: dg.DagsterInstance, tags: dict[str, str], status: WorkerStatus, says: str
) -> None:
    run = dg.DagsterRun(job_name="launch_wait_job", run_id="r" * 36, tags=tags)
    result = instance.run_launcher.check_run_worker_health(run)
    assert result.status == status
    assert says in (result.msg or "")


LAUNCH_AND_EXIT = """
from multiprocessing import forkserver
import dagster as dg
from tests.launch import jobs
from tests.launch.test_launcher import launch
with dg.DagsterInstance.get() as instance:
    run_id = launch(instance, jobs.launch_wait_job)
print("LAUNCHED", run_id, forkserver._forkserver._forkserver_pid, flush=True)
"""


def test_a_running_run_worker_does_not_keep_its_launcher_s_forkserver_alive(
    orch_env: dict[str, str], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The launching process exits while its run runs on: its forkserver goes with it."""
    out = tmp_path / "launcher.out"
    with out.open("w") as sink:  # a file, not a pipe: the run worker keeps the launcher's stdout
        code = subprocess.run(
            [sys.executable, "-c", LAUNCH_AND_EXIT],
            env=orch_env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=180,
        ).returncode
    assert code == 0, out.read_text()[-3000:]
    [(run_id, server)] = re.findall(r"^LAUNCHED (\S+) (\d+)$", out.read_text(), re.MULTILINE)
    try:
        wait_for(
            lambda: instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START),
            120,
            "the waiting step to start",
        )
    except AssertionError:
        print(out.read_text()[-3000:], messages(instance, run_id))
        raise
    worker = int(instance.get_run_by_id(run_id).tags[RUN_WORKER_PID_TAG])
    try:
        wait_for(lambda: not running(int(server)), 60, f"forkserver {server} to exit")
        assert running(worker)
    finally:
        instance.run_launcher.terminate(run_id)
    assert finished(instance, run_id, timeout=60).status == dg.DagsterRunStatus.CANCELED


def test_the_multiprocessing_state_a_run_worker_resets_is_still_there() -> None:
    """Private attributes `_detach_from_forkserver` resets (launch/worker.py)."""
    from multiprocessing import forkserver, resource_tracker

    for name in ("_forkserver_alive_fd", "_forkserver_address", "_forkserver_pid"):
        assert hasattr(forkserver._forkserver, name), name
    for name in ("_fd", "_pid"):
        assert hasattr(resource_tracker._resource_tracker, name), name
