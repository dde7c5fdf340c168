"""TerraformRuntime jobs: plan, apply a saved plan by id, destroy; on the `terraform` queue."""

import dagster as dg

from alphaswarm_orch.defs.terraform.jobs import (
    terraform_apply_job,
    terraform_destroy_job,
    terraform_plan_job,
)
from alphaswarm_orch.defs.terraform.resources import terraform_resource
from alphaswarm_orch.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[terraform_plan_job, terraform_apply_job, terraform_destroy_job],
        resources={"terraform": terraform_resource(settings)},
    )
