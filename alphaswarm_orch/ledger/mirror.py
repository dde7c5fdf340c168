"""Mirror Dagster's event log into the ledger: no gap, no duplicate, across restarts.

How it stays exact:
- Events are read by storage id above the stored high-water mark minus a trailing window,
  so an event committed out of order (its id below one already read) is still picked up.
- Every ledger row has a key taken from Dagster (event id, run id, run id + step key):
  re-reading any window upserts the same rows again.
- Run and step rows are recomputed from the ledger's own transitions table, so their
  content does not depend on the order or the batching in which events arrived.
- The new high-water mark is written in the same transaction as the rows: a crash either
  keeps both or neither.

How one bad event cannot stop it:
- Text is made storable before it is written (`schema.fit`: escaped, cut to the column).
- A batch the database still refuses for a row's content (a data or integrity error) is
  bisected, each half in its own savepoint, down to the events that fail alone; those are
  set aside in `ledger_quarantine` with the reason, and the cursor moves on past them. An
  outage (connection errors) and other database errors (a missing table, a permission) fail
  the tick and keep the cursor: they are not about one event.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import dagster as dg
import sqlalchemy as sa
from dagster._utils.error import SerializableErrorInfo
from sqlalchemy.dialects import postgresql, sqlite

from alphaswarm_orch.ledger.db import LedgerUnavailable, ledger_engine, ledger_errors
from alphaswarm_orch.ledger.schema import (
    fit,
    ledger_mirror_state,
    ledger_quarantine,
    workload_run_assets,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.queues import DEFAULT_QUEUE, QUEUE_TAG
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, WORKLOAD_KINDS, WORKLOAD_TAG
from alphaswarm_orch.text import sanitize

if TYPE_CHECKING:
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

MIRROR_NAME = "dagster"
DEFAULT_BATCH_SIZE = 5000
"""Events read per event type per batch: bounds the work (and memory) of one transaction."""
DEFAULT_WINDOW = 500
"""Storage ids re-read below the high-water mark to catch events committed out of order."""

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
TERMINAL_RUN = frozenset({"success", "failure", "canceled"})
TERMINAL_STEP = frozenset({"success", "failure", "skipped"})
ERROR_SUMMARY_LENGTH = 2000
"""Error text kept per transition, step and run (the columns are unbounded `text`)."""
REFUSAL_CLASS = "KillSwitchEngaged"
"""alphaswarm_orch.control.kill_switch.KillSwitchEngaged: a step refused by the kill switch."""

_DOMAIN_KINDS = {"ingestion": "ingestion", "workflows": "workflow", "workflow": "workflow"}
_SNAPSHOT_CACHE_SIZE = 512
_plan_queues: dict[str, dict[str, str]] = {}
_unrecorded_errors: dict[str, tuple[str, datetime]] = {}


class MirrorUnsupported(RuntimeError):
    """The Dagster instance's event log has no global storage ids to mirror by."""


class RowRejected(Exception):
    """The ledger database refused a row for its content: not an outage, not retried."""

    def __init__(self, table: str, error: BaseException) -> None:
        orig = getattr(error, "orig", None) or error
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
        super().__init__(f"{table}: {type(orig).__name__}: {first}")


class Derived(NamedTuple):
    """The ledger row one Dagster event gives (a transition or an asset materialization)."""

    event_id: int
    run_id: str
    job_name: str
    event_type: str
    table: sa.Table | None
    row: dict[str, Any]


class Transition(NamedTuple):
    """A workload_run_transitions row."""

    event_id: int
    run_id: str
    step_key: str | None
    status: str
    at: datetime
    detail: str | None


@dataclass(frozen=True)
class SyncResult:
    """What one batch did."""

    events: int
    runs: int
    cursor: int
    drained: bool
    lag_seconds: float
    quarantined: int = 0


@dataclass(frozen=True)
class RetryResult:
    """What a retry of quarantined events did."""

    mirrored: list[int]
    quarantined: list[int]
    missing: list[int]


