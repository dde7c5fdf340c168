"""A small code location for the launcher and daemon tests: in-process jobs and a 1 s sensor.

Setting ALPHASWARM_TEST_BROKEN_CODE makes the module fail to import, as a deploy with broken
code would: the run worker sees the launching process's environment, so a test sets it
before launching.
"""

import os
import time

import dagster as dg

BROKEN_CODE = "ALPHASWARM_TEST_BROKEN_CODE"

if os.environ.get(BROKEN_CODE):
    raise ImportError(f"tests.launch.jobs fails to load on purpose ({BROKEN_CODE} is set)")


@dg.op
def hello() -> str:
    return f"hello from pid {os.getpid()}"


@dg.job(executor_def=dg.in_process_executor)
def launch_hello_job() -> None:
    hello()


@dg.op
def wait_for_termination() -> None:
    """Work that only ends when the run is terminated (the op is interrupted)."""
    while True:
        time.sleep(0.05)


@dg.job(executor_def=dg.in_process_executor)
def launch_wait_job() -> None:
    wait_for_termination()


@dg.sensor(
    job=launch_hello_job,
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def every_second_sensor() -> dg.SkipReason:
    return dg.SkipReason("evaluated to be counted; launches nothing")


defs = dg.Definitions(jobs=[launch_hello_job, launch_wait_job], sensors=[every_second_sensor])
