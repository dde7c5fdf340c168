"""The production path: the sample pull runs on a real `ingestion` Celery worker and lands in
Postgres (ALPHASWARM_POSTGRES_URL), with the run on the Postgres-backed instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from tests.support.runs import execute_job, step_outcomes, step_workers

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
