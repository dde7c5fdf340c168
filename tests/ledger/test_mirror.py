"""The mirror against a real Postgres Dagster instance: exact, replay-safe, crash-safe,
outage-safe. The Dagster history (200+ runs) is built once per module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from alphaswarm_orch.cli.main import main
from alphaswarm_orch.defs.ledger.sensors import build_ledger_mirror_sensor
from alphaswarm_orch.ledger.db import LedgerUnavailable, ledger_engine
from alphaswarm_orch.ledger.events import READ_TYPES, RUN_STATUSES
from alphaswarm_orch.ledger.mirror import DEFAULT_WINDOW, LedgerMirror, MirrorUnsupported
from alphaswarm_orch.ledger.schema import (
    ledger_mirror_state,
    workload_run_assets,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.ledger.store import mirror_status
from alphaswarm_orch.settings import Settings
from tests.ledger import workloads
from tests.support import services

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
COPIES = 25  # 8 template runs + 8 * 25 copies = 208 runs


@pytest.fixture(scope="module")
def dagster_db() -> Iterator[str]:
    with services.temporary_database("as_ledger_dagster") as url:
        yield url


@pytest.fixture(scope="module")
def history(dagster_db: str) -> Iterator[tuple[dg.DagsterInstance, workloads.History]]:
    overrides = {"storage": {"postgres": {"postgres_url": dagster_db}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        produced = workloads.execute_templates(instance)
        workloads.grow(instance, produced, COPIES, event_types=frozenset(READ_TYPES))
        yield instance, produced


@pytest.fixture
def ledger_url() -> Iterator[str]:
    with services.temporary_database("as_ledger") as url:
        yield url


def _settings(ledger_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ALPHASWARM_LEDGER_URL": ledger_url, "ALPHASWARM_STORAGE_DIR": str(tmp_path)}
    )


def _mirror(
    settings: Settings, instance: dg.DagsterInstance, batch_size: int, window: int = 40
) -> LedgerMirror:
    """A small window so replays of it are exercised on every batch boundary."""
    return LedgerMirror(
        settings,
        instance,
        asset_graph=workloads.defs.resolve_asset_graph(),
        batch_size=batch_size,
        window=window,
    )


def _dagster_events(instance: dg.DagsterInstance) -> dict[int, dg.EventLogEntry]:
    events: dict[int, dg.EventLogEntry] = {}
    for event_type in READ_TYPES:
        events.update(
            instance.event_log_storage.get_logs_for_all_runs_by_log_id(
                dagster_event_type=event_type
            )
        )
    return events


def _cursor(settings: Settings) -> int:
    with ledger_engine(settings).connect() as conn:
        return conn.execute(sa.select(ledger_mirror_state.c.cursor)).scalar_one()


def assert_matches(
    settings: Settings, instance: dg.DagsterInstance, history: workloads.History
) -> None:
    """The ledger holds exactly Dagster's runs, statuses, steps, events and lineage."""
    runs = {r.run_id: r for r in instance.get_runs()}
    assert len(runs) >= 200
    assert set(history.run_ids) == set(runs)
    events = _dagster_events(instance)
    with ledger_engine(settings).connect() as conn:
        ledger = {r.run_id: r for r in conn.execute(sa.select(workload_runs))}
        steps = conn.execute(sa.select(workload_run_steps)).all()
        transitions = conn.execute(sa.select(workload_run_transitions)).all()
        assets = conn.execute(sa.select(workload_run_assets)).all()

    assert set(ledger) == set(runs)
    for run_id, run in runs.items():
        row = ledger[run_id]
        assert row.status == run.status.value.lower(), run_id
        assert row.job_name == run.job_name
        assert (row.trigger, row.trigger_detail) == history.expected_trigger[run_id], run_id
        assert row.parent_run_id == run.parent_run_id
        assert row.root_run_id == run.root_run_id
        assert (row.refusal_reason is not None) == (run_id in history.refused), run_id
        if run.status == dg.DagsterRunStatus.FAILURE:
            assert row.error, run_id

    # Per-step outcomes equal Dagster's own step stats (a sample keeps this quick).
    ledger_steps = {(s.run_id, s.step_key): s.status for s in steps}
    assert len(ledger_steps) == len(steps)
    for run_id in history.run_ids[:: len(history.templates) + 1]:
        expected = {
            (run_id, stat.step_key): stat.status.value.lower()
            for stat in instance.get_run_step_stats(run_id)
        }
        assert {k: v for k, v in ledger_steps.items() if k[0] == run_id} == expected

    status_ids = {i for i, e in events.items() if e.dagster_event_type != ET_MAT}
    assert sorted(t.event_id for t in transitions) == sorted(status_ids)
    materialized = {i for i, e in events.items() if e.dagster_event_type == ET_MAT}
    assert sorted(a.event_id for a in assets) == sorted(materialized)
    lineage = {(a.asset_key, tuple(a.upstream)) for a in assets}
    assert lineage == {("ledger/prices", ()), ("ledger/returns", ("ledger/prices",))}
    assert {a.partition for a in assets} == {"us", "eu"}
    refused = next(r for r in ledger.values() if r.refusal_reason)
    assert refused.refusal_reason.startswith("kill switch 'alphaswarm:kill_switch' is set")
    assert refused.workload_kind == "hft" and refused.queues == "hft"
    assert {r.workload_kind for r in ledger.values()} == {"ingestion", "workflow", "paper", "hft"}
    assert {r.status for r in ledger.values()} == {"success", "failure", "canceled", "starting"}
    triggers = {r.trigger for r in ledger.values()}
    assert triggers == {"cli", "ui", "schedule", "sensor", "backfill", "retry"}
    assert all(r.starting_at is not None for r in ledger.values() if r.status == "starting")
    assert any(s.status == "success" for s in steps if s.step_key == "flaky")
    assert all(s.duration_seconds >= 0 for s in steps if s.status == "success")


