"""Plan, apply (a saved plan, by id) and destroy jobs on the `terraform` queue.

The plan id is the plan run's id: whoever asked for the plan finds it from the run (the
sensor's run_key is the request id) and asks for an apply of exactly that plan.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from alphaswarm_orch.defs.terraform.resources import TerraformResource
from alphaswarm_orch.guard import refuse_step, run_ended_check
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import REQUEST_ID_TAG, workload_tags
from alphaswarm_orch.terraform import ApplyResult, PlanSummary, TerraformError

QUEUE = "terraform"


class PlanConfig(dg.Config):
    workspace: str = Field(description="An allow-listed workspace name.")
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values for variables the workspace declares."
    )


class ApplyConfig(dg.Config):
    plan_id: str = Field(description="The id terraform_plan_job reported (its run id).")
    workspace: str | None = Field(
        default=None, description="If given, the plan must have been made for this workspace."
    )


def _refuse_while_killed(context: dg.OpExecutionContext, settings: Settings, where: str) -> None:
    """Apply and destroy change infrastructure: refused (and recorded) while the switch is set."""
    refuse_step(
        context,
        settings,
        where=where,
        queue=QUEUE,
        request_id=context.run.tags.get(REQUEST_ID_TAG),
    )


def _summary_metadata(summary: PlanSummary) -> dict[str, Any]:
    return {"add": summary.add, "change": summary.change, "destroy": summary.destroy}


def _applied(context: dg.OpExecutionContext, result: ApplyResult) -> dict[str, Any]:
    context.add_output_metadata(
        {
            "plan_id": result.plan_id,
            "workspace": result.workspace,
            **_summary_metadata(result.summary),
            "outputs": dg.MetadataValue.json(result.outputs),
            "state_serial": result.state_serial,
        }
    )
    return {
        "plan_id": result.plan_id,
        "workspace": result.workspace,
        "summary": _summary_metadata(result.summary),
        "outputs": result.outputs,
    }


@contextmanager
def _terraform_failures() -> Iterator[None]:
    """A refused or failed terraform command fails the step without retries: the message
    says what to fix, and a retry would meet the same refusal."""
    try:
        yield
    except TerraformError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


@dg.op(tags=queue_tags(QUEUE), out=dg.Out(dict, description="Plan id, summary and plan JSON."))
def terraform_plan(
    context: dg.OpExecutionContext, config: PlanConfig, terraform: TerraformResource
) -> dict[str, Any]:
    """Plan a workspace and save the plan (binary and redacted JSON) under this run's id."""
    runtime = terraform.runtime(on_line=context.log.info)
    with _terraform_failures():
        saved = runtime.plan(
            config.workspace,
            config.variables,
            plan_id=context.run_id,
            cancel=run_ended_check(context.instance, context.run_id),
        )
    context.add_output_metadata(
        {
            "plan_id": saved.plan_id,
            "workspace": saved.workspace,
            **_summary_metadata(saved.summary),
            "plan_json": dg.MetadataValue.path(str(saved.json_file)),
        }
    )
    return {
        "plan_id": saved.plan_id,
        "workspace": saved.workspace,
        "plan_file": str(saved.plan_file),
        "summary": _summary_metadata(saved.summary),
        "plan": saved.plan_json(),
    }


@dg.op(tags=queue_tags(QUEUE), out=dg.Out(dict, description="Summary and redacted outputs."))
def terraform_apply(
    context: dg.OpExecutionContext,
    config: ApplyConfig,
    terraform: TerraformResource,
    alphaswarm_settings: dg.ResourceParam[Settings],
) -> dict[str, Any]:
    """Apply exactly the saved plan `plan_id`; refused if stale, applied before, or killed."""
    _refuse_while_killed(context, alphaswarm_settings, "terraform apply")
    runtime = terraform.runtime(on_line=context.log.info)
    with _terraform_failures():
        result = runtime.apply(
            config.plan_id,
            workspace=config.workspace,
            applied_by=context.run_id,
            cancel=run_ended_check(context.instance, context.run_id),
        )
    return _applied(context, result)


@dg.op(tags=queue_tags(QUEUE), out=dg.Out(dict, description="Summary and redacted outputs."))
def terraform_destroy(
    context: dg.OpExecutionContext,
    config: PlanConfig,
    terraform: TerraformResource,
    alphaswarm_settings: dg.ResourceParam[Settings],
) -> dict[str, Any]:
    """Destroy everything a workspace manages (a destroy plan under this run's id, applied)."""
    _refuse_while_killed(context, alphaswarm_settings, "terraform destroy")
    runtime = terraform.runtime(on_line=context.log.info)
    with _terraform_failures():
        result = runtime.destroy(
            config.workspace,
            config.variables,
            plan_id=context.run_id,
            cancel=run_ended_check(context.instance, context.run_id),
        )
    return _applied(context, result)


@dg.job(tags=workload_tags("terraform"), description="Plan an allow-listed terraform workspace.")
def terraform_plan_job() -> None:
    terraform_plan()


@dg.job(tags=workload_tags("terraform"), description="Apply a saved terraform plan by its id.")
def terraform_apply_job() -> None:
    terraform_apply()


@dg.job(tags=workload_tags("terraform"), description="Destroy an allow-listed workspace.")
def terraform_destroy_job() -> None:
    terraform_destroy()
