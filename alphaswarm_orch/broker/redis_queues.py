"""How a Celery queue is laid out on Redis, for anything that counts or watches it.

kombu's Redis transport keeps one list per priority step: the bare queue name for step 0 and
`<queue>\\x06\\x16<step>` for the others. Counting only the bare key misses every message sent
with a non-zero priority (dagster-celery's default priority 5 lands in step 3).
"""

from __future__ import annotations

import redis

from alphaswarm_orch.compat.celery import PRIORITY_SEPARATOR, PRIORITY_STEPS


def queue_keys(queue: str, steps: list[int] = PRIORITY_STEPS) -> list[str]:
    """Every Redis list that holds messages of `queue`, highest-served (step 0) first."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in steps]


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in `queue`, across all its priority lists."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(pipe.execute())
