"""Small real jobs with mixed outcomes, and a Dagster history of many runs built from them.

A handful of template runs really execute (success with partitioned asset lineage, op retry,
failure, kill-switch refusal, re-execution) or are recorded (a cancel, a launch left starting); the
history is then grown by copying those runs' records and events under new run ids through
Dagster's storage API, with varied trigger tags. Executing hundreds of runs would take minutes
on this machine.
Module-level jobs so that re-execution can reconstruct them (dg.reconstructable).
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._serdes import serialize_value

from alphaswarm_orch.broker.kill_switch import KillSwitchEngaged
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.tags import workload_tags

REGIONS = dg.StaticPartitionsDefinition(["us", "eu"])


@dg.asset(partitions_def=REGIONS, op_tags=queue_tags("ingestion"), key_prefix="ledger")
def prices() -> int:
    """Prices for one region."""
    return 1


@dg.asset(partitions_def=REGIONS, op_tags=queue_tags("workflows"), key_prefix="ledger")
def returns(prices: int) -> int:
    """Returns computed from prices."""
    return prices + 1


ingestion_prices_job = dg.define_asset_job(
    "ingestion_prices_job",
    selection=[prices, returns],  # partitioned by REGIONS, inferred from the assets
    executor_def=dg.in_process_executor,
)


@dg.op(tags=queue_tags("workflows"), retry_policy=dg.RetryPolicy(max_retries=1))
def flaky(context: dg.OpExecutionContext) -> None:
    """Fails its first attempt, succeeds on the retry."""
    if context.retry_number == 0:
        raise ValueError("transient: first attempt fails")


@dg.job(executor_def=dg.in_process_executor)
def workflows_flaky_job() -> None:
    flaky()


@dg.op(tags=queue_tags("paper"))
def open_session() -> int:
    return 1


@dg.op(tags=queue_tags("default"))
def bad_tick(session: int) -> None:
    raise ValueError(f"bad tick in session {session}")


@dg.job(executor_def=dg.in_process_executor)
def paper_session_job() -> None:
    bad_tick(open_session())


@dg.op(tags=queue_tags("hft"))
def guarded() -> None:
    raise KillSwitchEngaged("alphaswarm:kill_switch", "market halt", "step guarded")


@dg.job(executor_def=dg.in_process_executor, tags=workload_tags("hft"))
def hft_guarded_job() -> None:
    guarded()


defs = dg.Definitions(
    assets=[prices, returns],
    jobs=[ingestion_prices_job, workflows_flaky_job, paper_session_job, hft_guarded_job],
)


TRIGGER_TAGS: tuple[tuple[dict[str, str], str, str | None], ...] = (
    ({}, "cli", None),
    ({"dagster/schedule_name": "prices_schedule"}, "schedule", "prices_schedule"),
    ({"dagster/sensor_name": "paper_request_sensor"}, "sensor", "paper_request_sensor"),
    ({"dagster/backfill": "bf1"}, "backfill", "bf1"),
)


@dataclass
class Template:
    run: dg.DagsterRun
    events: list[dg.EventLogEntry]

    @property
    def run_id(self) -> str:
        return self.run.run_id


@dataclass
class History:
    """What was produced, to check the ledger against more than run storage."""

    run_ids: list[str] = field(default_factory=list)
    expected_trigger: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    templates: list[Template] = field(default_factory=list)


def execute_templates(instance: dg.DagsterInstance) -> History:
    """Really execute one run of each outcome (and a re-execution and a cancel)."""
    history = History()
    ids = [
        ingestion_prices_job.resolve(asset_graph=defs.resolve_asset_graph())
        .execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        .run_id
        for key in REGIONS.get_partition_keys()
    ]
    flaky_id = workflows_flaky_job.execute_in_process(instance=instance).run_id
    ids.append(flaky_id)
    ids.append(paper_session_job.execute_in_process(instance=instance, raise_on_error=False).run_id)
    refused = hft_guarded_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    ids.append(refused)
    history.refused.add(refused)
    with dg.execute_job(
        dg.reconstructable(workflows_flaky_job),
        instance,
        reexecution_options=dg.ReexecutionOptions(flaky_id, step_selection=["flaky"]),
    ) as result:
        ids.append(result.run_id)
    canceled = instance.create_run_for_job(job_def=workflows_flaky_job)
    instance.report_run_canceled(canceled)
    ids.append(canceled.run_id)
    launched = instance.create_run_for_job(job_def=paper_session_job)
    instance.report_dagster_event(  # what the run launcher records (UI, GraphQL launches)
        dg.DagsterEvent(dg.DagsterEventType.RUN_STARTING.value, job_name=launched.job_name),
        run_id=launched.run_id,
    )
    ids.append(launched.run_id)
    for run_id in ids:
        history.run_ids.append(run_id)
        run = instance.get_run_by_id(run_id)
        assert run is not None
        history.expected_trigger[run_id] = (
            ("retry", "re-execution")
            if run.parent_run_id
            else ("ui", None)
            if run_id == launched.run_id
            else ("cli", None)
        )
        events = [r.event_log_entry for r in instance.get_records_for_run(run_id).records]
        history.templates.append(Template(run, events))
    return history


def grow(
    instance: dg.DagsterInstance,
    history: History,
    copies: int,
    *,
    event_types: frozenset[dg.DagsterEventType] | None = None,
    bulk: bool = False,
) -> None:
    """Copy every template run `copies` times under new run ids (parent links remapped),
    cycling through the trigger tags. Only `event_types` are copied when given. Runs go
    through `instance.add_run` and events are inserted as the SQL event log storage writes
    them, unless `bulk` (benchmarks, Postgres storage only): then the same rows are copied
    inside the database (`grow_in_database`)."""
    if bulk:
        grow_in_database(instance, history, copies, event_types=event_types)
        return
    event_rows: list[dict[str, object]] = []
    runs: list[dg.DagsterRun] = []
    for copy in range(copies):
        new_ids = {t.run_id: str(uuid.uuid4()) for t in history.templates}
        for n, template in enumerate(history.templates):
            new_id = new_ids[template.run_id]
            event_rows.extend(event_row(e) for e in _copied_events(template, new_id, event_types))
            runs.append(_copied_run(template.run, new_id, new_ids, copy + n))
            _record(history, template, new_id, copy + n)
        if len(event_rows) >= 5000 or copy == copies - 1:
            for run in runs:
                instance.add_run(run)
            with instance.event_log_storage.index_connection() as conn:
                conn.execute(SqlEventLogStorageTable.insert(), event_rows)
            runs, event_rows = [], []


def _record(history: History, template: Template, new_id: str, i: int) -> None:
    """Note the copy `new_id` of `template` (the `i`th variant) in `history`."""
    history.run_ids.append(new_id)
    if template.run_id in history.refused:
        history.refused.add(new_id)
    trigger = history.expected_trigger[template.run_id]
    tagged = TRIGGER_TAGS[i % 4][1:]
    # Trigger tags win over how the run was submitted (ui/cli); re-executions stay retries.
    history.expected_trigger[new_id] = (
        trigger if trigger[0] == "retry" or tagged[0] == "cli" else tagged
    )


VARIANTS = 12
"""Copies differ by trigger tags (i % 4) and actor (i % 3): 12 variants of each template."""
PLACEHOLDER = "00000000-0000-4000-8000-00000000"
"""The first 32 characters of a placeholder run id; the last 4 are the template's number."""
COPIES_PER_STATEMENT = 1000


