"""The embedded default under concurrency: two `alphaswarm-orch run` of the sample pull
started at once on a fresh storage dir (real processes, SQLite instance, one duckdb file).
Before: one died creating the instance's tables (`table runs already exists`, or two alembic
heads) or on duckdb's file lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from alphaswarm_orch.defs.ingestion.resources import PullStorage
from alphaswarm_orch.settings import Settings

pytestmark = pytest.mark.integration


def embedded_env(storage: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    return {**env, "ALPHASWARM_STORAGE_DIR": str(storage)}


def test_two_runs_at_once_on_a_fresh_storage_dir_both_succeed(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    env = embedded_env(storage)
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "run", "ingestion_sample_job"]
    runs = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]

    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-4000:]
        assert "ingestion_sample_job  SUCCESS" in output
    duckdb_path = PullStorage(Settings.from_env(env)).duckdb_path
    with duckdb.connect(str(duckdb_path), read_only=True) as db:
        assert db.sql("SELECT count(*) FROM sample.instruments").fetchall() == [(5,)]
        assert db.sql("SELECT count(*) FROM sample.daily_bars").fetchall() == [(50,)]