@dataclass(frozen=True)
class MirrorStatus:
    """The mirror's health, for the metrics endpoint. `available` is False (and `last_error`
    says why) when the ledger database itself cannot be read."""

    available: bool
    cursor: int
    lag_seconds: float
    rows_written: int
    synced_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    quarantined: int = 0


def read_events(
    instance: dg.DagsterInstance, after: int, limit: int
) -> tuple[list[tuple[int, dg.EventLogEntry]], bool]:
    """Events of READ_TYPES with storage id > `after`, ascending, and whether none remain.

    One query per event type (Dagster deprecates multi-type reads); when a type fills its
    `limit`, events beyond that type's last id are dropped so that no type is skipped.
    """
    storage = instance.event_log_storage
    merged: dict[int, dg.EventLogEntry] = {}
    horizon: int | None = None
    for event_type in READ_TYPES:
        got = storage.get_logs_for_all_runs_by_log_id(
            after_cursor=after, dagster_event_type=event_type, limit=limit
        )
        merged.update(got)
        if len(got) >= limit:
            last = max(got)
            horizon = last if horizon is None else min(horizon, last)
    events = sorted(
        ((i, e) for i, e in merged.items() if horizon is None or i <= horizon),
        key=lambda item: item[0],
    )
    return events, horizon is None


