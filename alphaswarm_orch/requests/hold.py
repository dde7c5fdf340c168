"""Request sensors wait while the kill switch is set; a wait with requests pending is a refusal."""

from __future__ import annotations

import redis

from alphaswarm_orch.broker.keys import request_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.guard import clear_episode, record_refusal_once, refusal_recorded
from alphaswarm_orch.settings import Settings

REQUEST_SENSOR_INTERVAL_SECONDS = 1
"""Request sensors evaluate on every loop of dagster-daemon's sensor daemon (Dagster's loop is
5 s): with a 5 s minimum interval a request could wait two loops (up to 10 s) before its run is
created. `alphaswarm-orch daemon` evaluates them on every loop whatever the interval
(`daemon.wakeup`), also on the loop a request's arrival wakes. 0 is not "none" to Dagster: it
reads as its 30 s default."""


def kill_switch_hold(
    client: redis.Redis,
    settings: Settings,
    family: str,
    cursor: str | None,
    *,
    queue: str,
    source: str,
) -> str | None:
    """The skip reason while a switch for `queue` is engaged (fail closed), else None.

    The refusal is recorded in the ledger once per episode of the switch (until it is cleared,
    or set to another value), and only once requests are waiting past `cursor`, so a sensor
    that skips every second writes one row per incident, not one per tick. The episode
    recorded is kept in Redis (`guard.record_refusal_once`), so a restarted daemon does not
    record it again.
    """
    state = KillSwitch(client, settings.kill_switch_key).state(queue)
    if state is None:
        clear_episode(client, source=source, queue=queue)
        return None
    reason = f"kill switch {state.key!r} is set ({state.reason}): {family} requests wait"
    if refusal_recorded(client, state.episode, source=source, queue=queue):
        return reason
    start = "-" if cursor is None else f"({cursor}"
    try:
        waiting = client.xrange(request_stream(family), min=start, max="+", count=1)
    except redis.RedisError:
        return reason  # Redis unreadable: nothing can be launched, nor known to wait
    if waiting:
        record_refusal_once(
            client, settings, state.episode, source=source, reason=reason, queue=queue
        )
    return reason
