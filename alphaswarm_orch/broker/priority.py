"""Step priority on Redis: a higher `dagster-celery/priority` runs first.

kombu's Redis transport keeps one list per priority level and serves level 0 first, so the
number a Celery message carries means "lower runs first". Stock dagster-celery sends the
Dagster priority unchanged and so runs higher-priority steps *later* on Redis. This module is
the one place that turns the Dagster priority into the Redis one.

Rule: `p = dagster-celery/priority (step tag, default 5) + dagster-celery/run_priority (run
tag, default 0)`, clamped to 0..9; the message carries `9 - p`. kombu groups message
priorities into its levels 0, 3, 6, 9 (alphaswarm_orch.broker.redis_queues), so a worker
serves p 7-9 first, then p 4-6 (the default), then p 1-3, then p 0; within a level, first in,
first out. The run loop also submits the steps that are ready together in `p` order.
"""

from __future__ import annotations

from collections.abc import Mapping

from alphaswarm_orch.compat.celery import (
    DAGSTER_CELERY_RUN_PRIORITY_TAG,
    DAGSTER_CELERY_STEP_PRIORITY_TAG,
)

DEFAULT_STEP_PRIORITY = 5
MAX_PRIORITY = 9


class PriorityError(ValueError):
    """A priority tag that is not an integer."""


def _int_tag(tags: Mapping[str, str], name: str, default: int, where: str) -> int:
    raw = tags.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise PriorityError(
            f"{where}: tag {name}={raw!r} is not an integer; use 0-{MAX_PRIORITY} "
            "(higher runs first)"
        ) from exc


def dagster_priority(
    step_tags: Mapping[str, str], run_tags: Mapping[str, str], *, where: str = "step"
) -> int:
    """The step's priority in Dagster terms (higher runs first), clamped to 0..9."""
    step = _int_tag(step_tags, DAGSTER_CELERY_STEP_PRIORITY_TAG, DEFAULT_STEP_PRIORITY, where)
    run = _int_tag(run_tags, DAGSTER_CELERY_RUN_PRIORITY_TAG, 0, "run")
    return max(0, min(MAX_PRIORITY, step + run))


def redis_priority(priority: int) -> int:
    """The Celery message priority that makes kombu's Redis transport honour `priority`."""
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, priority))
