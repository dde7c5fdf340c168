"""`terraform_request_sensor`: terraform requests on their Redis stream become runs.

One request, one run (run_key = request id): plan -> terraform_plan_job, apply (a plan id) ->
terraform_apply_job, destroy -> terraform_destroy_job. Requests naming a workspace that is not
allow-listed, or passing variables to an apply (a saved plan's variables are fixed), are
dead-lettered with the reason, and so is a request whose run Dagster could not create
(`requests.launchable`), before the cursor passes it. While the kill switch is set, requests
wait on the stream.
"""

from collections.abc import Callable
from functools import partial

import dagster as dg
import redis

from alphaswarm_orch.broker.keys import request_stream
from alphaswarm_orch.defs.terraform.jobs import (
    QUEUE,
    terraform_apply_job,
    terraform_destroy_job,
    terraform_plan_job,
)
from alphaswarm_orch.requests import Request, TerraformRequest, read_requests
from alphaswarm_orch.requests.hold import REQUEST_SENSOR_INTERVAL_SECONDS, kill_switch_hold
from alphaswarm_orch.requests.launchable import launched_job, log_batch, run_request_problem
from alphaswarm_orch.settings import TERRAFORM_ROOT, TERRAFORM_WORKSPACES, Settings
from alphaswarm_orch.tags import workload_tags
from alphaswarm_orch.terraform import WorkspaceRefused, parse_workspace_list
from alphaswarm_orch.terraform.config import check_allowed

FAMILY = "terraform"
SENSOR_NAME = "terraform_request_sensor"


def terraform_run_request(request: TerraformRequest) -> dg.RunRequest:
    """The run a valid, allow-listed terraform request launches."""
    return _job_and_run_request(request)[1]


def _job_and_run_request(request: TerraformRequest) -> tuple[dg.JobDefinition, dg.RunRequest]:
    if request.action == "apply":
        job, op = terraform_apply_job, "terraform_apply"
        config = {"plan_id": request.plan_id, "workspace": request.workspace}
    else:
        job = terraform_plan_job if request.action == "plan" else terraform_destroy_job
        op = f"terraform_{request.action}"
        config = {"workspace": request.workspace, "variables": request.variables}
    return job, dg.RunRequest(
        run_key=request.request_id,
        job_name=job.name,
        run_config={"ops": {op: {"config": config}}},
        tags=workload_tags(FAMILY, actor=request.actor, request_id=request.request_id),
    )


def request_problem(
    request: Request,
    workspaces: tuple[str, ...],
    jobs: Callable[[dg.JobDefinition], dg.JobDefinition] = lambda job: job,
) -> str | None:
    """Why `request` cannot run here (a dead-letter reason), or None; `jobs` maps a job to the
    one run creation uses (`launchable.launched_job`)."""
    if not isinstance(request, TerraformRequest):
        return f"{request.type} is not a terraform request"
    try:
        check_allowed(request.workspace, workspaces)
    except WorkspaceRefused as exc:
        return str(exc)
    if request.action == "apply" and request.variables:
        return (
            "an apply takes no variables: they were fixed when the plan was made. Plan again "
            "with the new variables and apply that plan id."
        )
    try:
        job, run_request = _job_and_run_request(request)
    except ValueError as exc:  # a tag value workload_tags refuses
        return str(exc)
    return run_request_problem(jobs(job), run_request)


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[terraform_plan_job, terraform_apply_job, terraform_destroy_job],
    minimum_interval_seconds=REQUEST_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Launches terraform plan/apply/destroy runs from {request_stream(FAMILY)}.",
)
def terraform_request_sensor(
    context: dg.SensorEvaluationContext, alphaswarm_settings: dg.ResourceParam[Settings]
) -> dg.SensorResult | dg.SkipReason:
    settings = alphaswarm_settings
    if settings.redis_url is None:
        return dg.SkipReason("no Redis configured: set ALPHASWARM_REDIS_URL to read requests")
    workspaces = parse_workspace_list(settings.terraform_workspaces)
    if not workspaces:
        return dg.SkipReason(
            f"no terraform workspace is allow-listed: set {TERRAFORM_WORKSPACES} for the code "
            "location (and the terraform workers) to accept terraform requests"
        )
    if settings.terraform_root is None:
        # Run creation resolves the terraform resource's config here: every run would fail.
        return dg.SkipReason(
            f"{TERRAFORM_ROOT} is not set for the code location: terraform runs cannot be created "
            "(their resource reads it); requests wait on the stream"
        )
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        held = kill_switch_hold(
            client, settings, FAMILY, context.cursor, queue=QUEUE, source=SENSOR_NAME
        )
        if held is not None:
            return dg.SkipReason(held)
        batch = read_requests(
            client,
            FAMILY,
            context.cursor,
            check=lambda r: request_problem(r, workspaces, partial(launched_job, context)),
        )
    finally:
        client.close()
    log_batch(context.log, FAMILY, batch)
    # Dagster skips a run_key it has launched before; a request repeated within one batch
    # is dropped here.
    unique: dict[str, TerraformRequest] = {}
    for received in batch.requests:
        if isinstance(received.request, TerraformRequest):
            unique.setdefault(received.request.request_id, received.request)
    return dg.SensorResult(
        run_requests=[terraform_run_request(request) for request in unique.values()],
        cursor=batch.cursor,
    )
