"""The run guard: the one answer to "has this run ended?" and "may this work start?".

Every op that waits on something outside Dagster (terraform, Airbyte, a dispatched task), the
executor's run loop and its workers ask `run_ended`. An op refuses work under the kill switch
through `refuse_while_killed` (or `refuse_step` in an op body), which reads the switch under
its fail-closed rule (`kill_switch.engaged_states`); ops and request sensors record their
refusals in the ledger through `record_refusal_once`: once per episode of the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import dagster as dg
import redis

from alphaswarm_orch.broker.keys import refusal_episode_key
from alphaswarm_orch.broker.kill_switch import KillSwitch, KillSwitchEngaged
from alphaswarm_orch.settings import Settings

RUN_EPISODE_TTL_SECONDS = 24 * 60 * 60
"""How long the episode recorded for one run's refusal is kept (runs refuse within minutes)."""


def run_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run is being terminated (CANCELING) or has ended (CANCELED, SUCCESS,
    FAILURE).

    A run the instance does not know counts as ended: fail closed. Work for a run that was
    deleted (or never stored) has nobody to report to and nobody to stop it, so it stops
    rather than going on unobserved.
    """
    run = instance.get_run_by_id(run_id)
    return run is None or run.status == dg.DagsterRunStatus.CANCELING or run.is_finished


def run_ended_check(instance: dg.DagsterInstance, run_id: str) -> Callable[[], bool]:
    """`run_ended` for this run, as the callable the waits poll."""
    return lambda: run_ended(instance, run_id)


def refusal_recorded(
    client: redis.Redis, episode: str, *, source: str, queue: str, run_id: str | None = None
) -> bool:
    """Whether `source` already recorded a refusal for this kill-switch `episode` (for
    `run_id`, when given). False when that cannot be read: a refusal is never lost."""
    try:
        recorded = client.get(refusal_episode_key(source, queue, run_id))
    except redis.RedisError:
        return False
    return recorded == episode.encode()


def record_refusal_once(
    client: redis.Redis,
    settings: Settings,
    episode: str,
    *,
    source: str,
    reason: str,
    queue: str,
    run_id: str | None = None,
    request_id: str | None = None,
) -> None:
    """Write the refusal to the ledger unless this episode was recorded already.

    The episode is kept in Redis (`refusal_episode_key`): for a sensor until the switch is
    cleared (`clear_episode`), for a run's refusal for a day. When Redis cannot be read or
    written the refusal is recorded anyway: a duplicate row is better than a lost refusal.
    Raises LedgerUnavailable when the ledger cannot be written.
    """
    if refusal_recorded(client, episode, source=source, queue=queue, run_id=run_id):
        return
    # Imported here: the ledger brings SQLAlchemy and Alembic, which worker processes (they
    # import this module for `run_ended`) only need once something is refused.
    from alphaswarm_orch.ledger.refusals import record_refusal

    record_refusal(
        settings, source=source, reason=reason, queue=queue, run_id=run_id, request_id=request_id
    )
    ttl = None if run_id is None else RUN_EPISODE_TTL_SECONDS
    with contextlib.suppress(redis.RedisError):  # at worst the next refusal is recorded again
        client.set(refusal_episode_key(source, queue, run_id), episode, ex=ttl)


def clear_episode(client: redis.Redis, *, source: str, queue: str) -> None:
    """The switch is clear: the next time it is set is a new episode for `source`."""
    client.delete(refusal_episode_key(source, queue))


def refuse_while_killed(
    settings: Settings,
    *,
    source: str,
    where: str,
    queue: str,
    run_id: str | None = None,
    request_id: str | None = None,
) -> None:
    """Raise KillSwitchEngaged, after recording the refusal, if a switch that applies to
    `queue` is set or cannot be read (fail closed). Works under any executor."""
    switch = KillSwitch.from_settings(settings)
    try:
        state = switch.state(queue)
        if state is None:
            return
        refusal = KillSwitchEngaged(state.key, state.reason, where)
        record_refusal_once(
            switch.client,
            settings,
            state.episode,
            source=source,
            reason=str(refusal),
            queue=queue,
            run_id=run_id,
            request_id=request_id,
        )
        raise refusal
    finally:
        switch.client.close()


def refuse_step(
    context: dg.OpExecutionContext,
    settings: Settings,
    *,
    where: str,
    queue: str,
    request_id: str | None = None,
) -> None:
    """`refuse_while_killed` for an op body: the refusal fails the step without retries (a
    retry would meet the same switch)."""
    try:
        refuse_while_killed(
            settings,
            source=context.op_def.name,
            where=where,
            queue=queue,
            run_id=context.run_id,
            request_id=request_id,
        )
    except KillSwitchEngaged as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
