"""What `alphaswarm-orch run` prints when the run ends: the run, what each asset wrote and
where, its ledger row, and where to look further."""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import click
import dagster as dg
import sqlalchemy as sa

from alphaswarm_orch.ledger.db import LedgerUnavailable, ledger_engine, ledger_errors
from alphaswarm_orch.ledger.mirror import LedgerMirror, MirrorUnsupported
from alphaswarm_orch.ledger.schema import workload_run_assets, workload_run_steps, workload_runs
from alphaswarm_orch.settings import Settings, redacted
from alphaswarm_orch.tags import CLI_INVOCATION_TAG

if TYPE_CHECKING:
    from alphaswarm_orch.compat.dagster import BaseAssetGraph

MIRROR_BUDGET_SECONDS = 30.0
"""How long the CLI helps the mirror catch up; a larger backlog is left to `ledger sync`
or the daemon's ledger_mirror_sensor."""


def load_asset_graph() -> BaseAssetGraph:
    """The code location's asset graph: the mirror records each asset's upstream lineage."""
    from alphaswarm_orch.definitions import defs

    with warnings.catch_warnings():
        # Dagster's beta notices about our definitions; the run's own process shows them
        # under --log-level debug.
        warnings.simplefilter("ignore")
        return defs().resolve_asset_graph()


def print_summary(settings: Settings, invocation: str, asset_graph: Future[BaseAssetGraph]) -> None:
    echo: Callable[[str], None] = click.echo
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={CLI_INVOCATION_TAG: invocation}), limit=1)
        if not runs:
            return  # Dagster refused the job before creating a run; it said why.
        run = runs[0]
        stats = instance.get_run_stats(run.run_id)
        took = (
            f" in {stats.end_time - stats.start_time:.1f}s"
            if stats.start_time and stats.end_time
            else ""
        )
        assets = _materializations(instance, run.run_id)
        echo("")
        echo(f"run {run.run_id}  {run.job_name}  {run.status.value}{took}")
        for key, meta in assets:
            where = _where(meta, key, settings)
            echo(f"  {key.to_user_string():34} {_rows(meta):30} {where}".rstrip())
        if not assets:
            echo("  no assets materialized")
        ledger = _mirror(settings, instance, run.run_id, asset_graph)
    echo(ledger)
    echo("look further:")
    for command, why in _next_steps(settings, run.run_id, assets):
        echo(f"  {command}\n      # {why}")


def _materializations(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[dg.AssetKey, dict[str, Any]]]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    found = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        materialization = event.step_materialization_data.materialization
        meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        found.append((materialization.asset_key, meta))
    return found


def _rows(meta: Mapping[str, Any]) -> str:
    loaded, total = meta.get("rows_loaded"), meta.get("dagster/row_count")
    if loaded is not None and total is not None:
        return f"{loaded} rows written ({total} in table)"
    if total is not None:
        return f"{total} rows"
    return ""


def _where(meta: Mapping[str, Any], key: dg.AssetKey, settings: Settings) -> str:
    """dlt pulls name their dataset; the destination is duckdb under the storage dir on the
    embedded default and Postgres when it is configured (defs/ingestion PullStorage)."""
    dataset = meta.get("dataset_name")
    if dataset is None:
        return str(meta.get("dagster/table_name", ""))
    table = f"{dataset}.{key.path[-1]}"
    if meta.get("destination_name") == "duckdb":
        return f"duckdb {_duckdb_path(settings)} table {table}"
    return f"{meta.get('destination_name', '')} {redacted(settings.postgres_url)} table {table}"


def _duckdb_path(settings: Settings) -> str:
    from alphaswarm_orch.defs.ingestion.resources import PullStorage

    return str(PullStorage(settings).duckdb_path)


def _mirror(
    settings: Settings,
    instance: dg.DagsterInstance,
    run_id: str,
    asset_graph: Future[BaseAssetGraph],
) -> str:
    """Mirror the event log into the ledger now (the daemon's sensor would, later) and
    describe the run's row."""
    try:
        graph = asset_graph.result()
    except Exception as exc:
        return f"ledger: not updated: the code location did not load ({exc})"
    try:
        mirror = LedgerMirror(settings, instance, asset_graph=graph)
        mirror.sync(max_seconds=MIRROR_BUDGET_SECONDS)
        with ledger_errors(settings.ledger_url), ledger_engine(settings).connect() as conn:
            row = conn.execute(
                sa.select(workload_runs).where(workload_runs.c.run_id == run_id)
            ).one_or_none()
            steps = _count(conn, workload_run_steps, run_id)
            assets = _count(conn, workload_run_assets, run_id)
    except MirrorUnsupported as exc:
        return f"ledger: not kept for this instance: {exc}"
    except LedgerUnavailable as exc:
        return f"ledger: not updated: {exc}"
    where = redacted(settings.ledger_url)
    if row is None:
        return (
            f"ledger: {where}: the run is not mirrored yet (backlog larger than "
            f"{MIRROR_BUDGET_SECONDS:g}s); `alphaswarm-orch ledger sync` catches up"
        )
    return (
        f"ledger: {where}: workload_runs {row.run_id}  job={row.job_name} "
        f"workload={row.workload_kind} trigger={row.trigger} status={row.status} "
        f"steps={steps} assets={assets}" + (f"\n  error: {row.error}" if row.error else "")
    )


def _count(conn: sa.Connection, table: sa.Table, run_id: str) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.run_id == run_id)
    ).scalar_one()


def _next_steps(
    settings: Settings, run_id: str, assets: list[tuple[dg.AssetKey, dict[str, Any]]]
) -> list[tuple[str, str]]:
    steps = [
        ("alphaswarm-orch ledger tail", "the ledger's latest runs"),
        (f"alphaswarm-orch ledger show {run_id}", "this run's steps, assets, transitions"),
        ("alphaswarm-orch dev", "the UI on http://127.0.0.1:3000, the daemon, the workers"),
    ]
    tables = [
        f"{meta['dataset_name']}.{key.path[-1]}"
        for key, meta in assets
        if meta.get("destination_name") == "duckdb" and meta.get("dataset_name")
    ]
    if tables:
        path = _duckdb_path(settings)
        query = (
            f"import duckdb; duckdb.connect({path!r}, read_only=True)"
            f".sql('select * from {tables[-1]} limit 5').show()"
        )
        shell = f'"{query}"' if shlex.quote(path) == path else shlex.quote(query)
        steps.append((f"python -c {shell}", f"query {tables[-1]} in duckdb"))
    return steps
