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

Reading is `events`, row derivation `rows` (pure), storage `store`; this module runs them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import dagster as dg
import sqlalchemy as sa

from alphaswarm_orch.ledger import store
from alphaswarm_orch.ledger.db import LedgerUnavailable, ledger_engine, ledger_errors
from alphaswarm_orch.ledger.events import (
    newest_event_timestamp,
    read_event,
    read_events,
    step_queues,
)
from alphaswarm_orch.ledger.rows import Derived, Transition, derive_events, summaries, utc
from alphaswarm_orch.ledger.schema import (
    workload_run_assets,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.settings import Settings

if TYPE_CHECKING:
    from alphaswarm_orch.compat.dagster import BaseAssetGraph

DEFAULT_BATCH_SIZE = 5000
"""Events read per event type per batch: bounds the work (and memory) of one transaction."""
DEFAULT_WINDOW = 500
"""Storage ids re-read below the high-water mark to catch events committed out of order."""


class MirrorUnsupported(RuntimeError):
    """The Dagster instance's event log has no global storage ids to mirror by."""


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


@dataclass
class _Written:
    """What the savepoints of one batch committed: events, and the last run/step rows."""

    events: list[Derived] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


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
                "instance at Postgres (ALPHASWARM_POSTGRES_URL) to mirror runs into the ledger"
                " or, on the embedded default, start a new store: an embedded store created "
                "before the consolidated event log keeps the per-run layout; move "
                f"{settings.dagster_home} aside and the next command creates one that does."
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
            store.remember_error(url, str(exc))
            raise
        except Exception as exc:
            store.record_error(self.settings, f"{type(exc).__name__}: {exc}")
            raise
        return result

    def retry_quarantined(self, event_ids: Sequence[int] | None = None) -> RetryResult:
        """Mirror quarantined events again (all, or `event_ids`), e.g. after fixing what
        refused them: those the ledger now stores leave the quarantine, the others stay with
        the new reason. Events Dagster no longer has (a deleted run) stay, reported missing."""
        url = self.settings.ledger_url
        engine = ledger_engine(self.settings)
        with ledger_errors(url), engine.begin() as conn:
            store.lock_state(conn)  # one mirror at a time
            events, missing = [], []
            for event_id in store.quarantined_events(conn, event_ids):
                entry = read_event(self.instance, event_id)
                if entry is None:
                    missing.append(event_id)
                else:
                    events.append((event_id, entry))
            store.release(conn, [event_id for event_id, _ in events])
            derived, rejected = derive_events(events, self._upstream)
            runs = self._runs(derived)
            written = _Written()
            now = datetime.now(UTC)
            self._write(conn, derived, runs, now, written, rejected, contiguous=False)
            store.quarantine(conn, rejected, now)
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
        cursor, rows_written = store.lock_state(conn)
        events, drained = read_events(self.instance, max(-1, cursor - self.window), self.batch_size)
        if not events:
            store.save_state(conn, self.settings.ledger_url, cursor, rows_written, 0.0, None, now)
            return SyncResult(0, 0, cursor, True, 0.0)

        high = max(cursor, events[-1][0])
        # Events set aside earlier are not retried on every re-read of the trailing window.
        set_aside = store.quarantined_ids(conn, events[0][0], events[-1][0])
        fresh_events = [e for e in events if e[0] not in set_aside]
        derived, rejected = derive_events(fresh_events, self._upstream)
        runs = self._runs(derived)
        written = _Written()
        self._write(conn, derived, runs, now, written, rejected, contiguous=True)
        store.quarantine(conn, rejected, now)

        # Count what new events wrote, not the trailing window's idempotent rewrites.
        fresh = [d for d in written.events if d.event_id > cursor]
        fresh_runs = {d.run_id for d in fresh}
        rows_written += len(fresh) + sum(
            1
            for row in (*written.runs.values(), *written.steps.values())
            if row["run_id"] in fresh_runs
        )
        mirrored_at = utc(events[-1][1].timestamp)
        lag = 0.0 if drained else self._lag(events[-1][1].timestamp)
        store.save_state(conn, self.settings.ledger_url, high, rows_written, lag, mirrored_at, now)
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
        except store.RowRejected as exc:
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
        store.insert_ignore(conn, workload_run_transitions, transitions, ["event_id"])
        store.insert_ignore(conn, workload_run_assets, assets, ["event_id"])
        t = workload_run_transitions
        written_here = (
            t.c.event_id.between(derived[0].event_id, derived[-1].event_id)
            if contiguous
            else t.c.event_id.in_([row["event_id"] for row in transitions])
        )
        history = [*store.prior_transitions(conn, job_names, written_here)]
        history.extend(Transition(**row) for row in transitions)
        queues_of = partial(step_queues, self.instance)
        run_rows, step_rows = summaries(history, runs, job_names, queues_of, now)
        store.upsert(conn, workload_runs, run_rows, ["run_id"])
        store.upsert(conn, workload_run_steps, step_rows, ["run_id", "step_key"])
        return run_rows, step_rows

    def _lag(self, mirrored_ts: float) -> float:
        newest = newest_event_timestamp(self.instance)
        return 0.0 if newest is None else max(0.0, newest - mirrored_ts)

    def _upstream(self, key: dg.AssetKey) -> list[str]:
        if self.asset_graph is None or not self.asset_graph.has(key):
            return []
        return sorted(parent.to_user_string() for parent in self.asset_graph.get(key).parent_keys)
