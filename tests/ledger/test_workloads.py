"""The benchmarks' backlog copied inside Postgres (`workloads.grow_in_database`) is the history
`workloads.grow` writes through Dagster's API: the same runs, tags and events, up to run ids."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from alphaswarm_orch.ledger.events import READ_TYPES
from tests.ledger import workloads
from tests.support import services

pytestmark = pytest.mark.integration
COPIES = workloads.VARIANTS + 1  # every variant of every template, and one again


@pytest.fixture(scope="module")
def grown() -> Iterator[tuple[dg.DagsterInstance, workloads.History, int]]:
    with (
        services.temporary_database("as_ledger_workloads") as url,
        dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as inst,
    ):
        history = workloads.execute_templates(inst)
        templates = len(history.run_ids)
        types = frozenset(READ_TYPES)
        workloads.grow(inst, history, COPIES, event_types=types)
        workloads.grow_in_database(inst, history, COPIES, event_types=types)
        yield inst, history, templates


def _normalised(instance: dg.DagsterInstance, ids: dict[str, str], run_id: str) -> list[str]:
    """The run (body, tags) and its events serialised, each copy's run ids named by template."""
    run = instance.get_run_by_id(run_id)
    assert run is not None, run_id
    events = [r.event_log_entry for r in instance.get_records_for_run(run_id, limit=1000).records]
    texts = [serialize_value(run), repr(sorted(run.tags.items())), *map(serialize_value, events)]
    for copy_id, name in ids.items():
        texts = [text.replace(copy_id, name) for text in texts]
    return texts


def test_copies_in_the_database_are_the_copies_through_the_api(
    grown: tuple[dg.DagsterInstance, workloads.History, int],
) -> None:
    instance, history, templates = grown
    by_api = history.run_ids[templates : templates * (COPIES + 1)]
    in_db = history.run_ids[templates * (COPIES + 1) :]
    assert len(by_api) == len(in_db) == templates * COPIES
    assert len(set(in_db)) == len(in_db) and not set(in_db) & set(by_api)
    for copy in range(COPIES):
        api_ids = by_api[copy * templates : (copy + 1) * templates]
        db_ids = in_db[copy * templates : (copy + 1) * templates]
        names = [f"<template {n}>" for n in range(templates)]
        for n in range(templates):
            api = _normalised(instance, dict(zip(api_ids, names, strict=True)), api_ids[n])
            db = _normalised(instance, dict(zip(db_ids, names, strict=True)), db_ids[n])
            assert db == api, (copy, n)
            assert history.expected_trigger[db_ids[n]] == history.expected_trigger[api_ids[n]]
            assert (db_ids[n] in history.refused) == (api_ids[n] in history.refused)


def test_copies_in_the_database_are_found_by_tag_and_in_event_order(
    grown: tuple[dg.DagsterInstance, workloads.History, int],
) -> None:
    instance, history, templates = grown
    last = history.run_ids[-1]
    tagged = instance.get_runs(dg.RunsFilter(tags={"alphaswarm/request_id": f"req-{last}"}))
    assert [run.run_id for run in tagged] == [last]
    # copy by copy, template by template: the events of the copies were stored in that order
    firsts = [
        instance.get_records_for_run(run_id, limit=1).records[0].storage_id
        for run_id in history.run_ids[-2 * templates :]
    ]
    assert firsts == sorted(firsts)
