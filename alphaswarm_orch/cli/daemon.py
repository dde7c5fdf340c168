"""`alphaswarm-orch daemon`: dagster-daemon whose sensor and dequeue loops act on arrival.

dagster-daemon evaluates sensors on a fixed 5 s loop (`MIN_INTERVAL_LOOP_TIME` in
`dagster._daemon.sensor`, read on every iteration) and dequeues runs every
`dequeue_interval_seconds`. Dagster offers no setting for the first: setting that module
constant before the daemon starts is the only knob, and the daemon's loops run in this
process's threads, so it takes effect. On top of the periods, a request appended to a request
stream wakes the sensor loop at once (`requests.arrivals`) and a run queued by it wakes the
dequeue loop (`daemon.wakeup`), so neither waits for its period.
"""

import os

import click
import dagster as dg

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.compat.dagster import run_daemon, set_sensor_loop_seconds
from alphaswarm_orch.daemon import wakeup
from alphaswarm_orch.daemon.logs import quiet_routine_sensor_lines
from alphaswarm_orch.instance_pool import set_process_role
from alphaswarm_orch.launch import ForkserverRunLauncher
from alphaswarm_orch.launch.launcher import stop_forkserver
from alphaswarm_orch.requests.arrivals import RequestArrivals
from alphaswarm_orch.settings import Settings


@click.command(
    name="daemon",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
)
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def daemon_command(dagster_args: tuple[str, ...]) -> None:
    """Run dagster-daemon (`dagster-daemon run DAGSTER_ARGS`, e.g. -w workspace.yaml) with
    its sensor loop every ALPHASWARM_SENSOR_LOOP_SECONDS (default 1) instead of every 5 s,
    the request sensors evaluated at once when a request arrives or a kill switch holding
    them is cleared (else every 15 s), and one code server for the daemon's life."""
    with user_errors():
        settings = Settings.from_env()
    set_sensor_loop_seconds(settings.sensor_loop_seconds)
    set_process_role("daemon")
    quiet_routine_sensor_lines()
    wakeup.install()
    arrivals = None
    if settings.redis_url:
        arrivals = RequestArrivals(settings.redis_url, wakeup.wake_request_sensors).start()
    try:
        if os.environ.get("DAGSTER_HOME"):
            # The first run launched after a deploy should not wait for the forkserver's imports.
            with dg.DagsterInstance.get() as instance:
                if isinstance(instance.run_launcher, ForkserverRunLauncher):
                    instance.run_launcher.warm()
        run_daemon(dagster_args, prog_name="alphaswarm-orch daemon")
    finally:
        # The launcher's forkserver goes with the daemon (run workers are not its children
        # and go on: run monitoring of the next daemon resumes their runs if they die).
        stop_forkserver()
        if arrivals is not None:
            arrivals.stop()
