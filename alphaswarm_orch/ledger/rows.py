"""Ledger rows derived from Dagster events and runs: pure functions, no database, no instance.

Every text value goes through `schema.fit` (escaped, cut to its column), so what is derived
here can be stored as it is; what still cannot be is the storage layer's to quarantine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import dagster as dg
import sqlalchemy as sa

from alphaswarm_orch.compat.dagster import SerializableErrorInfo
from alphaswarm_orch.ledger.events import ET, RUN_STATUSES, STEP_STATUSES
from alphaswarm_orch.ledger.schema import (
    fit,
    workload_run_assets,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, WORKLOAD_KINDS, WORKLOAD_TAG
from alphaswarm_orch.text import sanitize

TERMINAL_RUN = frozenset({"success", "failure", "canceled"})
TERMINAL_STEP = frozenset({"success", "failure", "skipped"})
ERROR_SUMMARY_LENGTH = 2000
"""Error text kept per transition, step and run (the columns are unbounded `text`)."""
REFUSAL_CLASS = "KillSwitchEngaged"
"""alphaswarm_orch.broker.kill_switch.KillSwitchEngaged: a step refused by the kill switch."""

_DOMAIN_KINDS = {"ingestion": "ingestion", "workflows": "workflow", "workflow": "workflow"}


class Transition(NamedTuple):
    """A workload_run_transitions row."""

    event_id: int
    run_id: str
    step_key: str | None
    status: str
    at: datetime
    detail: str | None


class Derived(NamedTuple):
    """The ledger row one Dagster event gives (a transition or an asset materialization);
    `table` is None for an event whose row could not be derived."""

    event_id: int
    run_id: str
    job_name: str
    event_type: str
    table: sa.Table | None
    row: dict[str, Any]


def derive_events(
    events: Iterable[tuple[int, dg.EventLogEntry]], upstream: Callable[[dg.AssetKey], list[str]]
) -> tuple[list[Derived], list[tuple[Derived, str]]]:
    """The ledger row of each event; an event whose row cannot be derived is rejected
    (with the reason) instead of failing the batch."""
    derived: list[Derived] = []
    rejected: list[tuple[Derived, str]] = []
    for event_id, entry in events:
        if entry.dagster_event is None:
            continue
        try:
            derived.append(derive_event(event_id, entry, upstream))
        except Exception as exc:
            kind = _event_type_name(entry.dagster_event)
            stub = Derived(event_id, entry.run_id, entry.job_name or "", kind, None, {})
            rejected.append((stub, f"cannot derive a ledger row from {kind}: {exc!r}"))
    return derived, rejected


def derive_event(
    event_id: int, entry: dg.EventLogEntry, upstream: Callable[[dg.AssetKey], list[str]]
) -> Derived:
    """The transition (run/step status) or asset row of one event of READ_TYPES."""
    event = entry.dagster_event
    if event is None:
        raise ValueError(f"event {event_id} is a log message, not a Dagster event")
    at = utc(entry.timestamp)
    kind = event.event_type
    head = (event_id, entry.run_id, entry.job_name or "", _event_type_name(event))
    if kind == ET.ASSET_MATERIALIZATION:
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key
        row = {
            "event_id": event_id,
            "run_id": entry.run_id,
            "step_key": entry.step_key,
            "asset_key": key.to_user_string(),
            "partition": materialization.partition,
            "upstream": upstream(key),
            "at": at,
        }
        return Derived(*head, workload_run_assets, fit(workload_run_assets, row))
    is_run = kind in RUN_STATUSES
    row = {
        "event_id": event_id,
        "run_id": entry.run_id,
        "step_key": None if is_run else entry.step_key,
        "status": RUN_STATUSES[kind] if is_run else STEP_STATUSES[kind],
        "at": at,
        "detail": error_summary(getattr(event.event_specific_data, "error", None)),
    }
    return Derived(*head, workload_run_transitions, fit(workload_run_transitions, row))


def _event_type_name(event: dg.DagsterEvent) -> str:
    """RUN_SUCCESS rather than the stored PIPELINE_SUCCESS; the stored value if unknown."""
    try:
        return event.event_type.name
    except Exception:
        return event.event_type_value


def summaries(
    transitions: Iterable[Transition],
    runs: Mapping[str, dg.DagsterRun],
    job_names: Mapping[str, str],
    queues_of: Callable[[dg.DagsterRun | None], Callable[[str], str | None]],
    now: datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run and step rows of each run in `job_names`, from all of its `transitions` (in any
    order: the result does not depend on it)."""
    by_run: dict[str, list[Transition]] = defaultdict(list)
    for transition in transitions:
        by_run[transition.run_id].append(transition)
    run_rows: list[dict[str, Any]] = []
    all_steps: list[dict[str, Any]] = []
    for run_id, job_name in job_names.items():
        history = sorted(by_run[run_id], key=lambda r: r.event_id)
        run = runs.get(run_id)
        steps = step_rows(run_id, history, queues_of(run))
        all_steps.extend(steps)
        run_rows.append(run_row(run_id, run, job_name, history, steps, now))
    return run_rows, all_steps


