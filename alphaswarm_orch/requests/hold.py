"""Request sensors wait while the kill switch is set; a wait with requests pending is a refusal."""

from __future__ import annotations

import contextlib

import redis

from alphaswarm_orch.broker.keys import request_hold_key, request_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.guard import clear_episode, record_refusal_once, refusal_recorded
from alphaswarm_orch.settings import Settings

REQUEST_SENSOR_INTERVAL_SECONDS = 1
"""Request sensors evaluate on every loop of dagster-daemon's sensor daemon (Dagster's loop is
5 s): with a 5 s minimum interval a request could wait two loops (up to 10 s) before its run is
created. `alphaswarm-orch daemon` ignores it: it evaluates them when a request arrives or a
kill switch that held them is cleared, else every 15 s (`daemon.wakeup.request_sensor_due`).
0 is not "none" to Dagster: it reads as its 30 s default."""


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

    While held, `request_hold_key(family)` names the switch's key: the daemon's request
    listener wakes the sensors as soon as that key is gone (`requests.arrivals`), so requests
    held launch within about a second of the switch being cleared, not on the fallback period.
    """
    state = KillSwitch(client, settings.kill_switch_key).state(queue)
    if state is None:
        clear_episode(client, source=source, queue=queue)
        client.delete(request_hold_key(family))
        return None
    reason = f"kill switch {state.key!r} is set ({state.reason}): {family} requests wait"
    with contextlib.suppress(redis.RedisError):  # unwritable: the fallback period retries
        client.set(request_hold_key(family), state.key)
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