ET_MAT = dg.DagsterEventType.ASSET_MATERIALIZATION


def test_mirror_matches_dagster_exactly_and_replays_harmlessly(
    history: tuple[dg.DagsterInstance, workloads.History], ledger_url: str, tmp_path: Path
) -> None:
    instance, produced = history
    settings = _settings(ledger_url, tmp_path)
    mirror = _mirror(settings, instance, batch_size=25)
    results = mirror.sync()
    assert len(results) > 3 and results[-1].drained
    assert_matches(settings, instance, produced)
    status = mirror_status(settings)
    assert status.available and status.last_error is None
    assert status.cursor == max(_dagster_events(instance))
    assert status.lag_seconds == 0.0 and status.rows_written > 0

    mirror.sync()  # idle ticks re-read the trailing window without counting it as new rows
    assert mirror_status(settings).rows_written == status.rows_written
    with ledger_engine(settings).begin() as conn:  # replay the whole log from scratch
        conn.execute(sa.update(ledger_mirror_state).values(cursor=-1))
    _mirror(settings, instance, batch_size=500).sync()
    assert_matches(settings, instance, produced)


def test_embedded_sqlite_ledger_matches_too(
    history: tuple[dg.DagsterInstance, workloads.History], tmp_path: Path
) -> None:
    instance, produced = history
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    assert settings.ledger_url.startswith("sqlite:///")
    _mirror(settings, instance, batch_size=1000).sync()
    assert_matches(settings, instance, produced)


