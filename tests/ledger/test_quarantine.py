"""The mirror never stops for one bad event: real Dagster runs on a Postgres instance, mirrored
into a Postgres ledger. Values the ledger can hold after sanitising are stored sanitised; an
event that still cannot be written is quarantined alone and the mirror carries on past it."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from alphaswarm_orch.cli.main import main
from alphaswarm_orch.control.metrics import ledger_lag_series
from alphaswarm_orch.ledger.db import ledger_engine
from alphaswarm_orch.ledger.events import READ_TYPES
from alphaswarm_orch.ledger.mirror import LedgerMirror
from alphaswarm_orch.ledger.schema import (
    ledger_quarantine,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.ledger.store import mirror_status
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG
from alphaswarm_orch.text import unsafe_reason
from tests.support import services

pytestmark = pytest.mark.integration

ACTOR_LENGTH = workload_runs.c.actor.type.length


@dg.op
def settle() -> int:
    return 1


@dg.job(executor_def=dg.in_process_executor)
def ledger_plain_job() -> None:
    settle()


@dg.op(config_schema={"message": str})
def reject(context: dg.OpExecutionContext) -> None:
    raise ValueError(context.op_config["message"])


@dg.job(executor_def=dg.in_process_executor)
def ledger_failing_job() -> None:
    reject()


def _fail(instance: dg.DagsterInstance, message: str) -> str:
    config = {"ops": {"reject": {"config": {"message": message}}}}
    result = ledger_failing_job.execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )
    assert not result.success
    return result.run_id


@pytest.fixture(scope="module")
def dagster_db() -> Iterator[str]:
    with services.temporary_database("as_ledger_q_dagster") as url:
        yield url


@pytest.fixture(scope="module")
def instance(dagster_db: str) -> Iterator[dg.DagsterInstance]:
    overrides = {"storage": {"postgres": {"postgres_url": dagster_db}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with services.temporary_database("as_ledger_q") as url:
        yield _settings(url, tmp_path)


def _settings(ledger_url: str, storage: Path) -> Settings:
    return Settings.from_env(
        {"ALPHASWARM_LEDGER_URL": ledger_url, "ALPHASWARM_STORAGE_DIR": str(storage)}
    )


def _newest_event_id(instance: dg.DagsterInstance) -> int:
    return max(
        max(instance.event_log_storage.get_logs_for_all_runs_by_log_id(dagster_event_type=t))
        for t in READ_TYPES
        if instance.event_log_storage.get_logs_for_all_runs_by_log_id(dagster_event_type=t)
    )


def _marker() -> str:
    return f"FORBIDDEN_{uuid.uuid4().hex[:8]}"


def _run_row(settings: Settings, run_id: str) -> sa.Row:
    with ledger_engine(settings).connect() as conn:
        return conn.execute(sa.select(workload_runs).where(workload_runs.c.run_id == run_id)).one()


def _quarantined(settings: Settings) -> list[sa.Row]:
    with ledger_engine(settings).connect() as conn:
        return conn.execute(sa.select(ledger_quarantine).order_by("event_id")).all()


def _assert_caught_up(settings: Settings, instance: dg.DagsterInstance) -> None:
    status = mirror_status(settings)
    assert status.cursor == _newest_event_id(instance)
    assert status.last_error is None


def test_actor_tag_longer_than_its_column_is_cut_and_later_runs_mirror(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    actor = "ui-user-" + "a" * 292  # anyone can set this tag from the UI's launchpad
    long_run = ledger_plain_job.execute_in_process(
        instance=instance, tags={ACTOR_TAG: actor, REQUEST_ID_TAG: "r" * 400}
    ).run_id
    later = ledger_plain_job.execute_in_process(instance=instance).run_id

    assert LedgerMirror(settings, instance).sync()[-1].drained
    row = _run_row(settings, long_run)
    assert len(row.actor) == ACTOR_LENGTH
    assert row.actor.startswith(actor[:200]) and row.actor.endswith(" more chars]")
    assert len(row.request_id) == workload_runs.c.request_id.type.length
    assert row.status == "success"
    assert _run_row(settings, later).status == "success"
    _assert_caught_up(settings, instance)
    assert _quarantined(settings) == []


def test_nul_in_a_steps_error_text_is_escaped_and_later_runs_mirror(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    failed = _fail(instance, "feed sent \x00 at byte 7\nsecond line \u202e")
    later = ledger_plain_job.execute_in_process(instance=instance).run_id

    assert LedgerMirror(settings, instance).sync()[-1].drained
    expected = "ValueError: feed sent \\x00 at byte 7\nsecond line \\u202e"
    assert _run_row(settings, failed).error == expected
    with ledger_engine(settings).connect() as conn:
        step = conn.execute(
            sa.select(workload_run_steps).where(workload_run_steps.c.run_id == failed)
        ).one()
    assert (step.step_key, step.status, step.error) == ("reject", "failure", expected)
    assert _run_row(settings, later).status == "success"
    _assert_caught_up(settings, instance)
    assert _quarantined(settings) == []


def test_event_the_ledger_refuses_is_quarantined_alone_and_the_mirror_moves_on(
    instance: dg.DagsterInstance,
    dagster_db: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A constraint stands in for any per-row refusal the database may have (a trigger, a
    # check, a type limit): a step failure mentioning `marker` cannot be stored (the run's
    # own failure event, which quotes it too, can).
    marker = _marker()  # other tests' runs share the instance: refuse only this one
    with ledger_engine(settings).begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE workload_run_transitions ADD CONSTRAINT no_forbidden "
                f"CHECK (step_key IS NULL OR detail IS NULL OR detail NOT LIKE '%{marker}%')"
            )
        )
    before = ledger_plain_job.execute_in_process(instance=instance).run_id
    bad = _fail(instance, f"{marker} payload")
    later = ledger_plain_job.execute_in_process(instance=instance).run_id
    bad_event = next(
        r.storage_id
        for r in instance.get_records_for_run(bad).records
        if r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_FAILURE
    )

    mirror = LedgerMirror(settings, instance)  # one batch holds every event: it is bisected
    results = mirror.sync()
    assert results[-1].drained and sum(r.quarantined for r in results) == 1
    (row,) = _quarantined(settings)
    assert (row.event_id, row.run_id, row.event_type) == (bad_event, bad, "STEP_FAILURE")
    assert "workload_run_transitions" in row.reason and "no_forbidden" in row.reason
    # Every other event of that run is mirrored: it ran and failed.
    bad_row = _run_row(settings, bad)
    assert (bad_row.status, bad_row.started_at is not None) == ("failure", True)
    with ledger_engine(settings).connect() as conn:
        mirrored = conn.execute(
            sa.select(workload_run_transitions.c.event_id).where(
                workload_run_transitions.c.run_id == bad
            )
        ).scalars()
        expected = {
            r.storage_id
            for r in instance.get_records_for_run(bad).records
            if r.event_log_entry.dagster_event_type in READ_TYPES
        } - {bad_event}
        assert set(mirrored) == expected
    assert _run_row(settings, before).status == _run_row(settings, later).status == "success"
    _assert_caught_up(settings, instance)
    status = mirror_status(settings)
    assert status.quarantined == 1

    # Later ticks re-read the trailing window without retrying or re-counting it, and
    # runs after it keep arriving.
    newest = ledger_plain_job.execute_in_process(instance=instance).run_id
    assert sum(r.quarantined for r in mirror.sync()) == 0
    assert _run_row(settings, newest).status == "success"
    assert len(_quarantined(settings)) == 1
    _assert_caught_up(settings, instance)

    gauges = {f.name: f.samples[0].value for f in ledger_lag_series(settings)}
    assert gauges["alphaswarm_ledger_quarantined_events"] == 1

    monkeypatch.setenv("ALPHASWARM_LEDGER_URL", settings.ledger_url)
    monkeypatch.setenv("ALPHASWARM_STORAGE_DIR", str(settings.storage_dir))
    tail = CliRunner().invoke(main, ["ledger", "tail"])
    assert tail.exit_code == 0, tail.output
    assert f"quarantined {bad_event}  run {bad}  STEP_FAILURE" in tail.output
    assert "1 quarantined" in tail.output
    listed = CliRunner().invoke(main, ["ledger", "quarantine"])
    assert listed.exit_code == 0, listed.output
    assert str(bad_event) in listed.output and "no_forbidden" in listed.output
    assert "1 quarantined events" in listed.output

    # A retry while the cause is still there keeps it, with the reason; once fixed, the
    # event is mirrored and leaves the quarantine.
    retried = mirror.retry_quarantined()
    assert (retried.mirrored, retried.quarantined, retried.missing) == ([], [bad_event], [])
    with ledger_engine(settings).begin() as conn:
        conn.execute(sa.text("ALTER TABLE workload_run_transitions DROP CONSTRAINT no_forbidden"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {dagster_db}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    argv = ["ledger", "quarantine", "--retry", "--module", "tests.ledger.workloads"]
    released = CliRunner().invoke(main, [*argv, str(bad_event)])
    assert released.exit_code == 0, released.output
    assert "retried: 1 mirrored, 0 still quarantined" in released.output
    assert _quarantined(settings) == [] and mirror_status(settings).quarantined == 0
    with ledger_engine(settings).connect() as conn:
        step = conn.execute(
            sa.select(workload_run_steps).where(workload_run_steps.c.run_id == bad)
        ).one()
    assert (step.status, step.error) == ("failure", f"ValueError: {marker} payload")
    assert _run_row(settings, bad).started_at == bad_row.started_at


def test_embedded_sqlite_ledger_quarantines_too(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The bisection's savepoints on SQLite: a trigger refuses one event (IntegrityError)."""
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    marker = _marker()
    with ledger_engine(settings).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER no_forbidden BEFORE INSERT ON workload_run_transitions "
                f"WHEN NEW.step_key IS NOT NULL AND NEW.detail LIKE '%{marker}%' "
                "BEGIN SELECT RAISE(ABORT, 'no_forbidden'); END"
            )
        )
    bad = _fail(instance, f"{marker} on sqlite")
    later = ledger_plain_job.execute_in_process(instance=instance).run_id

    results = LedgerMirror(settings, instance).sync()
    assert results[-1].drained and sum(r.quarantined for r in results) == 1
    (row,) = _quarantined(settings)
    assert (row.run_id, row.event_type) == (bad, "STEP_FAILURE")
    assert "IntegrityError" in row.reason and "no_forbidden" in row.reason
    assert _run_row(settings, bad).status == "failure"
    assert _run_row(settings, later).status == "success"
    _assert_caught_up(settings, instance)


