"""Build a workflow spec into a Dagster job: one op per step, wired by `depends_on`.

Light steps run their registry function on their light queue; dispatch steps run on the
`workflows` queue and wait there for the executor's result. Steps pass no values to each
other (only ordering); each step's result is recorded as output metadata.
"""

import json
from typing import Any

import dagster as dg

from alphaswarm_orch.guard import refuse_step, run_ended_check
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import workload_tags
from alphaswarm_orch.workflows.dispatch import DispatchClient, DispatchError, RemoteTaskError
from alphaswarm_orch.workflows.spec import WORKFLOWS_QUEUE, DispatchSpec, StepSpec, WorkflowSpec
from alphaswarm_orch.workflows.steps import LIGHT_STEPS, LightStepFailed

TRIGGER_RUN_TAG = "alphaswarm/trigger_run"
"""On a run started by an `after` trigger: the upstream run that succeeded."""


def job_name(spec: WorkflowSpec) -> str:
    return f"workflows_{spec.name}_job"


def build_job(spec: WorkflowSpec, settings: Settings) -> dg.JobDefinition:
    ops = {step.name: _build_op(spec, step, settings) for step in spec.steps}
    graph = dg.GraphDefinition(
        name=f"workflows_{spec.name}",
        node_defs=list(ops.values()),
        dependencies={
            dg.NodeInvocation(ops[step.name].name, alias=step.name): {
                dep: dg.DependencyDefinition(dep, "result") for dep in step.depends_on
            }
            for step in spec.steps
        },
    )
    return graph.to_job(
        name=job_name(spec),
        description=f"{spec.description or 'Workflow ' + spec.name} (spec: {spec.source})",
        tags=workload_tags("workflow", workflow=spec.name),
    )


def build_schedule(spec: WorkflowSpec, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The spec's cron schedule, running from load: the spec author asked for it."""
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=spec.schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_trigger_sensor(
    spec: WorkflowSpec, job: dg.JobDefinition, upstream: dg.JobDefinition
) -> dg.SensorDefinition:
    """Run `job` once per successful run of `upstream` (run_key = the upstream run id)."""

    @dg.run_status_sensor(
        name=f"workflows_{spec.name}_after_{spec.after}_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[upstream],
        request_job=job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} when {upstream.name} succeeds.",
    )
    def _sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest:
        upstream_run = context.dagster_run.run_id
        return dg.RunRequest(run_key=upstream_run, tags={TRIGGER_RUN_TAG: upstream_run})

    return _sensor


def _build_op(spec: WorkflowSpec, step: StepSpec, settings: Settings) -> dg.OpDefinition:
    # Op definition names are unique per code location; the node keeps the step's name.
    name = f"workflows_{spec.name}__{step.name}"
    ins = {dep: dg.In(dg.Nothing) for dep in step.depends_on}
    if step.dispatch is not None:
        return _dispatch_op(name, ins, step, step.dispatch, settings)
    return _light_op(name, ins, step)


def _light_op(name: str, ins: dict[str, dg.In], step: StepSpec) -> dg.OpDefinition:
    light = LIGHT_STEPS[step.op or ""]
    params = light.params.model_validate(step.params)

    @dg.op(
        name=name,
        ins=ins,
        out=dg.Out(dg.Nothing),
        tags=queue_tags(step.queue),
        description=step.description or f"Light step `{step.op}`.",
    )
    def _op(context: dg.OpExecutionContext) -> None:
        try:
            result = light.run(context.log, params)
        except LightStepFailed as exc:
            raise dg.Failure(description=str(exc)) from exc
        if result is not None:
            context.add_output_metadata({"result": _json_metadata(result)})

    return _op


def _dispatch_op(
    name: str, ins: dict[str, dg.In], step: StepSpec, target: DispatchSpec, settings: Settings
) -> dg.OpDefinition:
    @dg.op(
        name=name,
        ins=ins,
        out=dg.Out(dg.Nothing),
        tags=queue_tags(WORKFLOWS_QUEUE),
        description=step.description
        or f"Dispatch `{target.task}` to the `{target.queue}` executor queue and wait.",
    )
    def _op(context: dg.OpExecutionContext) -> None:
        def sent(task_id: str) -> None:
            context.log.info(f"sent {target.task!r} to {target.queue!r} as task {task_id}")

        where = f"workflow step {step.name!r} (dispatch to {target.queue!r})"
        with DispatchClient.from_settings(settings, where) as client:
            # No heavy task is sent while the global switch or its target queue's is set.
            refuse_step(
                context,
                settings,
                where=f"dispatch of {target.task!r} to {target.queue!r}",
                queue=target.queue,
            )
            try:
                done = client.run(
                    target.task,
                    target.queue,
                    target.args,
                    target.kwargs,
                    timeout_seconds=target.timeout_seconds,
                    cancelled=run_ended_check(context.instance, context.run_id),
                    on_sent=sent,
                )
            except DispatchError as exc:
                metadata: dict[str, Any] = {"task_id": exc.task_id, "queue": target.queue}
                if isinstance(exc, RemoteTaskError):
                    metadata["remote_exception"] = exc.exc_type
                    metadata["remote_traceback"] = dg.MetadataValue.text(exc.remote_traceback)
                raise dg.Failure(description=str(exc), metadata=metadata) from exc
        context.add_output_metadata(
            {
                "task_id": done.task_id,
                "task": target.task,
                "queue": target.queue,
                "result": _json_metadata(done.result),
            }
        )

    return _op


def _json_metadata(value: Any) -> dg.MetadataValue:
    if isinstance(value, dict | list):
        return dg.MetadataValue.json(value)
    return dg.MetadataValue.text(json.dumps(value, default=str))
