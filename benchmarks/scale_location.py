"""The code location of the queued-runs curve (benchmarks/scale.py): a one-op job and a
sensor that queues a burst of its runs at once.

The benchmark writes `<batch>:<count>` to BURST_KEY; the sensor's next tick returns `count`
run requests tagged with the batch (run keys `<batch>-<i>`, so a burst is queued once). The
job runs in its run process (in-process executor): the curve measures the run queue and the
launcher, not steps.
"""

from __future__ import annotations

import os

import dagster as dg
import redis

BURST_KEY = "alphaswarm:bench:burst"
BATCH_TAG = "alphaswarm/bench-batch"


@dg.op
def noop() -> None:
    """Nothing: the run's cost is its launch and its process."""


@dg.job(executor_def=dg.in_process_executor)
def noop_job() -> None:
    noop()


@dg.sensor(job=noop_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def burst_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | None:
    client = redis.Redis.from_url(os.environ["ALPHASWARM_REDIS_URL"])
    try:
        burst = client.get(BURST_KEY)
    finally:
        client.close()
    if burst is None or burst.decode() == context.cursor:
        return None
    batch, count = burst.decode().split(":")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{batch}-{i}", tags={BATCH_TAG: batch})
            for i in range(int(count))
        ],
        cursor=burst.decode(),
    )


defs = dg.Definitions(jobs=[noop_job], sensors=[burst_sensor])
