"""TerraformRuntime jobs (plan, apply a saved plan by id, destroy) and their request sensor."""

import dagster as dg

from alphaswarm_orch.defs.terraform.jobs import (
    terraform_apply_job,
    terraform_destroy_job,
    terraform_plan_job,
)
from alphaswarm_orch.defs.terraform.resources import terraform_resource
from alphaswarm_orch.defs.terraform.sensors import terraform_request_sensor
from alphaswarm_orch.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[terraform_plan_job, terraform_apply_job, terraform_destroy_job],
        sensors=[terraform_request_sensor],
        resources={"terraform": terraform_resource(settings)},
    )
