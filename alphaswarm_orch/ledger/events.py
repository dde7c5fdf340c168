"""Reading Dagster's event log: the event types the ledger mirrors, by global storage id."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dagster as dg

from alphaswarm_orch.queues import DEFAULT_QUEUE, QUEUE_TAG

ET = dg.DagsterEventType
RUN_STATUSES: Mapping[dg.DagsterEventType, str] = {
    ET.RUN_ENQUEUED: "queued",
    ET.RUN_STARTING: "starting",
    ET.RUN_START: "started",
    ET.RUN_SUCCESS: "success",
    ET.RUN_FAILURE: "failure",
    ET.RUN_CANCELING: "canceling",
    ET.RUN_CANCELED: "canceled",
}
"""Run status events; the names are DagsterRunStatus values, lower-cased."""
STEP_STATUSES: Mapping[dg.DagsterEventType, str] = {
    ET.STEP_START: "started",
    ET.STEP_RESTARTED: "restarted",
    ET.STEP_UP_FOR_RETRY: "up_for_retry",
    ET.STEP_SUCCESS: "success",
    ET.STEP_FAILURE: "failure",
    ET.STEP_SKIPPED: "skipped",
}
READ_TYPES: tuple[dg.DagsterEventType, ...] = (
    *RUN_STATUSES,
    *STEP_STATUSES,
    ET.ASSET_MATERIALIZATION,
)


def read_events(
    instance: dg.DagsterInstance, after: int, limit: int
) -> tuple[list[tuple[int, dg.EventLogEntry]], bool]:
    """Events of READ_TYPES with storage id > `after`, ascending, and whether none remain.

    One query per event type (Dagster deprecates multi-type reads). When a type fills its
    `limit`, its last id is the horizon: events beyond it are dropped so that no type is
    skipped, and the types queried after it are read up to the horizon only. Unbounded, each
    sparse type read `limit` events far beyond the horizon on every batch, to be dropped:
    at 100,000 runs, reading the backlog cost twice as much per run as at 10,000.
    """
    storage = instance.event_log_storage
    merged: dict[int, dg.EventLogEntry] = {}
    horizon: int | None = None
    for event_type in READ_TYPES:
        records = storage.get_event_records(
            dg.EventRecordsFilter(
                event_type=event_type,
                after_cursor=after,
                before_cursor=None if horizon is None else horizon + 1,
            ),
            limit=limit,
            ascending=True,
        )
        merged.update((record.storage_id, record.event_log_entry) for record in records)
        if len(records) >= limit:
            last = records[-1].storage_id
            horizon = last if horizon is None else min(horizon, last)
    events = sorted(
        ((i, e) for i, e in merged.items() if horizon is None or i <= horizon),
        key=lambda item: item[0],
    )
    return events, horizon is None


def read_event(instance: dg.DagsterInstance, event_id: int) -> dg.EventLogEntry | None:
    """The event stored under `event_id`, or None when Dagster no longer has it."""
    got = instance.event_log_storage.get_logs_for_all_runs_by_log_id(
        after_cursor=event_id - 1, limit=1
    )
    return got.get(event_id)


def newest_event_timestamp(instance: dg.DagsterInstance) -> float | None:
    """When the newest event of any type was stored (None for an empty log)."""
    storage = instance.event_log_storage
    newest_id = storage.get_maximum_record_id()
    if newest_id is None:
        return None
    newest = storage.get_logs_for_all_runs_by_log_id(after_cursor=newest_id - 1, limit=1)
    return max((e.timestamp for e in newest.values()), default=None)


_SNAPSHOT_CACHE_SIZE = 512
_plan_queues: dict[str, dict[str, str]] = {}


def step_queues(
    instance: dg.DagsterInstance, run: dg.DagsterRun | None
) -> Callable[[str], str | None]:
    """Queue of each step, from the run's execution plan snapshot (cached: immutable)."""
    snapshot_id = run.execution_plan_snapshot_id if run is not None else None
    if snapshot_id is None:
        return lambda step_key: None
    queues = _plan_queues.get(snapshot_id)
    if queues is None:
        plan = instance.get_execution_plan_snapshot(snapshot_id)
        queues = {
            _base_step(step.key): (step.tags or {}).get(QUEUE_TAG, DEFAULT_QUEUE)
            for step in plan.steps
        }
        if len(_plan_queues) >= _SNAPSHOT_CACHE_SIZE:
            _plan_queues.clear()
        _plan_queues[snapshot_id] = queues
    return lambda step_key: queues.get(_base_step(step_key))


def _base_step(step_key: str) -> str:
    """Dynamic step keys (`op[3]`) resolve to their plan step (`op[?]`) by name."""
    return step_key.split("[", 1)[0]