def test_exception_between_writes_commits_nothing_then_restart_is_exact(
    history: tuple[dg.DagsterInstance, workloads.History], ledger_url: str, tmp_path: Path
) -> None:
    instance, produced = history
    settings = _settings(ledger_url, tmp_path)
    mirror = _mirror(settings, instance, batch_size=150)
    mirror.sync_once()
    cursor = _cursor(settings)
    with ledger_engine(settings).connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(workload_runs)).scalar()

    def crash(conn, cursor_, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT INTO workload_run_steps"):
            raise RuntimeError("simulated crash after the transitions and runs were written")

    engine = ledger_engine(settings)
    sa.event.listen(engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            mirror.sync_once()
    finally:
        sa.event.remove(engine, "before_cursor_execute", crash)
    assert _cursor(settings) == cursor
    with ledger_engine(settings).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(workload_runs)).scalar() == (
            before
        )
    assert "simulated crash" in (mirror_status(settings).last_error or "")
    mirror.sync()
    assert_matches(settings, instance, produced)


def test_killed_sync_process_then_restart_is_exact(
    history: tuple[dg.DagsterInstance, workloads.History],
    dagster_db: str,
    ledger_url: str,
    tmp_path: Path,
) -> None:
    instance, produced = history
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {dagster_db}\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ALPHASWARM_LEDGER_URL": ledger_url,
        "ALPHASWARM_STORAGE_DIR": str(tmp_path),
    }
    settings = _settings(ledger_url, tmp_path)
    sync = ["ledger", "sync", "--module", "tests.ledger.workloads"]
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", *sync, "--batch-size", "5"]
    output = tmp_path / "sync.log"
    with output.open("wb") as log:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _state_cursor(ledger_url) > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, output.read_text()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed_at = _state_cursor(ledger_url)
    assert 0 < killed_at < max(_dagster_events(instance))

    result = CliRunner().invoke(main, sync, env=env)
    assert result.exit_code == 0, result.output
    assert "mirrored" in result.output
    assert_matches(settings, instance, produced)


def _state_cursor(url: str) -> int:
    """The committed cursor, read without migrating (the database may be mid-creation)."""
    conn = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('ledger_mirror_state')")
            if cur.fetchone()[0] is None:
                return -1
            cur.execute("SELECT cursor FROM ledger_mirror_state")
            row = cur.fetchone()
            return -1 if row is None else row[0]
    finally:
        conn.close()


def test_ledger_down_keeps_cursor_reports_error_then_catches_up(
    history: tuple[dg.DagsterInstance, workloads.History], ledger_url: str, tmp_path: Path
) -> None:
    instance, produced = history
    settings = _settings(ledger_url, tmp_path)
    mirror = _mirror(settings, instance, batch_size=200)
    mirror.sync_once()
    cursor = _cursor(settings)
    database = ledger_url.rsplit("/", 1)[1]
    _allow_connections(database, False)
    try:
        with pytest.raises(LedgerUnavailable, match=database):
            mirror.sync_once()
        down = mirror_status(settings)
        assert not down.available and database in (down.last_error or "")
    finally:
        _allow_connections(database, True)
    assert _cursor(settings) == cursor
    results = mirror.sync()
    assert results[-1].drained
    assert_matches(settings, instance, produced)
    status = mirror_status(settings)
    assert status.available and database in (status.last_error or "")


def _allow_connections(database: str, allow: bool) -> None:
    """Take the ledger database down (refuse and drop connections) or bring it back."""
    conn = psycopg2.connect(services.POSTGRES_ADMIN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )
    finally:
        conn.close()