def grow_in_database(
    instance: dg.DagsterInstance,
    history: History,
    copies: int,
    *,
    event_types: frozenset[dg.DagsterEventType] | None = None,
) -> None:
    """`grow` inside Postgres: the same runs, tags and events, built without a round trip per
    row. Each template's run (in its 12 variants), tags and events are serialised once by
    Python with placeholder run ids (the template's number after a fixed 32-character
    prefix) into staging tables; each copy gets a random 32-character prefix, so that one
    `replace()` of the prefix maps every placeholder in a row (its own id, its parent's, its
    root's) to the copy's run ids. Then one INSERT ... SELECT per table per 1,000 copies, in
    the order `grow` writes (copy by copy, template by template, events in order); then the
    tables are analysed."""
    storage = instance.run_storage
    placeholders = {t.run_id: f"{PLACEHOLDER}{n:04x}" for n, t in enumerate(history.templates)}
    run_rows, tag_rows, event_rows = [], [], []
    now = datetime.now(UTC)
    for n, template in enumerate(history.templates):
        placeholder = placeholders[template.run_id]
        for variant in range(VARIANTS):
            run = _copied_run(template.run, placeholder, placeholders, variant)
            run_rows.append({"n": n, "v": variant, **storage._get_run_insertion_values(run, now)})
            tag_rows.extend(
                {"n": n, "v": variant, "key": k, "value": v} for k, v in run.tags.items()
            )
        for seq, entry in enumerate(_copied_events(template, placeholder, event_types)):
            event_rows.append({"n": n, "seq": seq, **event_row(entry)})
    columns = [c for c in run_rows[0] if c not in ("n", "v")]
    event_columns = [c for c in event_rows[0] if c not in ("n", "seq")]
    with storage.connect() as conn:
        for name, rows, keys in (
            ("bench_template_runs", run_rows, ["n", "v", *columns]),
            ("bench_template_tags", tag_rows, ["n", "v", "key", "value"]),
            ("bench_template_events", event_rows, ["n", "seq", *event_columns]),
        ):
            source = {"runs": RunsTable, "tags": RunTagsTable, "events": SqlEventLogStorageTable}
            like = source[name.rsplit("_", 1)[1]]
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
            conn.execute(
                sa.text(
                    f"CREATE TEMP TABLE {name} AS SELECT 0 AS n, 0 AS {keys[1]}, "
                    f"{', '.join(keys[2:])} FROM {like.name} WITH NO DATA"
                )
            )
            conn.execute(sa.table(name, *(sa.column(k) for k in keys)).insert(), rows)
        copied = (
            "(SELECT prefix, ord - 1 AS copy"
            " FROM unnest(CAST(:prefixes AS text[])) WITH ORDINALITY AS u(prefix, ord))"
        )
        mapped = {
            c: f"replace(t.{c}, '{PLACEHOLDER}', m.prefix)"
            for c in ("run_id", "run_body", "event", "value")
        }
        variant = f"t.v = (m.copy + :first + t.n) % {VARIANTS}"
        statements = [
            f"INSERT INTO {RunsTable.name} ({', '.join(columns)}) SELECT "
            + ", ".join(mapped.get(c, f"t.{c}") for c in columns)
            + f" FROM {copied} m JOIN bench_template_runs t ON {variant} ORDER BY m.copy, t.n",
            f"INSERT INTO {RunTagsTable.name} (run_id, key, value) SELECT "
            f"m.prefix || lpad(to_hex(t.n), 4, '0'), t.key, {mapped['value']}"
            f" FROM {copied} m JOIN bench_template_tags t ON {variant}",
            f"INSERT INTO {SqlEventLogStorageTable.name} ({', '.join(event_columns)}) SELECT "
            + ", ".join(mapped.get(c, f"t.{c}") for c in event_columns)
            + f" FROM {copied} m CROSS JOIN bench_template_events t ORDER BY m.copy, t.n, t.seq",
        ]
        for first in range(0, copies, COPIES_PER_STATEMENT):
            count = min(COPIES_PER_STATEMENT, copies - first)
            prefixes = [str(uuid.uuid4())[: len(PLACEHOLDER)] for _ in range(count)]
            for statement in statements:
                conn.execute(sa.text(statement), {"prefixes": prefixes, "first": first})
            for copy, prefix in enumerate(prefixes, start=first):
                for n, template in enumerate(history.templates):
                    _record(history, template, f"{prefix}{n:04x}", copy + n)
        for name in ("bench_template_runs", "bench_template_tags", "bench_template_events"):
            conn.execute(sa.text(f"DROP TABLE {name}"))
        # The planner statistics autovacuum keeps on a history built over time. Without them,
        # right after a bulk load, Postgres reads every remaining event of a type and sorts
        # them for each batch of `read_events` (a bitmap scan, then a sort spilling to disk)
        # instead of walking an index: reading the backlog grows with its square.
        conn.execute(
            sa.text(
                f"ANALYZE {SqlEventLogStorageTable.name}, {RunsTable.name}, {RunTagsTable.name}"
            )
        )


