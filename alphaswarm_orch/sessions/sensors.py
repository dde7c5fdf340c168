"""`<family>_request_sensor`: session requests on the family's stream become runs.

A start request launches one run of `<family>_session_job` with run_key = request id; the
sensor also looks the request id up in the instance, so re-reading the stream (a restart
without its cursor, a duplicate delivery) never launches a second run. A stop request sets
the session's stop key. Session ids are single-use: a second start for a known session, or a
stop for an unknown one, is dead-lettered.

A start's RunRequest is built and checked (`requests.launchable`) while the stream is read,
so the cursor only passes a start whose run Dagster can create; any other start is
dead-lettered with the reason, and nothing the sensor logs carries a control character.
"""

from __future__ import annotations

import dagster as dg
import redis

from alphaswarm_orch.broker.keys import request_stream, session_registry, session_stop_key
from alphaswarm_orch.requests import Request, SessionStart, SessionStop, read_requests
from alphaswarm_orch.requests.hold import REQUEST_SENSOR_INTERVAL_SECONDS, kill_switch_hold
from alphaswarm_orch.requests.launchable import launched_job, log_batch, run_request_problem
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import REQUEST_ID_TAG, WORKLOAD_TAG, workload_tags


def session_run_request(family: str, start: SessionStart) -> dg.RunRequest:
    config = start.model_dump(exclude={"schema_version", "type"})
    return dg.RunRequest(
        run_key=start.request_id,
        run_config={"ops": {f"{family}_session": {"config": config}}},
        tags=workload_tags(
            family,
            queue=family,
            actor=start.actor,
            request_id=start.request_id,
            session_id=start.session_id,
        ),
    )


class SessionRegistry:
    """Which request started each session of a family (a Redis hash)."""

    def __init__(self, client: redis.Redis, family: str) -> None:
        self.client = client
        self.key = session_registry(family)

    def admit(self, request: Request) -> str | None:
        """Register a start (first request wins) or accept a stop of a known session; else
        the dead-letter reason. Called in stream order, so one batch sees its own starts."""
        if not isinstance(request, SessionStart | SessionStop):
            return f"{request.type} is not a session request"
        if isinstance(request, SessionStart) and self.client.hsetnx(
            self.key, request.session_id, request.request_id
        ):
            return None
        owner = self.client.hget(self.key, request.session_id)
        if isinstance(request, SessionStop):
            if owner is None:
                return (
                    f"unknown session {request.session_id!r}: no start request was accepted "
                    "for it; check the session id"
                )
            return None
        if owner is not None and owner.decode() != request.request_id:
            return (
                f"session {request.session_id!r} was already started by request "
                f"{owner.decode()!r}; session ids are single-use: start a new session id"
            )
        return None


def build_request_sensor(family: str, job: dg.JobDefinition) -> dg.SensorDefinition:
    name = f"{family}_request_sensor"

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=REQUEST_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {job.name} runs from {request_stream(family)}.",
    )
    def request_sensor(
        context: dg.SensorEvaluationContext, alphaswarm_settings: dg.ResourceParam[Settings]
    ) -> dg.SensorResult | dg.SkipReason:
        settings = alphaswarm_settings
        if settings.redis_url is None:
            return dg.SkipReason(
                f"no Redis configured: set ALPHASWARM_REDIS_URL to read {family} requests"
            )
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        try:
            return _evaluate(context, settings, client, family, name, job)
        finally:
            client.close()

    return request_sensor


def _evaluate(
    context: dg.SensorEvaluationContext,
    settings: Settings,
    client: redis.Redis,
    family: str,
    name: str,
    job: dg.JobDefinition,
) -> dg.SensorResult | dg.SkipReason:
    held = kill_switch_hold(client, settings, family, context.cursor, queue=family, source=name)
    if held is not None:
        return dg.SkipReason(held)

    registry = SessionRegistry(client, family)
    job = launched_job(context, job)

    def check(request: Request) -> str | None:
        if isinstance(request, SessionStart):
            try:
                problem = run_request_problem(job, session_run_request(family, request))
            except ValueError as exc:  # a tag value workload_tags refuses
                problem = str(exc)
            if problem is not None:
                return problem
        return registry.admit(request)

    batch = read_requests(client, family, context.cursor, check=check)
    run_requests: list[dg.RunRequest] = []
    seen: set[str] = set()
    for received in batch.requests:
        request = received.request
        if isinstance(request, SessionStop):
            client.set(session_stop_key(request.session_id), request.reason)
            context.log.info(f"stop requested for session {request.session_id}: {request.reason}")
            continue
        if not isinstance(request, SessionStart):
            continue
        if request.request_id in seen or _already_launched(context, family, request.request_id):
            continue
        seen.add(request.request_id)
        run_requests.append(session_run_request(family, request))
    log_batch(context.log, family, batch)
    return dg.SensorResult(run_requests=run_requests, cursor=batch.cursor)


def _already_launched(context: dg.SensorEvaluationContext, family: str, request_id: str) -> bool:
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(tags={WORKLOAD_TAG: family, REQUEST_ID_TAG: request_id}), limit=1
    )
    return bool(records)
