"""Steps running per light queue, as Redis lists KEDA can count (its Redis scaler reads LLEN).

Capacity is queued + running: a queue whose slots all hold sessions must not look idle. A
worker's pool process adds `<task id> <start time>` to `alphaswarm:queue:<queue>:running` when
it starts a step task and removes it when the task returns (celery signals,
control/metrics/running_lists.py). An entry whose worker was killed stays behind, so `prune`
removes entries older than PRUNE_AFTER_SECONDS whose step has no heartbeat; each
worker prunes its queues every PRUNE_EVERY_SECONDS, and the run loop forgets a step it declared
lost. A metrics scrape only reads: `live` counts what `prune` would keep.
"""

from __future__ import annotations

import time

import redis

from alphaswarm_orch.broker.keys import heartbeat_key, running_key

PRUNE_AFTER_SECONDS = 30.0
"""An entry this old without a heartbeat belongs to a dead worker (a step beats every second
once started; loading its job before the first beat takes well under this)."""
PRUNE_EVERY_SECONDS = PRUNE_AFTER_SECONDS / 2


def started(client: redis.Redis, queue: str, task_id: str) -> None:
    client.rpush(running_key(queue), f"{task_id} {time.time():.3f}")


def finished(client: redis.Redis, queue: str, task_id: str) -> None:
    """Remove every entry of `task_id` (a redelivered step may have left one)."""
    key = running_key(queue)
    for raw in client.lrange(key, 0, -1):
        if _entry(raw)[0] == task_id:
            client.lrem(key, 0, _text(raw))


def count(client: redis.Redis, queue: str) -> int:
    return int(client.llen(running_key(queue)))


def live(client: redis.Redis, queue: str, now: float | None = None) -> int:
    """How many entries `prune` would keep, read only."""
    entries, dead = _dead_entries(client, queue, now)
    return len(entries) - len(dead)


def prune(client: redis.Redis, queue: str, now: float | None = None) -> int:
    """Remove entries of dead workers; return how many remain."""
    key = running_key(queue)
    for raw in _dead_entries(client, queue, now)[1]:
        client.lrem(key, 0, _text(raw))
    return count(client, queue)


def _dead_entries(
    client: redis.Redis, queue: str, now: float | None
) -> tuple[list[bytes | str], list[bytes | str]]:
    """Every entry of the queue's list, and those older than PRUNE_AFTER_SECONDS whose step
    has no heartbeat."""
    now = time.time() if now is None else now
    entries = client.lrange(running_key(queue), 0, -1)
    parsed = [(raw, *_entry(raw)) for raw in entries]
    old = [(raw, task_id) for raw, task_id, since in parsed if now - since > PRUNE_AFTER_SECONDS]
    if not old:
        return entries, []
    beats = client.mget([heartbeat_key(task_id) for _raw, task_id in old])
    return entries, [raw for (raw, _id), beat in zip(old, beats, strict=True) if beat is None]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _entry(raw: bytes | str) -> tuple[str, float]:
    text = _text(raw)
    task_id, _, since = text.partition(" ")
    try:
        return task_id, float(since)
    except ValueError:
        return task_id, 0.0  # malformed: old enough to be checked against its heartbeat