class LedgerMirror:
    """Copies Dagster's event log into the ledger, one bounded batch per `sync_once`."""

    def __init__(
        self,
        settings: Settings,
        instance: dg.DagsterInstance,
        *,
        asset_graph: BaseAssetGraph | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if window < 0:
            raise ValueError(f"trailing window must be 0 or more storage ids, got {window}")
        if instance.event_log_storage.is_run_sharded:
            raise MirrorUnsupported(
                "the Dagster instance's event log is sharded per run (Dagster's default SQLite "
                "storage): it has no global storage ids to mirror workload_runs by. Point the "
                "instance at Postgres (ALPHASWARM_POSTGRES_URL) to mirror runs into the ledger."
            )
        self.settings = settings
        self.instance = instance
        self.asset_graph = asset_graph
        self.batch_size = batch_size
        self.window = window

    def sync(self, *, max_seconds: float | None = None) -> list[SyncResult]:
        """Run batches until the backlog is drained (or `max_seconds` have passed)."""
        started = time.monotonic()
        results = [self.sync_once()]
        while not results[-1].drained:
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            results.append(self.sync_once())
        return results

    def sync_once(self) -> SyncResult:
        """Mirror one batch in one ledger transaction; the cursor moves only on commit."""
        url = self.settings.ledger_url
        try:
            engine = ledger_engine(self.settings)
            with ledger_errors(url), engine.begin() as conn:
                result = self._batch(conn)
        except LedgerUnavailable as exc:
            _unrecorded_errors[url] = (str(exc), datetime.now(UTC))
            raise
        except Exception as exc:
            _record_error(self.settings, f"{type(exc).__name__}: {exc}")
            raise
        return result

    def retry_quarantined(self, event_ids: Sequence[int] | None = None) -> RetryResult:
        """Mirror quarantined events again (all, or `event_ids`), e.g. after fixing what
        refused them: those the ledger now stores leave the quarantine, the others stay with
        the new reason. Events Dagster no longer has (a deleted run) stay, reported missing."""
        url = self.settings.ledger_url
        engine = ledger_engine(self.settings)
        with ledger_errors(url), engine.begin() as conn:
            _lock_state(conn)  # one mirror at a time
            q = ledger_quarantine
            query = sa.select(q.c.event_id).order_by(q.c.event_id)
            if event_ids is not None:
                query = query.where(q.c.event_id.in_(list(event_ids)))
            storage = self.instance.event_log_storage
            events, missing = [], []
            for event_id in conn.execute(query).scalars():
                got = storage.get_logs_for_all_runs_by_log_id(after_cursor=event_id - 1, limit=1)
                if event_id in got:
                    events.append((event_id, got[event_id]))
                else:
                    missing.append(event_id)
            if events:
                conn.execute(sa.delete(q).where(q.c.event_id.in_([i for i, _ in events])))
            derived, rejected = self._derive(events)
            runs = self._runs(derived)
            written = _Written()
            now = datetime.now(UTC)
            self._write(conn, derived, runs, now, written, rejected, contiguous=False)
            _quarantine(conn, rejected, now)
        return RetryResult(
            mirrored=[d.event_id for d in written.events],
            quarantined=sorted(event.event_id for event, _ in rejected),
            missing=missing,
        )

    def _runs(self, derived: Sequence[Derived]) -> dict[str, dg.DagsterRun]:
        run_ids = list({d.run_id for d in derived})
        return {r.run_id: r for r in self.instance.get_runs(dg.RunsFilter(run_ids=run_ids))}

    def _batch(self, conn: sa.Connection) -> SyncResult:
        now = datetime.now(UTC)
        cursor, rows_written = _lock_state(conn)
        events, drained = read_events(self.instance, max(-1, cursor - self.window), self.batch_size)
        if not events:
            _save_state(conn, self.settings.ledger_url, cursor, rows_written, 0.0, None, now)
            return SyncResult(0, 0, cursor, True, 0.0)

        high = max(cursor, events[-1][0])
        # Events set aside earlier are not retried on every re-read of the trailing window.
        set_aside = _quarantined_ids(conn, events[0][0], events[-1][0])
        derived, rejected = self._derive([e for e in events if e[0] not in set_aside])
        runs = self._runs(derived)
        written = _Written()
        self._write(conn, derived, runs, now, written, rejected, contiguous=True)
        _quarantine(conn, rejected, now)

        # Count what new events wrote, not the trailing window's idempotent rewrites.
        fresh = [d for d in written.events if d.event_id > cursor]
        fresh_runs = {d.run_id for d in fresh}
        rows_written += len(fresh) + sum(
            1
            for row in (*written.runs.values(), *written.steps.values())
            if row["run_id"] in fresh_runs
        )
        mirrored_at = _utc(events[-1][1].timestamp)
        lag = 0.0 if drained else self._lag(events[-1][1].timestamp)
        _save_state(conn, self.settings.ledger_url, high, rows_written, lag, mirrored_at, now)
        run_ids = {d.run_id for d in derived} | {event.run_id for event, _ in rejected}
        return SyncResult(len(events), len(run_ids), high, drained, lag, len(rejected))

    def _write(
        self,
        conn: sa.Connection,
        derived: Sequence[Derived],
        runs: Mapping[str, dg.DagsterRun],
        now: datetime,
        written: _Written,
        rejected: list[tuple[Derived, str]],
        *,
        contiguous: bool,
    ) -> None:
        """Write `derived` (ascending event ids) in a savepoint; when the database refuses a
        row, undo it and write each half alone, down to the single events it refuses.
        `contiguous`: `derived` is every mirrored event in its id span (a batch, not a retry)."""
        if not derived:
            return
        try:
            with conn.begin_nested():
                run_rows, step_rows = self._write_rows(conn, derived, runs, now, contiguous)
        except RowRejected as exc:
            if len(derived) == 1:
                rejected.append((derived[0], str(exc)))
                return
            middle = len(derived) // 2
            for half in (derived[:middle], derived[middle:]):
                self._write(conn, half, runs, now, written, rejected, contiguous=contiguous)
            return
        written.events.extend(derived)
        written.runs.update((row["run_id"], row) for row in run_rows)
        written.steps.update(((row["run_id"], row["step_key"]), row) for row in step_rows)

    def _write_rows(
        self,
        conn: sa.Connection,
        derived: Sequence[Derived],
        runs: Mapping[str, dg.DagsterRun],
        now: datetime,
        contiguous: bool,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        transitions = [d.row for d in derived if d.table is workload_run_transitions]
        assets = [d.row for d in derived if d.table is workload_run_assets]
        job_names = {d.run_id: d.job_name for d in derived}
        _insert_ignore(conn, workload_run_transitions, transitions, ["event_id"])
        _insert_ignore(conn, workload_run_assets, assets, ["event_id"])
        t = workload_run_transitions
        written_here = (
            t.c.event_id.between(derived[0].event_id, derived[-1].event_id)
            if contiguous
            else t.c.event_id.in_([row["event_id"] for row in transitions])
        )
        run_rows, step_rows = self._summaries(conn, transitions, written_here, runs, job_names, now)
        _upsert(conn, workload_runs, run_rows, ["run_id"])
        _upsert(conn, workload_run_steps, step_rows, ["run_id", "step_key"])
        return run_rows, step_rows

    def _lag(self, mirrored_ts: float) -> float:
        storage = self.instance.event_log_storage
        newest_id = storage.get_maximum_record_id()
        if newest_id is None:
            return 0.0
        newest = storage.get_logs_for_all_runs_by_log_id(after_cursor=newest_id - 1, limit=1)
        return max(0.0, max((e.timestamp for e in newest.values()), default=0.0) - mirrored_ts)

    def _derive(
        self, events: Sequence[tuple[int, dg.EventLogEntry]]
    ) -> tuple[list[Derived], list[tuple[Derived, str]]]:
        """The ledger row of each event; an event whose row cannot be derived is rejected
        (with the reason) instead of failing the batch."""
        derived: list[Derived] = []
        rejected: list[tuple[Derived, str]] = []
        for event_id, entry in events:
            if entry.dagster_event is None:
                continue
            try:
                derived.append(self._derive_one(event_id, entry))
            except Exception as exc:
                kind = entry.dagster_event.event_type_value
                stub = Derived(event_id, entry.run_id, entry.job_name or "", kind, None, {})
                rejected.append((stub, f"cannot derive a ledger row from {kind}: {exc!r}"))
        return derived, rejected

    def _derive_one(self, event_id: int, entry: dg.EventLogEntry) -> Derived:
        event = entry.dagster_event
        assert event is not None
        at = _utc(entry.timestamp)
        kind = event.event_type
        head = (event_id, entry.run_id, entry.job_name or "", event.event_type_value)
        if kind == ET.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            key = materialization.asset_key
            row = {
                "event_id": event_id,
                "run_id": entry.run_id,
                "step_key": entry.step_key,
                "asset_key": key.to_user_string(),
                "partition": materialization.partition,
                "upstream": self._upstream(key),
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
            "detail": _error_summary(getattr(event.event_specific_data, "error", None)),
        }
        return Derived(*head, workload_run_transitions, fit(workload_run_transitions, row))

    def _upstream(self, key: dg.AssetKey) -> list[str]:
        if self.asset_graph is None or not self.asset_graph.has(key):
            return []
        return sorted(parent.to_user_string() for parent in self.asset_graph.get(key).parent_keys)

    def _summaries(
        self,
        conn: sa.Connection,
        transitions: Sequence[Mapping[str, Any]],
        written_here: sa.ColumnElement[bool],
        runs: Mapping[str, dg.DagsterRun],
        job_names: Mapping[str, str],
        now: datetime,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run and step rows from every transition the ledger holds for the touched runs:
        `transitions` (the ledger rows `written_here` are exactly those: just upserted) plus
        the ones mirrored before, read back."""
        t = workload_run_transitions
        by_run: dict[str, list[Transition]] = defaultdict(list)
        query = sa.select(t.c.event_id, t.c.run_id, t.c.step_key, t.c.status, t.c.at, t.c.detail)
        query = query.where(t.c.run_id.in_(list(job_names)), sa.not_(written_here))
        for row in _execute(conn, t, query):
            by_run[row.run_id].append(Transition(*row))
        for row in transitions:
            by_run[row["run_id"]].append(Transition(**row))
        run_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        for run_id, job_name in job_names.items():
            history = sorted(by_run[run_id], key=lambda r: r.event_id)
            run = runs.get(run_id)
            steps = _step_rows(run_id, history, self._step_queues(run))
            step_rows.extend(steps)
            run_rows.append(_run_row(run_id, run, job_name, history, steps, now))
        return run_rows, step_rows

    def _step_queues(self, run: dg.DagsterRun | None) -> Callable[[str], str | None]:
        """Queue of each step, from the run's execution plan snapshot (cached: immutable)."""
        snapshot_id = run.execution_plan_snapshot_id if run is not None else None
        if snapshot_id is None:
            return lambda step_key: None
        queues = _plan_queues.get(snapshot_id)
        if queues is None:
            plan = self.instance.get_execution_plan_snapshot(snapshot_id)
            queues = {
                _base_step(step.key): (step.tags or {}).get(QUEUE_TAG, DEFAULT_QUEUE)
                for step in plan.steps
            }
            if len(_plan_queues) >= _SNAPSHOT_CACHE_SIZE:
                _plan_queues.clear()
            _plan_queues[snapshot_id] = queues
        return lambda step_key: queues.get(_base_step(step_key))


def _step_rows(
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
                        (_aware(ended) - _aware(started)).total_seconds()
                        if started is not None and ended is not None
                        else None
                    ),
                    "error": errors[-1] if errors else None,
                },
            )
        )
    return rows


