"""The ingestion domain's definitions: routing, jobs, schedules, freshness checks, config errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from alphaswarm_orch.defs import ingestion
from alphaswarm_orch.defs.ingestion.checks import freshness_checks
from alphaswarm_orch.defs.ingestion.config import (
    CONNECTIONS_FILE,
    IngestionConfigError,
    load_ingestion_config,
)
from alphaswarm_orch.defs.ingestion.resources import AirbyteResource
from alphaswarm_orch.routing import step_queues
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import WORKLOAD_TAG

CONNECTION = """
  - name: vendor_prices
    connection_id: 9b3c2d1e-4f5a-4b6c-8d7e-0f1a2b3c4d5e
    streams: [prices, corporate_actions]
    cron: "0 6 * * 1-5"
    max_age_hours: 26
"""


def config_with(tmp_path: Path, connections: str, airbyte: str = "") -> Path:
    text = CONNECTIONS_FILE.read_text().replace(
        "airbyte_connections: []", f"airbyte_connections:{connections}"
    )
    if airbyte:
        text = text.replace("airbyte:\n  auth: client_credentials\n", f"airbyte:\n{airbyte}")
    path = tmp_path / "connections.yaml"
    path.write_text(text)
    return path


def defs_for(tmp_path: Path, config_path: Path = CONNECTIONS_FILE) -> dg.Definitions:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    return ingestion.build_defs(settings, load_ingestion_config(config_path))


def test_every_ingestion_step_runs_on_the_ingestion_queue(tmp_path):
    defs = defs_for(tmp_path, config_with(tmp_path, CONNECTION))
    jobs = [j for j in defs.resolve_all_job_defs() if j.name.startswith("ingestion_")]

    assert {j.name for j in jobs} == {
        "ingestion_sample_job",
        "ingestion_pull_market_data_job",
        "ingestion_pull_reference_data_job",
        "ingestion_sync_vendor_prices_job",
        "ingestion_check_freshness_job",
    }
    for job in jobs:
        assert job.tags[WORKLOAD_TAG] == "ingestion", job.name
        assert set(step_queues(job).values()) == {"ingestion"}, job.name


def test_schedules_follow_the_config(tmp_path):
    defs = defs_for(tmp_path, config_with(tmp_path, CONNECTION))
    crons = {s.name: s.cron_schedule for s in defs.schedules}

    assert crons == {
        "ingestion_pull_market_data_job_schedule": "30 6 * * 1-5",
        "ingestion_pull_reference_data_job_schedule": "0 5 * * 1-5",
        "ingestion_sync_vendor_prices_job_schedule": "0 6 * * 1-5",
        "ingestion_check_freshness_job_schedule": "*/30 * * * *",
    }


def test_a_declared_connection_becomes_stream_assets_with_freshness_checks(tmp_path):
    defs = defs_for(tmp_path, config_with(tmp_path, CONNECTION))
    graph = defs.resolve_asset_graph()

    streams = {
        dg.AssetKey(["ingestion", "vendor_prices", "prices"]),
        dg.AssetKey(["ingestion", "vendor_prices", "corporate_actions"]),
    }
    assert streams <= graph.get_all_asset_keys()
    checked = {key.asset_key for key in graph.asset_check_keys}
    assert (
        streams
        | {
            dg.AssetKey(["ingestion", "market_data", "daily_bars"]),
            dg.AssetKey(["ingestion", "reference_data", "exchanges"]),
        }
        <= checked
    )
    assert dg.AssetKey(["ingestion", "sample", "instruments"]) not in checked  # unscheduled
    for key in streams:
        spec = graph.get(key)
        assert spec.group_name == "ingestion"
        assert spec.owners == ["team:ingestion"]
        assert "airbyte" in spec.kinds


def test_airbyte_resource_binds_secrets_from_the_environment_at_launch(tmp_path):
    defs = defs_for(tmp_path, config_with(tmp_path, CONNECTION))
    airbyte = defs.resources["airbyte"]

    assert isinstance(airbyte, AirbyteResource)
    assert airbyte.server_url == dg.EnvVar("ALPHASWARM_AIRBYTE_URL")
    assert airbyte.client_secret == dg.EnvVar("ALPHASWARM_AIRBYTE_CLIENT_SECRET")
    assert airbyte.poll_interval_seconds == 15
    bearer = defs_for(tmp_path, config_with(tmp_path, CONNECTION, "  auth: bearer\n"))
    assert bearer.resources["airbyte"].bearer_token == dg.EnvVar("ALPHASWARM_AIRBYTE_TOKEN")


def test_shipped_config_declares_no_airbyte_resource_without_connections(tmp_path):
    assert "airbyte" not in defs_for(tmp_path).resources


@pytest.mark.parametrize(
    ("connections", "airbyte", "message"),
    [
        (CONNECTION.replace("9b3c2d1e-", "not-a-uuid-"), "", "connection_id: 'not-a-uuid-4f5a"),
        (
            CONNECTION.replace('"0 6 * * 1-5"', '"every morning"'),
            "",
            "cron: 'every morning' is not",
        ),
        (CONNECTION.replace("26", "-1"), "", "max_age_hours: -1 must be a positive"),
        (CONNECTION + CONNECTION, "", "names must be unique; repeated: vendor_prices"),
        (CONNECTION.replace("vendor_prices", "market_data"), "", "collide with the dlt pulls"),
        (CONNECTION.replace("name: vendor_prices", "name: Vendor-Prices"), "", "'Vendor-Prices'"),
        (CONNECTION, "  auth: basic\n", "auth: 'basic' is not one of"),
        (CONNECTION, "  poll_every: 5\n", "unknown setting 'poll_every'"),
        (CONNECTION, "  request_timeout_seconds: fast\n", "request_timeout_seconds: 'fast'"),
    ],
)
def test_bad_config_is_named(tmp_path, connections, airbyte, message):
    path = config_with(tmp_path, connections, airbyte)
    with pytest.raises(IngestionConfigError, match=re.escape(message)):
        load_ingestion_config(path)


def test_freshness_check_passes_when_fresh_and_warns_when_stale_or_never():
    key = dg.AssetKey(["ingestion", "vendor", "prices"])

    @dg.asset(key=key)
    def prices() -> int:
        return 1

    fresh = freshness_checks({key: 1.0})
    stale = freshness_checks({key: 1e-9})
    with dg.DagsterInstance.ephemeral() as instance:
        never = dg.materialize(
            [prices, fresh], instance=instance, selection=dg.AssetSelection.checks(fresh)
        )
        assert [e.passed for e in never.get_asset_check_evaluations()] == [False]
        assert never.get_asset_check_evaluations()[0].metadata["age_hours"].value == "never"

        passed = dg.materialize([prices, fresh], instance=instance)
        (evaluation,) = passed.get_asset_check_evaluations()
        assert evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.WARN

        late = dg.materialize(
            [prices, stale], instance=instance, selection=dg.AssetSelection.checks(stale)
        )
        assert [e.passed for e in late.get_asset_check_evaluations()] == [False]


def test_config_errors_name_the_file_and_line(tmp_path):
    path = config_with(tmp_path, CONNECTION.replace("26", "-1"))
    line = next(
        i
        for i, text in enumerate(path.read_text().splitlines(), 1)
        if text.startswith("    max_age_hours: -1")
    )
    with pytest.raises(
        IngestionConfigError,
        match=re.escape(f"{path}:{line}: airbyte_connections[0].max_age_hours: -1"),
    ):
        load_ingestion_config(path)
    path.write_text(
        CONNECTIONS_FILE.read_text().replace(
            "exchanges: {primary_key: [mic]}", "exchanges: {primary_key: [mic], cursor: 5}"
        )
    )
    line = next(
        i for i, text in enumerate(path.read_text().splitlines(), 1) if "exchanges:" in text
    )
    with pytest.raises(
        IngestionConfigError,
        match=re.escape(f"{path}:{line}: pulls.reference_data.tables.exchanges.cursor: 5"),
    ):
        load_ingestion_config(path)


def test_config_reports_every_problem_with_the_workflow_spec_checks(tmp_path):
    """connections.yaml goes through the same loader as workflow specs: every problem at once,
    duplicate keys refused, aliases bounded before they expand."""
    path = config_with(tmp_path, CONNECTION.replace("26", "-1").replace("corporate_", "Corporate_"))
    path.write_text(path.read_text() + "owners: [someone_else]\n")
    with pytest.raises(IngestionConfigError) as info:
        load_ingestion_config(path)
    first = path.read_text().splitlines().index('owners: ["team:ingestion"]') + 1
    assert [str(problem).split(": ", 1)[1] for problem in info.value.problems] == [
        f"owners: duplicate key 'owners' (first at line {first})",
        "airbyte_connections[0].max_age_hours: -1 must be a positive number of hours",
        "airbyte_connections[0].streams[1]: 'Corporate_actions' is not a valid name; use "
        "lowercase letters, digits and '_' (it becomes part of asset keys and job names)",
    ]

    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    path.write_text(CONNECTIONS_FILE.read_text() + "\n".join(bomb) + "\n")
    with pytest.raises(IngestionConfigError, match="aliases expand to more than 10000 nodes"):
        load_ingestion_config(path)


def test_ingestion_config_variable_selects_the_file_in_a_real_process(tmp_path):
    """`dagster definitions validate` (a fresh process) loads ALPHASWARM_INGESTION_CONFIG, and
    names the file and line of a bad entry, or the variable when the file is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    env["ALPHASWARM_STORAGE_DIR"] = str(tmp_path / "storage")
    argv = [sys.executable, "-m", "dagster", "definitions", "validate"]
    argv += ["-m", "alphaswarm_orch.definitions"]
    bad = config_with(tmp_path, CONNECTION.replace('"0 6 * * 1-5"', '"every morning"'))
    line = next(
        i
        for i, text in enumerate(bad.read_text().splitlines(), 1)
        if text.startswith('    cron: "every morning"')
    )

    def validate(config: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            env={**env, "ALPHASWARM_INGESTION_CONFIG": str(config)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )

    failed = validate(bad)
    assert failed.returncode != 0
    assert f"{bad}:{line}: airbyte_connections[0].cron: 'every morning' is not a valid cron" in (
        failed.stdout + failed.stderr
    )
    missing = validate(tmp_path / "nope.yaml")
    assert missing.returncode != 0
    assert f"ALPHASWARM_INGESTION_CONFIG='{tmp_path / 'nope.yaml'}' is not a file" in (
        missing.stdout + missing.stderr
    )


SCHEDULE_VARIABLES = {
    "ingestion_pull_market_data_job_schedule": {
        "ALPHASWARM_MARKET_DATA_URL": "http://127.0.0.1:9/v1",
        "ALPHASWARM_MARKET_DATA_API_KEY": "",
    },
    "ingestion_pull_reference_data_job_schedule": {
        "ALPHASWARM_REFERENCE_DB_URL": "sqlite:///refdata.db"
    },
    "ingestion_sync_vendor_prices_job_schedule": {
        "ALPHASWARM_AIRBYTE_URL": "http://127.0.0.1:9/v1",
        "ALPHASWARM_AIRBYTE_CLIENT_ID": "app",
        "ALPHASWARM_AIRBYTE_CLIENT_SECRET": "secret",
    },
}


def test_schedules_run_by_default_and_skip_naming_a_missing_variable(tmp_path, monkeypatch):
    defs = defs_for(tmp_path, config_with(tmp_path, CONNECTION))
    schedules = {s.name: s for s in defs.schedules}
    assert {s.default_status for s in schedules.values()} == {dg.DefaultScheduleStatus.RUNNING}
    for variables in SCHEDULE_VARIABLES.values():
        for name in variables:
            monkeypatch.delenv(name, raising=False)

    for name, variables in SCHEDULE_VARIABLES.items():
        with dg.build_schedule_context() as context:
            tick = schedules[name].evaluate_tick(context)
        assert not tick.run_requests, name
        assert f"{name}: not configured here: {', '.join(variables)}" in tick.skip_message

        for variable, value in variables.items():
            monkeypatch.setenv(variable, value)
        with dg.build_schedule_context() as context:
            tick = schedules[name].evaluate_tick(context)
        assert tick.skip_message is None, name
        (request,) = tick.run_requests
        assert request.tags[WORKLOAD_TAG] == "ingestion"

    with dg.build_schedule_context() as context:  # nothing to configure: always runs
        tick = schedules["ingestion_check_freshness_job_schedule"].evaluate_tick(context)
    assert len(tick.run_requests) == 1
