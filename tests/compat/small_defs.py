"""A one-op job: a code location a test's code server loads quickly."""

import dagster as dg


@dg.op
def noop() -> None:
    pass


@dg.job
def small_job() -> None:
    noop()


defs = dg.Definitions(jobs=[small_job])