def _run_row(
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
    trigger, detail = _trigger(run, tags, launched)
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


def _trigger(
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


def _error_summary(error: SerializableErrorInfo | None) -> str | None:
    """The user's exception (Dagster wraps it in DagsterExecutionStepExecutionError)."""
    if not isinstance(error, SerializableErrorInfo):
        return None
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    message = error.message.strip()
    _module, _sep, message = message.rpartition(f".{error.cls_name}: ")
    text = f"{error.cls_name}: {message}" if _sep else error.message.strip()
    return sanitize(text, ERROR_SUMMARY_LENGTH, multiline=True)


def _base_step(step_key: str) -> str:
    """Dynamic step keys (`op[3]`) resolve to their plan step (`op[?]`) by name."""
    return step_key.split("[", 1)[0]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; the ledger stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _execute(
    conn: sa.Connection, table: sa.Table, statement: Any, rows: list[dict[str, Any]] | None = None
) -> sa.CursorResult[Any]:
    """Execute; a refusal of the rows' content (as opposed to an outage) is RowRejected.
    psycopg2 refuses NUL in a string with a bare ValueError before sending anything."""
    try:
        return conn.execute(statement, rows)
    except (sa.exc.DataError, sa.exc.IntegrityError, ValueError) as exc:
        raise RowRejected(table.name, exc) from exc
    except sa.exc.StatementError as exc:
        if isinstance(exc, sa.exc.DBAPIError):
            raise
        raise RowRejected(table.name, exc) from exc  # a value that could not be bound


def _insert_ignore(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if rows:
        _execute(
            conn, table, _insert(conn, table).on_conflict_do_nothing(index_elements=keys), rows
        )


def _upsert(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    if not rows:
        return
    stmt = _insert(conn, table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    _execute(conn, table, stmt.on_conflict_do_update(index_elements=keys, set_=update), rows)


@dataclass
class _Written:
    """What the savepoints of one batch committed: events, and the last run/step rows."""

    events: list[Derived] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _quarantined_ids(conn: sa.Connection, low: int, high: int) -> set[int]:
    q = ledger_quarantine
    return set(
        conn.execute(sa.select(q.c.event_id).where(q.c.event_id.between(low, high))).scalars()
    )


def _quarantine(
    conn: sa.Connection, rejected: Sequence[tuple[Derived, str]], now: datetime
) -> None:
    """Set the rejected events aside (a retry rewrites the reason)."""
    rows = [
        {
            "event_id": event.event_id,
            "run_id": sanitize(event.run_id),
            "event_type": event.event_type,
            "reason": sanitize(reason, ERROR_SUMMARY_LENGTH, multiline=True),
            "at": now,
        }
        for event, reason in rejected
    ]
    _upsert(conn, ledger_quarantine, rows, ["event_id"])


def _lock_state(conn: sa.Connection) -> tuple[int, int]:
    """The high-water mark and rows counter, locked until commit (one mirror at a time)."""
    s = ledger_mirror_state
    _insert_ignore(
        conn,
        s,
        [{"name": MIRROR_NAME, "cursor": -1, "rows_written": 0, "lag_seconds": 0.0}],
        ["name"],
    )
    row = conn.execute(
        sa.select(s.c.cursor, s.c.rows_written).where(s.c.name == MIRROR_NAME).with_for_update()
    ).one()
    return row.cursor, row.rows_written


def _save_state(
    conn: sa.Connection,
    url: str,
    cursor: int,
    rows_written: int,
    lag: float,
    mirrored_at: datetime | None,
    now: datetime,
) -> None:
    values: dict[str, Any] = {
        "cursor": cursor,
        "rows_written": rows_written,
        "lag_seconds": lag,
        "synced_at": now,
    }
    if mirrored_at is not None:
        values["mirrored_event_at"] = mirrored_at
    pending = _unrecorded_errors.pop(url, None)
    if pending is not None:
        values["last_error"], values["last_error_at"] = pending
    s = ledger_mirror_state
    conn.execute(sa.update(s).where(s.c.name == MIRROR_NAME).values(**values))


def _record_error(settings: Settings, message: str) -> None:
    """Keep a non-ledger failure (e.g. Dagster storage) where mirror_status can see it."""
    try:
        engine = ledger_engine(settings)
        with engine.begin() as conn:
            _lock_state(conn)
            s = ledger_mirror_state
            conn.execute(
                sa.update(s)
                .where(s.c.name == MIRROR_NAME)
                .values(
                    last_error=sanitize(message, ERROR_SUMMARY_LENGTH, multiline=True),
                    last_error_at=datetime.now(UTC),
                )
            )
    except (LedgerUnavailable, sa.exc.SQLAlchemyError):
        _unrecorded_errors[settings.ledger_url] = (message, datetime.now(UTC))


def mirror_status(settings: Settings) -> MirrorStatus:
    """The mirror's state from the ledger database (one small query); never raises for an
    unreachable ledger: that is reported as `available=False` with the error."""
    url = settings.ledger_url
    try:
        engine = ledger_engine(settings)
        with ledger_errors(url), engine.connect() as conn:
            s = ledger_mirror_state
            row = conn.execute(sa.select(s).where(s.c.name == MIRROR_NAME)).one_or_none()
            quarantined = conn.execute(
                sa.select(sa.func.count()).select_from(ledger_quarantine)
            ).scalar_one()
    except LedgerUnavailable as exc:
        return MirrorStatus(False, -1, 0.0, 0, None, str(exc), datetime.now(UTC))
    pending = _unrecorded_errors.get(url)
    if row is None:
        return MirrorStatus(True, -1, 0.0, 0, None, *(pending or (None, None)), quarantined)
    last_error, last_error_at = row.last_error, row.last_error_at
    if pending is not None:
        last_error, last_error_at = pending
    return MirrorStatus(
        available=True,
        cursor=row.cursor,
        lag_seconds=row.lag_seconds,
        rows_written=row.rows_written,
        synced_at=_aware(row.synced_at) if row.synced_at else None,
        last_error=last_error,
        last_error_at=_aware(last_error_at) if last_error_at else None,
        quarantined=quarantined,
    )