def step_rows(
    run_id: str, transitions: Iterable[Transition], queue_of: Callable[[str], str | None]
) -> list[dict[str, Any]]:
    by_step: dict[str, list[Transition]] = defaultdict(list)
    for row in transitions:
        if row.step_key is not None:
            by_step[row.step_key].append(row)
    rows = []
    for step_key, history in by_step.items():
        last = history[-1]
        started = next((r.at for r in history if r.status == "started"), None)
        ended = last.at if last.status in TERMINAL_STEP else None
        errors = [r.detail for r in history if r.detail]
        rows.append(
            fit(
                workload_run_steps,
                {
                    "run_id": run_id,
                    "step_key": step_key,
                    "queue": queue_of(step_key),
                    "status": last.status,
                    "status_event_id": last.event_id,
                    "started_at": started,
                    "ended_at": ended,
                    "duration_seconds": (
                        (aware(ended) - aware(started)).total_seconds()
                        if started is not None and ended is not None
                        else None
                    ),
                    "error": errors[-1] if errors else None,
                },
            )
        )
    return rows


def run_row(
    run_id: str,
    run: dg.DagsterRun | None,
    job_name: str,
    transitions: Sequence[Transition],
    steps: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    tags: Mapping[str, str] = run.tags if run is not None else {}
    history = [r for r in transitions if r.step_key is None]
    last = history[-1] if history else None

    def first(status: str) -> datetime | None:
        return next((r.at for r in history if r.status == status), None)

    step_failures = [r for r in transitions if r.step_key is not None and r.status == "failure"]
    run_failures = [r for r in history if r.status == "failure" and r.detail]
    error_row = (step_failures or run_failures or [None])[0]
    refusals = [
        r.detail for r in transitions if r.detail and r.detail.startswith(f"{REFUSAL_CLASS}: ")
    ]
    launched = any(r.status in ("queued", "starting") for r in history)
    trigger, detail = run_trigger(run, tags, launched)
    parent = (run.parent_run_id if run else None) or tags.get("dagster/parent_run_id")
    root = (run.root_run_id if run else None) or tags.get("dagster/root_run_id")
    return fit(
        workload_runs,
        {
            "run_id": run_id,
            "job_name": run.job_name if run is not None else job_name,
            "workload_kind": workload_kind(run.job_name if run is not None else job_name, tags),
            "queues": ",".join(sorted({s["queue"] for s in steps if s["queue"]})),
            "trigger": trigger,
            "trigger_detail": detail,
            "actor": tags.get(ACTOR_TAG) or tags.get("user"),
            "request_id": tags.get(REQUEST_ID_TAG),
            "parent_run_id": parent,
            "root_run_id": root,
            "status": last.status if last is not None else "started",
            "status_event_id": last.event_id if last is not None else 0,
            "queued_at": first("queued"),
            "starting_at": first("starting"),
            "started_at": first("started"),
            "ended_at": last.at if last is not None and last.status in TERMINAL_RUN else None,
            "error": error_row.detail if error_row is not None else None,
            "error_event_id": error_row.event_id if error_row is not None else None,
            "refusal_reason": refusals[0].removeprefix(f"{REFUSAL_CLASS}: ") if refusals else None,
            "updated_at": now,
        },
    )


def workload_kind(job_name: str, tags: Mapping[str, str]) -> str:
    """The run's `alphaswarm/workload` tag, else the job name's domain prefix, else other."""
    tagged = tags.get(WORKLOAD_TAG)
    if tagged in WORKLOAD_KINDS:
        return tagged
    domain = job_name.split("_", 1)[0]
    kind = _DOMAIN_KINDS.get(domain, domain)
    return kind if kind in WORKLOAD_KINDS else "other"


def run_trigger(
    run: dg.DagsterRun | None, tags: Mapping[str, str], launched: bool
) -> tuple[str, str | None]:
    """What started the run, from the tags Dagster sets (dagster._core.storage.tags)."""
    parent = (run.parent_run_id if run else None) or tags.get("dagster/parent_run_id")
    if parent:
        automatic = "dagster/retry_number" in tags
        return "retry", "automatic" if automatic else "re-execution"
    if "dagster/backfill" in tags:
        return "backfill", tags["dagster/backfill"]
    if "dagster/schedule_name" in tags:
        return "schedule", tags["dagster/schedule_name"]
    if "dagster/sensor_name" in tags:
        return "sensor", tags["dagster/sensor_name"]
    if "dagster/from_automation_condition" in tags or "dagster/auto_materialize" in tags:
        return "automation", None
    # Submitted through the run queue/launcher (UI, GraphQL) vs executed directly (CLI).
    return ("ui", None) if launched else ("cli", None)


def error_summary(error: SerializableErrorInfo | None) -> str | None:
    """The user's exception (Dagster wraps it in DagsterExecutionStepExecutionError)."""
    if not isinstance(error, SerializableErrorInfo):
        return None
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    message = error.message.strip()
    _module, _sep, message = message.rpartition(f".{error.cls_name}: ")
    text = f"{error.cls_name}: {message}" if _sep else error.message.strip()
    return sanitize(text, ERROR_SUMMARY_LENGTH, multiline=True)


def base_step(step_key: str) -> str:
    """Dynamic step keys (`op[3]`) resolve to their plan step (`op[?]`) by name."""
    return step_key.split("[", 1)[0]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; the ledger stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; the ledger stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