TAG_KEYS = (ACTOR_TAG, REQUEST_ID_TAG, "user", "dagster/schedule_name")
TAG_VALUES = st.text(max_size=40) | st.text(min_size=200, max_size=1200)


def test_arbitrary_tag_values_are_mirrored_and_the_ledger_keeps_mirroring(
    instance: dg.DagsterInstance, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with services.temporary_database("as_ledger_q") as url:
        settings = _settings(url, tmp_path_factory.mktemp("ledger_property"))
        mirror = LedgerMirror(settings, instance)

        @hypothesis_settings(
            max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
        @given(tags=st.dictionaries(st.sampled_from(TAG_KEYS), TAG_VALUES, min_size=1))
        @example(tags={ACTOR_TAG: "ops\x00admin", REQUEST_ID_TAG: "req-\u202egnp.exe"})
        @example(tags={"user": "u" * 300, "dagster/schedule_name": "s" * 256})
        def check(tags: dict[str, str]) -> None:
            run_id = str(uuid.uuid4())
            orphaned = False
            try:
                ledger_plain_job.execute_in_process(instance=instance, run_id=run_id, tags=tags)
            except ValueError:
                orphaned = True
                # Dagster's own Postgres run storage cannot hold NUL: it keeps the run row,
                # tags in its body, without tag rows. Terminating it records a real event.
                assert any("\x00" in v for v in tags.values())
                orphan = instance.get_run_by_id(run_id)
                assert orphan is not None
                instance.report_run_canceled(orphan)

            # Each example's run is mirrored after every earlier example's: none stopped it.
            assert mirror.sync()[-1].drained
            row = _run_row(settings, run_id)
            actor = tags.get(ACTOR_TAG) or tags.get("user")
            _assert_stored(row.actor, actor, ACTOR_LENGTH)
            _assert_stored(row.request_id, tags.get(REQUEST_ID_TAG), ACTOR_LENGTH)
            assert row.status == ("canceled" if orphaned else "success")
            if "dagster/schedule_name" in tags:
                assert row.trigger == "schedule"
                _assert_stored(row.trigger_detail, tags["dagster/schedule_name"], ACTOR_LENGTH)
            _assert_caught_up(settings, instance)
            assert mirror_status(settings).quarantined == 0

        check()
        later = ledger_plain_job.execute_in_process(instance=instance).run_id
        mirror.sync()
        assert _run_row(settings, later).status == "success"
        _assert_caught_up(settings, instance)


def _assert_stored(stored: str | None, value: str | None, length: int) -> None:
    """Stored as it is when the column can hold it; else escaped and bounded, never lost."""
    if value is None:
        assert stored is None
        return
    assert stored is not None and len(stored) <= length
    assert unsafe_reason(stored) is None
    if unsafe_reason(value) is None and len(value) <= length:
        assert stored == value
        return
    safe_prefix = next((value[:i] for i, c in enumerate(value) if unsafe_reason(c)), value)
    assert stored != value and stored.startswith(safe_prefix[: length // 2])
