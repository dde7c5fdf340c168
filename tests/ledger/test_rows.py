"""Row derivation without a database: real Dagster runs on an in-memory instance, their events
turned into ledger rows by the pure functions the mirror uses."""

import random
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

from alphaswarm_orch.ledger.events import READ_TYPES
from alphaswarm_orch.ledger.rows import (
    Derived,
    Transition,
    derive_events,
    summaries,
)
from alphaswarm_orch.ledger.schema import (
    fit,
    workload_run_assets,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.tags import ACTOR_TAG
from tests.ledger import workloads

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@dg.op(tags=queue_tags("paper"))
def garbled() -> None:
    raise ValueError("feed sent \x00 at byte 7\n\tthen \u202eevil")


@dg.job(executor_def=dg.in_process_executor)
def paper_garbled_job() -> None:
    garbled()


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _events(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, dg.EventLogEntry]]:
    """The run's mirrored events with made-up ascending storage ids (in-memory storage has
    none), as read_events gives them."""
    entries = [
        e for e in instance.all_logs(run_id) if e.dagster_event_type in frozenset(READ_TYPES)
    ]
    return list(enumerate(entries, start=1))


def _transitions(derived: list[Derived]) -> list[Transition]:
    return [Transition(**d.row) for d in derived if d.table is workload_run_transitions]


def _queues(run: dg.DagsterRun | None):
    return lambda step_key: "paper"


def test_unstorable_text_in_tags_and_errors_is_made_storable(
    instance: dg.DagsterInstance,
) -> None:
    tags = {ACTOR_TAG: "a" * 300, "dagster/schedule_name": "nightly\x1b[31m"}
    result = paper_garbled_job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    derived, rejected = derive_events(_events(instance, result.run_id), lambda key: [])
    assert rejected == []
    failure = next(d for d in derived if d.event_type == "STEP_FAILURE")
    expected = "ValueError: feed sent \\x00 at byte 7\n\tthen \\u202eevil"
    assert failure.row["detail"] == expected

    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    run_rows, step_rows = summaries(
        _transitions(derived), {run.run_id: run}, {run.run_id: run.job_name}, _queues, NOW
    )
    (row,) = run_rows
    assert len(row["actor"]) == workload_runs.c.actor.type.length
    assert row["actor"].startswith("a" * 200) and row["actor"].endswith(" more chars]")
    assert (row["trigger"], row["trigger_detail"]) == ("schedule", "nightly\\x1b[31m")
    assert (row["status"], row["workload_kind"], row["queues"]) == ("failure", "paper", "paper")
    assert row["error"] == expected
    (step,) = step_rows
    assert (step["step_key"], step["status"], step["error"]) == ("garbled", "failure", expected)
    assert step["duration_seconds"] >= 0


def test_summaries_do_not_depend_on_event_order(instance: dg.DagsterInstance) -> None:
    result = workloads.workflows_flaky_job.execute_in_process(instance=instance)
    derived, _ = derive_events(_events(instance, result.run_id), lambda key: [])
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    transitions = _transitions(derived)
    shuffled = random.Random(7).sample(transitions, len(transitions))
    args = ({run.run_id: run}, {run.run_id: run.job_name}, _queues, NOW)
    assert summaries(shuffled, *args) == summaries(transitions, *args)
    (step,) = summaries(transitions, *args)[1]
    assert step["status"] == "success"  # the retry's success, after the first attempt failed


def test_an_event_that_cannot_be_derived_is_rejected_alone(instance: dg.DagsterInstance) -> None:
    graph = workloads.defs.resolve_asset_graph()
    job = workloads.ingestion_prices_job.resolve(asset_graph=graph)
    run_id = job.execute_in_process(instance=instance, partition_key="us").run_id

    def upstream(key: dg.AssetKey) -> list[str]:
        if key == dg.AssetKey(["ledger", "returns"]):
            raise KeyError(f"asset graph has no {key.to_user_string()}")
        return []

    derived, rejected = derive_events(_events(instance, run_id), upstream)
    ((bad, reason),) = rejected
    assert bad.event_type == "ASSET_MATERIALIZATION" and bad.run_id == run_id
    assert "cannot derive a ledger row from ASSET_MATERIALIZATION" in reason
    assert "ledger/returns" in reason
    (asset,) = [d.row for d in derived if d.table is workload_run_assets]
    assert (asset["asset_key"], asset["partition"], asset["upstream"]) == (
        "ledger/prices",
        "us",
        [],
    )
    assert any(d.event_type == "RUN_SUCCESS" for d in derived)


def test_fit_bounds_text_but_never_alters_identifiers() -> None:
    row = {
        "run_id": "r" * 100,
        "actor": "\u202e" + "a" * 300,
        "error": "line 1\nline\x002",
        "status_event_id": 7,
    }
    fitted = fit(workload_runs, row)
    assert fitted["run_id"] == row["run_id"]  # too long for its column: refused, not cut
    assert len(fitted["actor"]) == 255 and fitted["actor"].startswith("\\u202eaaa")
    assert fitted["error"] == "line 1\nline\\x002"
    assert fitted["status_event_id"] == 7
    asset = fit(workload_run_assets, {"upstream": ["a\x00b", "c"], "partition": "p\n1"})
    assert asset == {"upstream": ["a\\x00b", "c"], "partition": "p\\x0a1"}
