"""The session job of a family (paper, hft): one run per session, one op on the family's queue.

The op owns the session for as long as it runs (lease.py). When it stops for a reason that
is not the session's end (its worker is stopping, SIGTERM, its lease was taken over), it
releases the session and raises RetryRequested: the run re-submits the step to the family's
queue and whichever worker takes it resumes the session, claiming its pending ticks. The
op's RetryPolicy does the same when the executor finds the step's worker gone (SIGKILL, node
loss, OOM). Both allow SESSION_RETRIES attempts, i.e. without a practical limit. Errors and
the kill switch end the session for good (`dg.Failure(allow_retries=False)`).
"""

import dagster as dg
import redis

from alphaswarm_orch.broker.keys import worker_handoff_key
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.guard import record_refusal_once, refuse_while_killed
from alphaswarm_orch.ledger.db import ledger_engine
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.requests.models import REQUEST_TYPES, SessionStart
from alphaswarm_orch.sessions.handoff import current_owner
from alphaswarm_orch.sessions.lease import SessionLease
from alphaswarm_orch.sessions.loop import HANDING_ON, SessionLoop, SessionOutcome, sigterm_stops
from alphaswarm_orch.sessions.simulator import PaperSimulator
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import workload_tags
from alphaswarm_orch.text import sanitize

STATUS_BY_STOP = {
    "stop_request": "stopped",
    "kill_switch": "killed",
    "error": "failed",
    "interrupted": "stopped",
}
"""The session's status after its step stops; other stops hand it on (`handing_off`)."""

SESSION_RETRIES = 1_000_000
"""Handoffs and worker losses a session survives: in effect, any number."""

SESSION_RETRY_POLICY = dg.RetryPolicy(max_retries=SESSION_RETRIES)


class SessionConfig(dg.Config):
    """The start request's fields (the sensor copies them from the request)."""

    request_id: str
    actor: str
    session_id: str
    symbols: list[str]
    starting_cash: float = 100_000.0
    fee_bps: float = 0.0
    max_position: float = 1e9


def start_request(family: str, config: SessionConfig) -> SessionStart:
    """Re-validate the config as the family's start request (run config can be hand-edited)."""
    start_type = REQUEST_TYPES[family][0]
    return start_type(schema_version=1, type=f"{family}.start", **config.model_dump())


def build_session_job(family: str) -> dg.JobDefinition:
    """`<family>_session_job`: consumes `ticks:<session>` until stop, kill switch or error,
    moving to another worker whenever its own stops or vanishes."""
    source = f"{family}_session"

    @dg.op(name=source, tags=queue_tags(family), retry_policy=SESSION_RETRY_POLICY)
    def session_op(
        context: dg.OpExecutionContext,
        config: SessionConfig,
        alphaswarm_settings: dg.ResourceParam[Settings],
    ) -> dict[str, object]:
        """Run the session loop with the paper simulator as the tick handler."""
        try:
            return _run_session(context, family, source, config, alphaswarm_settings)
        except (dg.RetryRequested, dg.Failure):
            raise
        except Exception as exc:
            raise dg.Failure(
                description=f"session {config.session_id} failed: {exc}", allow_retries=False
            ) from exc

    @dg.job(
        name=f"{family}_session_job",
        tags=workload_tags(family),
        description=f"One {family} session: consume its tick stream until stopped.",
    )
    def session_job() -> None:
        session_op()

    return session_job


def _run_session(
    context: dg.OpExecutionContext,
    family: str,
    source: str,
    config: SessionConfig,
    settings: Settings,
) -> dict[str, object]:
    start = start_request(family, config)
    where = f"step {context.op_handle} of run {context.run_id}"
    refuse_while_killed(
        settings,
        source=source,
        where=where,
        queue=family,
        run_id=context.run_id,
        request_id=start.request_id,
    )
    redis_url = settings.require_redis(f"the {family} session")
    owner, node = current_owner()
    simulator = PaperSimulator(ledger_engine(settings), family, start)
    client = redis.Redis.from_url(redis_url)  # connects lazily: nothing to leak here

    def take_over(lease: SessionLease) -> None:
        found = simulator.take_over(lease.fence, owner, context.run_id)
        previous = f" after {found.previous} on {found.previous_worker}" if found.previous else ""
        lost = " (its previous worker was lost)" if found.lost else ""
        context.log.info(
            f"session {start.session_id}: {found.status} on {owner} with fence "
            f"{lease.fence}{previous}{lost}"
        )

    loop = SessionLoop(
        client,
        start.session_id,
        family,
        KillSwitch(client, settings.kill_switch_key),
        simulator.handle,
        worker=owner,
        handoff_key=worker_handoff_key(node) if node else None,
        on_acquire=take_over,
        fence_floor=simulator.stored_fence,
        on_stop=lambda outcome: record_outcome(simulator, outcome),
    )
    context.log.info(f"session {start.session_id}: waiting for its lease, then {loop.stream}")
    try:
        with sigterm_stops(loop):
            outcome = loop.run()
        return _finish(context, family, source, start, simulator, outcome, settings, where, client)
    finally:
        client.close()


def record_outcome(simulator: PaperSimulator, outcome: SessionOutcome) -> None:
    """The session's state when its step's loop stops, written as its owner (the lease is
    still held): handing_off (it continues elsewhere), stopped, killed or failed; a
    superseded step only leaves a note."""
    if outcome.stopped_by == "lease_lost":
        simulator.record_event("superseded", outcome.reason)
    elif outcome.fence:
        status = STATUS_BY_STOP.get(outcome.stopped_by, "handing_off")
        simulator.close(status, sanitize(outcome.reason, 2000))


def _finish(
    context: dg.OpExecutionContext,
    family: str,
    source: str,
    start: SessionStart,
    simulator: PaperSimulator,
    outcome: SessionOutcome,
    settings: Settings,
    where: str,
    client: redis.Redis,
) -> dict[str, object]:
    if outcome.stopped_by in HANDING_ON:
        context.log.info(f"session {start.session_id}: handing on ({outcome.reason})")
        raise dg.RetryRequested(max_retries=SESSION_RETRIES, seconds_to_wait=0)
    summary: dict[str, object] = {
        "stopped_by": outcome.stopped_by,
        "reason": outcome.reason,
        "resumable": outcome.resumable,
        "ticks": outcome.ticks,
        "invalid_ticks": outcome.invalid_ticks,
        "equity": simulator.equity,
        "realized_pnl": simulator.realized,
    }
    refusal = outcome.refusal(where)
    if refusal is not None:
        record_refusal_once(
            client,
            settings,
            f"{refusal.key}|{refusal.reason}",  # the episode as the loop read it
            source=source,
            reason=str(refusal),
            queue=family,
            run_id=context.run_id,
            request_id=start.request_id,
        )
        raise dg.Failure(description=str(refusal), allow_retries=False) from refusal
    context.add_output_metadata(summary)
    return summary
