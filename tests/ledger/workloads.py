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
    through `instance.add_run` unless `bulk` (benchmarks: Dagster's own insert values,
    many runs per statement); events are inserted as the SQL event log storage writes them."""
    event_rows: list[dict[str, object]] = []
    runs: list[dg.DagsterRun] = []
    for copy in range(copies):
        new_ids = {t.run_id: str(uuid.uuid4()) for t in history.templates}
        for n, template in enumerate(history.templates):
            new_id = new_ids[template.run_id]
            event_rows.extend(event_row(e) for e in _copied_events(template, new_id, event_types))
            runs.append(_copied_run(template.run, new_id, new_ids, copy + n))
            history.run_ids.append(new_id)
            if template.run_id in history.refused:
                history.refused.add(new_id)
            trigger = history.expected_trigger[template.run_id]
            tagged = TRIGGER_TAGS[(copy + n) % 4][1:]
            # Trigger tags win over how the run was submitted (ui/cli); re-executions stay retries.
            history.expected_trigger[new_id] = (
                trigger if trigger[0] == "retry" or tagged[0] == "cli" else tagged
            )
        if len(event_rows) >= 5000 or copy == copies - 1:
            _write(instance, runs, event_rows, bulk)
            runs, event_rows = [], []


def _write(
    instance: dg.DagsterInstance,
    runs: list[dg.DagsterRun],
    event_rows: list[dict[str, object]],
    bulk: bool,
) -> None:
    if bulk:
        storage = instance.run_storage
        now = datetime.now(UTC)
        with storage.connect() as conn:
            conn.execute(
                RunsTable.insert(), [storage._get_run_insertion_values(r, now) for r in runs]
            )
            tags = [
                {"run_id": r.run_id, "key": k, "value": v} for r in runs for k, v in r.tags.items()
            ]
            if tags:
                conn.execute(RunTagsTable.insert(), tags)
    else:
        for run in runs:
            instance.add_run(run)
    with instance.event_log_storage.index_connection() as conn:
        conn.execute(SqlEventLogStorageTable.insert(), event_rows)


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
