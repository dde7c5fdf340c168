"""A two-queue job that demonstrates execution and routing end to end."""

import dagster as dg

from alphaswarm_orch.defs.smoke.jobs import smoke_route_job
from alphaswarm_orch.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(jobs=[smoke_route_job])