def _copied_run(run: dg.DagsterRun, new_id: str, new_ids: dict[str, str], i: int) -> dg.DagsterRun:
    tags = dict(run.tags)
    if run.parent_run_id is None:
        tags.update(TRIGGER_TAGS[i % 4][0])
    for tag in ("dagster/parent_run_id", "dagster/root_run_id"):
        if tag in tags:
            tags[tag] = new_ids[tags[tag]]
    tags.update({"alphaswarm/actor": f"user{i % 3}", "alphaswarm/request_id": f"req-{new_id}"})
    return run._replace(
        run_id=new_id,
        tags=tags,
        parent_run_id=new_ids[run.parent_run_id] if run.parent_run_id else None,
        root_run_id=new_ids[run.root_run_id] if run.root_run_id else None,
    )


def _copied_events(
    template: Template, new_id: str, event_types: frozenset[dg.DagsterEventType] | None
) -> Iterator[dg.EventLogEntry]:
    for entry in template.events:
        event = entry.dagster_event
        if event_types is not None and (event is None or event.event_type not in event_types):
            continue
        yield entry._replace(run_id=new_id)


def event_row(entry: dg.EventLogEntry) -> dict[str, object]:
    """The row Dagster's SQL event log storage writes for `entry` (its own table schema)."""
    event = entry.dagster_event
    materialization = (
        event.step_materialization_data.materialization
        if (event is not None and event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION)
        else None
    )
    return {
        "run_id": entry.run_id,
        "event": serialize_value(entry),
        "dagster_event_type": event.event_type_value if event is not None else None,
        "timestamp": datetime.fromtimestamp(entry.timestamp, UTC).replace(tzinfo=None),
        "step_key": entry.step_key,
        "asset_key": materialization.asset_key.to_string() if materialization else None,
        "partition": materialization.partition if materialization else None,
    }
