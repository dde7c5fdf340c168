"""The session job of a family (paper, hft): one run per session, one op on the family's queue."""

import dagster as dg
import redis

from alphaswarm_orch.control.kill_switch import KillSwitch
from alphaswarm_orch.ledger.db import engine_for
from alphaswarm_orch.ledger.refusals import record_refusal
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.requests.models import REQUEST_TYPES, SessionStart
from alphaswarm_orch.sessions.loop import SessionLoop, sigterm_stops
from alphaswarm_orch.sessions.simulator import PaperSimulator
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import workload_tags

STATUS_BY_STOP = {"stop_request": "stopped", "shutdown": "interrupted", "kill_switch": "killed"}


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
    """`<family>_session_job`: consumes `ticks:<session>` until stop, kill switch or SIGTERM."""
    source = f"{family}_session"

    @dg.op(name=source, tags=queue_tags(family))
    def session_op(context: dg.OpExecutionContext, config: SessionConfig) -> dict[str, object]:
        """Run the session loop with the paper simulator as the tick handler."""
        settings = Settings.from_env()
        start = start_request(family, config)
        kill_switch = KillSwitch.from_settings(settings)
        where = f"step {context.op_handle} of run {context.run_id}"
        kill_switch.refuse_step(
            settings,
            source=source,
            where=where,
            queue=family,
            run_id=context.run_id,
            request_id=start.request_id,
        )
        redis_url = settings.require_redis(f"the {family} session")
        simulator = PaperSimulator(engine_for(settings.ledger_url), family, start)
        client = redis.Redis.from_url(redis_url)  # connects lazily: nothing to leak here
        try:
            loop = SessionLoop(client, start.session_id, family, kill_switch, simulator.handle)
            context.log.info(f"session {start.session_id}: consuming {loop.stream}")
            with sigterm_stops(loop):
                outcome = loop.run()
        finally:
            client.close()
            simulator.conn.close()
        simulator.close(STATUS_BY_STOP[outcome.stopped_by])
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
            record_refusal(
                settings,
                source=source,
                reason=str(refusal),
                queue=family,
                run_id=context.run_id,
                request_id=start.request_id,
            )
            raise refusal
        context.add_output_metadata(summary)
        return summary

    @dg.job(
        name=f"{family}_session_job",
        tags=workload_tags(family),
        description=f"One {family} session: consume its tick stream until stopped.",
    )
    def session_job() -> None:
        session_op()

    return session_job
