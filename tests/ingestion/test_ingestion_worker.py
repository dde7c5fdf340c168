"""The production path: the sample pull runs on a real `ingestion` Celery worker and lands in
Postgres (ALPHASWARM_POSTGRES_URL), with the run on the Postgres-backed instance."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from alphaswarm_orch.defs.ingestion.config import CONNECTIONS_FILE
from tests.ingestion.fake_airbyte import FakeAirbyte, running_fake
from tests.support.runs import REPO, execute_job, execute_job_argv, step_outcomes, step_workers

pytestmark = pytest.mark.integration


def test_sample_pull_runs_on_the_ingestion_worker_into_postgres(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance
) -> None:
    worker = start_worker("ingestion", "w-ingestion")

    execute_job(orch_env, "ingestion_sample_job")

    [run] = instance.get_runs()
    assert run.tags["alphaswarm/workload"] == "ingestion"
    assert step_outcomes(instance, run.run_id) == {"ingestion_sample_pull": "SUCCESS"}
    assert step_workers(instance, run.run_id) == {"ingestion_sample_pull": worker.node}

    url = orch_env["ALPHASWARM_POSTGRES_URL"].replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM sample.instruments")
            assert cur.fetchone() == (5,)
            cur.execute("SELECT count(*) FROM sample.daily_bars")
            assert cur.fetchone() == (50,)
    finally:
        conn.close()
    assert not (
        Path(orch_env["ALPHASWARM_STORAGE_DIR"]) / "ingestion" / "ingestion.duckdb"
    ).exists()


CONNECTION_ID = "9b3c2d1e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"


def airbyte_env(orch_env: dict[str, str], fake: FakeAirbyte, tmp_path: Path) -> dict[str, str]:
    """orch_env plus a connections file (ALPHASWARM_INGESTION_CONFIG) naming one connection."""
    text = CONNECTIONS_FILE.read_text()
    text = text.replace(
        "airbyte_connections: []",
        "airbyte_connections:\n"
        f"  - {{name: vendor_prices, connection_id: {CONNECTION_ID}, streams: [prices],"
        ' cron: "0 6 * * 1-5", max_age_hours: 26}',
    ).replace("  poll_interval_seconds: 15\n", "  poll_interval_seconds: 0.2\n")
    path = tmp_path / "connections.yaml"
    path.write_text(text)
    return {
        **orch_env,
        "ALPHASWARM_INGESTION_CONFIG": str(path),
        "ALPHASWARM_AIRBYTE_URL": fake.base_url,
        "ALPHASWARM_AIRBYTE_CLIENT_ID": "celery-test-app",
        "ALPHASWARM_AIRBYTE_CLIENT_SECRET": "celery-test-secret",
    }


def test_airbyte_syncs_on_a_worker_survive_conflicts_and_token_churn(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Two launches of one connection at once both succeed on one Airbyte job; a token revoked
    mid-poll is refreshed; a token revoked between syncs is not reused by the worker."""
    with running_fake() as fake:
        env = airbyte_env(orch_env, fake, tmp_path)
        worker = start_worker("ingestion", "w-airbyte", "--concurrency", "2", env=env)
        fake.new_job_statuses = ["running"] * 8 + ["succeeded"]
        fake.race_lists(2)  # both runs list before either posts: Airbyte answers one 409
        fake.revoke_at("GET", "job", 3, 401)  # a token expires mid-sync

        launches = [
            subprocess.Popen(
                execute_job_argv("ingestion_sync_vendor_prices_job"),
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [launch.communicate(timeout=240)[0] for launch in launches]
        assert [launch.returncode for launch in launches] == [0, 0], (
            outputs[0][-3000:] + (outputs[1][-3000:])
        )
        assert sorted(s.status for s in fake.requests("POST", "jobs")) == [200, 409]
        assert len(fake.jobs) == 1
        assert 401 in [s.status for s in fake.requests("GET", "job")]

        fake.revoke_tokens(401)  # rotated between syncs: each pool process holds a dead token
        marker = len(fake.seen)
        fake.new_job_statuses = ["running", "succeeded"]
        execute_job(env, "ingestion_sync_vendor_prices_job")
        later = [(s.method, s.path.removeprefix("/v1"), s.status) for s in fake.seen[marker:]]
        assert later[:2] == [("GET", "/jobs", 401), ("POST", "/applications/token", 200)]
        assert fake.violations == []

    runs = instance.get_runs()
    assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    for run in runs:
        assert step_workers(instance, run.run_id)["airbyte_sync_vendor_prices"] == worker.node
    job_ids = {
        record.asset_materialization.metadata["airbyte/job_id"].value
        for run in runs
        for record in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
    }
    assert len(job_ids) == 2  # the two concurrent runs shared one job; the third made its own
