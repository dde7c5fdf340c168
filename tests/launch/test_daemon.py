"""`alphaswarm-orch daemon`: dagster-daemon, sensor loop from ALPHASWARM_SENSOR_LOOP_SECONDS."""

from __future__ import annotations

import itertools
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType

from alphaswarm_orch.launch.launcher import forkserver_context
from tests.support.ops import descendants
from tests.support.processes import background, read_log
from tests.support.runs import REPO, wait_for

pytestmark = pytest.mark.integration

DAEMON = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon"]


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    states = [
        state
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.instigator_name == name
    ]
    return [
        tick
        for state in states
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20)
    ]


def test_a_one_second_sensor_is_evaluated_more_often_than_every_five_seconds(
    orch_env: dict[str, str], instance: dg.DagsterInstance
) -> None:
    env = {**orch_env, "ALPHASWARM_SENSOR_LOOP_SECONDS": "1"}
    with background([*DAEMON, "-m", "tests.launch.jobs"], env, cwd=str(REPO)) as daemon:
        try:
            ticks = wait_for(
                lambda: len(t := sensor_ticks(instance, "every_second_sensor")) >= 6 and t,
                120,
                "six ticks of every_second_sensor",
                interval=0.5,
            )
        except AssertionError:
            print(read_log(daemon)[-4000:])
            raise
    times = sorted(tick.timestamp for tick in ticks)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Dagster's own loop (5 s) would space them >= 5 s apart.
    assert statistics.median(gaps) < 2.5, gaps


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan", "3600"])
def test_a_bad_sensor_loop_period_is_refused_naming_the_variable(
    orch_env: dict[str, str], value: str
) -> None:
    env = {**orch_env, "ALPHASWARM_SENSOR_LOOP_SECONDS": value}
    result = subprocess.run(
        [*DAEMON, "-m", "tests.launch.jobs"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"ALPHASWARM_SENSOR_LOOP_SECONDS={value!r}" in result.stderr


def _forkservers(pid: int) -> list[int]:
    return [
        child
        for child in descendants(pid)
        if "multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_text()
    ]


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_the_launcher_forkserver_stops_with_the_daemon(orch_env: dict[str, str]) -> None:
    with background([*DAEMON, "-m", "tests.launch.jobs"], orch_env, cwd=str(REPO)) as daemon:
        [server] = wait_for(lambda: _forkservers(daemon.pid), 120, "the daemon's forkserver")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    # Stopped and reaped by the daemon before it exited, not left behind with parent 1.
    assert not _exists(server), Path(f"/proc/{server}/stat").read_text()


def test_the_forkserver_preload_list_starts_with_its_fast_exit() -> None:
    """multiprocessing's private `ForkServer._stop` is what `stop_forkserver` calls."""
    from multiprocessing import forkserver

    from alphaswarm_orch.launch.launcher import FORKSERVER_START_MODULE, stop_forkserver

    assert callable(forkserver._forkserver._stop)
    forkserver_context(["dagster"])
    assert forkserver._forkserver._preload_modules[0] == FORKSERVER_START_MODULE
    stop_forkserver()  # no forkserver started: nothing to do
