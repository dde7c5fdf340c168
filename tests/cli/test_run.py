"""The embedded default's instance keeps a ledger, and `alphaswarm-orch run` uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from alphaswarm_orch.instance import PACKAGED_DAGSTER_YAML, prepare_dagster_home
from alphaswarm_orch.ledger.db import engine_for
from alphaswarm_orch.ledger.mirror import LedgerMirror, MirrorUnsupported
from alphaswarm_orch.ledger.schema import workload_run_assets, workload_runs
from alphaswarm_orch.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@dg.asset
def probe() -> int:
    return 1


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    env["ALPHASWARM_STORAGE_DIR"] = str(tmp_path / ".alphaswarm")
    return env


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Settings]:
    """The environment of a newcomer: nothing configured but the storage dir."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_embedded_env(tmp_path))
    settings = Settings.from_env()
    prepare_dagster_home(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    try:
        yield settings
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_packaged_dagster_yaml_is_the_repos() -> None:
    assert PACKAGED_DAGSTER_YAML.read_text() == (REPO / "dagster.yaml").read_text()


def test_embedded_instance_mirrors_into_the_sqlite_ledger(embedded: Settings) -> None:
    with dg.DagsterInstance.get() as instance:
        assert not instance.event_log_storage.is_run_sharded
        result = dg.materialize([probe], instance=instance)
        LedgerMirror(embedded, instance).sync()
    assert embedded.ledger_url.startswith("sqlite:///")
    with engine_for(embedded.ledger_url).connect() as conn:
        row = conn.execute(
            sa.select(workload_runs).where(workload_runs.c.run_id == result.run_id)
        ).one()
        assets = conn.execute(
            sa.select(workload_run_assets.c.asset_key).where(
                workload_run_assets.c.run_id == result.run_id
            )
        ).all()
    assert (row.trigger, row.status) == ("cli", "success")
    assert [a.asset_key for a in assets] == ["probe"]
    storage = embedded.dagster_home / "storage" / "history"
    assert (storage / "event_log.db").is_file()
    assert not (storage / "runs").exists()  # no per-run shards


def test_store_of_the_sharded_layout_keeps_its_runs_and_says_how_to_get_a_ledger(
    embedded: Settings,
) -> None:
    """An embedded store made before the consolidated event log (Dagster's per-run shards
    under the same dir) still opens with its runs and events; the mirror names the way out."""
    old = embedded.dagster_home / "storage"
    config = embedded.dagster_home / "sharded.yaml"
    config.write_text(f"storage:\n  sqlite:\n    base_dir: {old}\n")
    with dg.DagsterInstance.from_config(str(config.parent), config.name) as legacy:
        assert legacy.event_log_storage.is_run_sharded
        before = dg.materialize([probe], instance=legacy).run_id
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(before) is not None
        assert instance.get_records_for_run(before).records  # its events are still there
        with pytest.raises(MirrorUnsupported, match="sharded per run") as refused:
            LedgerMirror(embedded, instance)
    assert f"move {embedded.dagster_home} aside" in str(refused.value)


def test_first_opens_of_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    """`alphaswarm-orch dev` opens the store from the webserver and the daemon together."""
    env = _embedded_env(tmp_path)
    settings = Settings.from_env(env)
    prepare_dagster_home(settings.dagster_home)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    code = (
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    assert i.get_runs() == []\n"
        "    assert i.event_log_storage.get_maximum_record_id() is None\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)[-3000:]


def test_home_with_dagster_default_layout_gets_a_note(tmp_path: Path) -> None:
    """`alphaswarm-orch run` of earlier versions left Dagster's own default layout in the home."""
    home = tmp_path / "dagster_home"
    (home / "history").mkdir(parents=True)
    (home / "history" / "runs.db").write_bytes(b"")
    note = prepare_dagster_home(home)
    assert note is not None and str(home / "history") in note
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    assert prepare_dagster_home(home) is None  # once


@pytest.mark.integration
def test_run_log_level_debug_shows_every_event_and_the_summary_still_ends_it(
    tmp_path: Path,
) -> None:
    env = _embedded_env(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["alphaswarm-orch", "run", "smoke_route_job", "--log-level", "debug"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert output.count("STEP_SUCCESS") == 3, output[-4000:]
    summary = output[output.index("\nrun ") :]
    assert "smoke_route_job  SUCCESS" in summary
    assert "no assets materialized" in summary
    assert "trigger=cli status=success steps=3 assets=0" in summary


def test_run_of_an_unknown_job_fails_without_a_summary(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["alphaswarm-orch", "run", "no_such_job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "no_such_job" in result.stderr
    assert "look further" not in result.stdout