def test_sensor_mirrors_and_cli_shows(
    history: tuple[dg.DagsterInstance, workloads.History],
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance, produced = history
    settings = _settings(ledger_url, tmp_path)
    sensor = build_ledger_mirror_sensor(settings)
    context = dg.build_sensor_context(instance=instance, definitions=workloads.defs)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert int(result.cursor) == _cursor(settings) == max(_dagster_events(instance))
    assert_matches(settings, instance, produced)

    monkeypatch.setenv("ALPHASWARM_LEDGER_URL", ledger_url)
    monkeypatch.setenv("ALPHASWARM_STORAGE_DIR", str(tmp_path))
    refused = next(iter(produced.refused))
    shown = CliRunner().invoke(main, ["ledger", "show", refused])
    assert shown.exit_code == 0, shown.output
    assert "refusal_reason  kill switch 'alphaswarm:kill_switch' is set (market halt)" in (
        shown.output
    )
    assert "guarded" in shown.output and "failure" in shown.output
    asset_run = produced.templates[0].run_id
    shown = CliRunner().invoke(main, ["ledger", "show", asset_run])
    assert "ledger/returns [us]  <- ledger/prices" in shown.output
    missing = CliRunner().invoke(main, ["ledger", "show", "no-such-run"])
    assert missing.exit_code == 1 and "'no-such-run' is not in the ledger" in missing.output
    tail = CliRunner().invoke(main, ["ledger", "tail", "-n", "5"])
    assert tail.exit_code == 0, tail.output
    assert len([line for line in tail.output.splitlines() if line[:36] in history[1].run_ids]) == 5
    assert f"mirror: cursor {_cursor(settings)}, lag 0.0s" in tail.output


def test_run_status_names_are_dagster_run_statuses() -> None:
    assert set(RUN_STATUSES.values()) <= {s.value.lower() for s in dg.DagsterRunStatus}


def test_event_committed_out_of_order_is_mirrored_by_the_trailing_window(
    history: tuple[dg.DagsterInstance, workloads.History], ledger_url: str, tmp_path: Path
) -> None:
    instance, produced = history
    settings = _settings(ledger_url, tmp_path)
    no_window = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path / "no_window")})
    _mirror(settings, instance, batch_size=1000).sync()
    LedgerMirror(no_window, instance, window=0).sync()

    # A writer takes an event id, then commits after later events were already mirrored.
    with instance.event_log_storage.index_connection() as conn:
        late_id = conn.execute(sa.text("SELECT nextval('event_logs_id_seq')")).scalar_one()
    workloads.grow(instance, produced, 1, event_types=frozenset(READ_TYPES))
    _mirror(settings, instance, batch_size=1000).sync()
    LedgerMirror(no_window, instance, window=0).sync()
    assert _cursor(settings) > late_id

    late = instance.create_run_for_job(job_def=workloads.workflows_flaky_job)
    instance.report_run_canceled(late)  # stored with a fresh id; copy it under the late id
    record = instance.get_records_for_run(late.run_id).records[-1]
    with instance.event_log_storage.index_connection() as conn:
        conn.execute(sa.text("DELETE FROM event_logs WHERE id = :id"), {"id": record.storage_id})
        row = {**workloads.event_row(record.event_log_entry), "id": late_id}
        conn.execute(workloads.SqlEventLogStorageTable.insert(), [row])
    produced.run_ids.append(late.run_id)
    produced.expected_trigger[late.run_id] = ("cli", None)

    _mirror(settings, instance, batch_size=1000, window=DEFAULT_WINDOW).sync()
    assert_matches(settings, instance, produced)
    LedgerMirror(no_window, instance, window=0).sync()
    with ledger_engine(no_window).connect() as conn:
        missed = conn.execute(
            sa.select(workload_runs.c.run_id).where(workload_runs.c.run_id == late.run_id)
        ).all()
    assert missed == []  # without the window the late event is lost: the window is what saves it


def test_run_sharded_sqlite_instance_is_refused_clearly(tmp_path: Path) -> None:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    with dg.instance_for_test() as instance:
        assert instance.event_log_storage.is_run_sharded
        with pytest.raises(MirrorUnsupported, match="sharded per run"):
            LedgerMirror(settings, instance)
        skipped = build_ledger_mirror_sensor(settings)(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    assert "ALPHASWARM_POSTGRES_URL" in (skipped.skip_message or "")
    assert not (tmp_path / "ledger.db").exists()


def test_status_read_creates_and_migrates_nothing(ledger_url: str, tmp_path: Path) -> None:
    """A metrics scrape reads: it never runs migrations or creates the embedded ledger."""
    settings = _settings(ledger_url, tmp_path)
    status = mirror_status(settings)
    assert (status.available, status.cursor, status.quarantined) == (True, -1, 0)
    with sa.create_engine(ledger_url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    embedded = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path / "embedded")})
    assert mirror_status(embedded).available
    assert not (tmp_path / "embedded" / "ledger.db").exists()
