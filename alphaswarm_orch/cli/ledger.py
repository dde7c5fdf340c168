"""`alphaswarm-orch ledger sync|show RUN_ID|tail|quarantine`: the workload_runs audit ledger."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import dagster as dg
import sqlalchemy as sa

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.ledger.db import LedgerUnavailable, ledger_engine, ledger_errors
from alphaswarm_orch.ledger.mirror import DEFAULT_BATCH_SIZE, LedgerMirror, MirrorUnsupported
from alphaswarm_orch.ledger.schema import (
    ledger_quarantine,
    ledger_refusals,
    workload_run_assets,
    workload_run_steps,
    workload_run_transitions,
    workload_runs,
)
from alphaswarm_orch.ledger.store import mirror_status
from alphaswarm_orch.settings import Settings

_module_option = click.option(
    "--module",
    "-m",
    default="alphaswarm_orch.definitions",
    show_default=True,
    help="Module whose `defs` give the asset graph (upstream lineage).",
)


@click.group(name="ledger")
def ledger_group() -> None:
    """Mirror runs into workload_runs and read them back."""


@ledger_group.command(name="sync")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--follow", is_flag=True, help="Keep mirroring; retry while the ledger is down.")
@click.option(
    "--interval", type=float, default=5.0, show_default=True, help="Seconds between polls."
)
@_module_option
def sync_command(batch_size: int, follow: bool, interval: float, module: str) -> None:
    """Catch the ledger up with the Dagster instance ($DAGSTER_HOME)."""
    with _mirror(module, batch_size) as mirror:
        while True:
            try:
                results = mirror.sync()
            except LedgerUnavailable as exc:
                if not follow:
                    raise click.ClickException(str(exc)) from exc
                click.echo(f"error: {exc}", err=True)
            else:
                last = results[-1]
                click.echo(
                    f"mirrored {sum(r.events for r in results)} events "
                    f"({sum(r.runs for r in results)} run rows) in {len(results)} batches; "
                    f"{sum(r.quarantined for r in results)} quarantined; "
                    f"cursor {last.cursor}"
                )
            if not follow:
                return
            time.sleep(interval)


@ledger_group.command(name="show")
@click.argument("run_id")
def show_command(run_id: str) -> None:
    """Everything the ledger holds about RUN_ID."""
    settings = _settings()
    with _connection(settings) as conn:
        run = conn.execute(
            sa.select(workload_runs).where(workload_runs.c.run_id == run_id)
        ).one_or_none()
        if run is None:
            cursor = mirror_status(settings).cursor
            raise click.ClickException(
                f"run {run_id!r} is not in the ledger (mirrored up to event {cursor}); "
                "check the id, or catch up with `alphaswarm-orch ledger sync`"
            )
        steps = conn.execute(
            sa.select(workload_run_steps)
            .where(workload_run_steps.c.run_id == run_id)
            .order_by(workload_run_steps.c.started_at, workload_run_steps.c.step_key)
        ).all()
        assets = conn.execute(
            sa.select(workload_run_assets)
            .where(workload_run_assets.c.run_id == run_id)
            .order_by(workload_run_assets.c.event_id)
        ).all()
        transitions = conn.execute(
            sa.select(workload_run_transitions)
            .where(workload_run_transitions.c.run_id == run_id)
            .order_by(workload_run_transitions.c.event_id)
        ).all()
    for name in (
        "run_id", "job_name", "workload_kind", "status", "trigger", "trigger_detail",
        "queues", "actor", "request_id", "parent_run_id", "root_run_id", "queued_at",
        "starting_at", "started_at", "ended_at", "error", "refusal_reason",
    ):  # fmt: skip
        value = getattr(run, name)
        if value not in (None, ""):
            click.echo(f"{name:15} {_text(value)}")
    click.echo("steps:")
    for step in steps:
        duration = f"{step.duration_seconds:.3f}s" if step.duration_seconds is not None else "-"
        click.echo(f"  {step.step_key:30} {step.status:12} {duration:>10}  queue={step.queue}")
        if step.error:
            click.echo(f"    {step.error}")
    click.echo("assets:")
    for asset in assets:
        partition = f" [{asset.partition}]" if asset.partition else ""
        upstream = ", ".join(asset.upstream) or "-"
        click.echo(f"  {asset.asset_key}{partition}  <- {upstream}")
    click.echo("transitions:")
    for t in transitions:
        click.echo(f"  {_text(t.at)}  {t.step_key or '(run)':30} {t.status}")


@ledger_group.command(name="tail")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=20, show_default=True)
def tail_command(lines: int) -> None:
    """The most recently changed runs, recent refusals, quarantined events and the mirror's
    state."""
    settings = _settings()
    with _connection(settings) as conn:
        runs = conn.execute(
            sa.select(workload_runs).order_by(workload_runs.c.status_event_id.desc()).limit(lines)
        ).all()
        refusals = conn.execute(
            sa.select(ledger_refusals).order_by(ledger_refusals.c.id.desc()).limit(lines)
        ).all()
        quarantined = _quarantined(conn, lines)
    for run in reversed(runs):
        note = run.refusal_reason or run.error or ""
        click.echo(
            f"{run.run_id}  {run.job_name:28} {run.workload_kind:10} {run.trigger:9} "
            f"{run.status:9} {_text(run.ended_at or run.started_at)}  {note[:80]}"
        )
    for refusal in reversed(refusals):
        where = " ".join(
            f"{k}={v}" for k in ("queue", "run_id", "request_id") if (v := getattr(refusal, k))
        )
        click.echo(f"refused  {_text(refusal.at)}  {refusal.source}: {refusal.reason}  {where}")
    for row in quarantined:
        click.echo(_quarantine_line(row))
    status = mirror_status(settings)
    click.echo(
        f"mirror: cursor {status.cursor}, lag {status.lag_seconds:.1f}s, "
        f"rows written {status.rows_written}, {status.quarantined} quarantined, "
        f"last sync {_text(status.synced_at)}"
        + (
            f", last error {_text(status.last_error_at)}: {status.last_error}"
            if status.last_error
            else ""
        )
    )


@ledger_group.command(name="quarantine")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--retry",
    "retry",
    is_flag=True,
    help="Mirror the quarantined events again (all, or the EVENT_IDs given), e.g. after "
    "fixing what refused them; those still refused stay, with the new reason.",
)
@_module_option
@click.argument("event_ids", nargs=-1, type=int)
def quarantine_command(lines: int, retry: bool, module: str, event_ids: tuple[int, ...]) -> None:
    """Dagster events the mirror set aside because the ledger could not store them."""
    if event_ids and not retry:
        raise click.UsageError("EVENT_IDs are only taken with --retry")
    if retry:
        with _mirror(module, DEFAULT_BATCH_SIZE) as mirror:
            try:
                result = mirror.retry_quarantined(event_ids or None)
            except LedgerUnavailable as exc:
                raise click.ClickException(str(exc)) from exc
        click.echo(
            f"retried: {len(result.mirrored)} mirrored, {len(result.quarantined)} still "
            f"quarantined, {len(result.missing)} no longer in Dagster's event log"
            + (f" ({', '.join(map(str, result.missing))})" if result.missing else "")
        )
    settings = _settings()
    with _connection(settings) as conn:
        rows = _quarantined(conn, lines)
        total = conn.execute(sa.select(sa.func.count()).select_from(ledger_quarantine)).scalar()
    for row in rows:
        click.echo(_quarantine_line(row))
    click.echo(f"{total} quarantined events" + (f" (latest {len(rows)} shown)" if rows else ""))


def _quarantined(conn: sa.Connection, lines: int) -> list[sa.Row[Any]]:
    """The latest quarantined events, oldest first."""
    q = ledger_quarantine
    rows = conn.execute(sa.select(q).order_by(q.c.event_id.desc()).limit(lines)).all()
    return list(reversed(rows))


def _quarantine_line(row: sa.Row[Any]) -> str:
    return (
        f"quarantined {row.event_id}  run {row.run_id}  {row.event_type}  "
        f"{_text(row.at)}: {row.reason}"
    )


@contextmanager
def _mirror(module: str, batch_size: int) -> Iterator[LedgerMirror]:
    """A mirror of the Dagster instance at $DAGSTER_HOME (default: under the storage dir)."""
    settings = _settings()
    if not os.environ.get("DAGSTER_HOME"):
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    asset_graph = _definitions(module).resolve_asset_graph()
    with dg.DagsterInstance.get() as instance:
        try:
            mirror = LedgerMirror(
                settings, instance, asset_graph=asset_graph, batch_size=batch_size
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        except MirrorUnsupported as exc:
            raise click.ClickException(str(exc)) from exc
        yield mirror


def _definitions(module: str) -> dg.Definitions:
    try:
        loaded = importlib.import_module(module).defs
    except (ImportError, AttributeError) as exc:
        raise click.UsageError(
            f"--module {module!r} has no `defs` ({exc}); name the module that defines the "
            "code location's Definitions, e.g. alphaswarm_orch.definitions"
        ) from exc
    return loaded if isinstance(loaded, dg.Definitions) else loaded()


def _settings() -> Settings:
    with user_errors():
        return Settings.from_env()


@contextmanager
def _connection(settings: Settings) -> Iterator[sa.Connection]:
    """A ledger connection whose outage becomes a one-line CLI error."""
    try:
        with ledger_errors(settings.ledger_url):
            conn = ledger_engine(settings).connect()
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    with conn:
        yield conn


def _text(value: Any) -> str:
    return (
        value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "isoformat") else str(value)
    )
