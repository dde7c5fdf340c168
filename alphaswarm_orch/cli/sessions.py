"""`alphaswarm-orch sessions list|show S`: every paper/HFT session, where it runs, its lag."""

from __future__ import annotations

import json
from datetime import datetime

import click
import redis
import sqlalchemy as sa

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.ledger.db import LedgerUnavailable, engine_for, ledger_errors
from alphaswarm_orch.sessions.schema import paper_sessions
from alphaswarm_orch.sessions.status import SessionView, list_sessions, session_events
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.text import sanitize


@click.group(name="sessions")
def sessions_group() -> None:
    """Paper and HFT sessions: state, owner, lag, last tick."""


@sessions_group.command(name="list")
@click.option("--family", type=click.Choice(["paper", "hft"]), default=None)
@click.option("--active", is_flag=True, help="Only sessions that continue (not ended ones).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(family: str | None, active: bool, as_json: bool) -> None:
    """Every session: state, worker, lag (pending + undelivered ticks), last tick age."""
    views = _views(family=family, active_only=active)
    if as_json:
        for view in views:
            click.echo(json.dumps(_record(view), default=str))
        return
    click.echo(
        f"{'SESSION':24} {'FAMILY':6} {'STATE':12} {'LAG':>6} {'LAST TICK':>10} "
        f"{'H/L/R':>8}  WORKER"
    )
    for view in views:
        counts = f"{view.handoffs}/{view.losses}/{view.resumes}"
        click.echo(
            f"{view.session_id:24} {view.family:6} {view.status:12} {_lag(view):>6} "
            f"{_age(view):>10} {counts:>8}  {_where(view)}"
        )


@sessions_group.command(name="show")
@click.argument("session_id")
def show_command(session_id: str) -> None:
    """One session in full, with its recent lifecycle events."""
    views = _views(session_id=session_id)
    if not views:
        raise click.ClickException(
            f"no session '{sanitize(session_id, 80)}' in the ledger (a session appears once "
            "its step first starts); `alphaswarm-orch sessions list` shows them all"
        )
    view = views[0]
    for name, value in _record(view).items():
        click.echo(f"{name:16} {value if value is not None else '-'}")
    click.echo("events:")
    for event in view.events:
        detail = f"  {sanitize(event['detail'], 200)}" if event["detail"] else ""
        click.echo(
            f"  {_when(event['at'])}  {event['event']:12} fence={event['fence']}  "
            f"{event['worker'] or '-'}{detail}"
        )


def _views(**filters: object) -> list[SessionView]:
    with user_errors():
        settings = Settings.from_env()
        redis_url = settings.require_redis("alphaswarm-orch sessions")
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        engine = engine_for(settings.ledger_url)  # a read: never migrates the ledger
        with ledger_errors(settings.ledger_url):
            if not sa.inspect(engine).has_table(paper_sessions.name):
                return []  # no session step has started yet
            views = list_sessions(engine, client, **filters)  # type: ignore[arg-type]
            if filters.get("session_id") and views:
                views[0].events = session_events(engine, views[0].session_id)
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
        raise click.ClickException(f"cannot read sessions: {exc}") from exc
    finally:
        client.close()
    return views


def _record(view: SessionView) -> dict[str, object]:
    return {
        "session": view.session_id,
        "family": view.family,
        "state": view.status,
        "stored_state": view.stored_status,
        "since": _when(view.status_at),
        "detail": sanitize(view.status_detail, 500) if view.status_detail else None,
        "worker": view.worker,
        "owner_now": f"{view.owner.worker} (fence {view.owner.fence})" if view.owner else None,
        "fence": view.fence,
        "run": view.run_id,
        "lag": view.lag,
        "pending": view.pending,
        "undelivered": view.undelivered,
        "last_tick": _when(view.last_tick_at),
        "last_tick_age_s": round(age, 1) if (age := view.last_tick_age()) is not None else None,
        "handoffs": view.handoffs,
        "losses": view.losses,
        "resumes": view.resumes,
        "cash": view.cash,
        "equity": view.equity,
        "realized_pnl": view.realized_pnl,
    }


def _where(view: SessionView) -> str:
    if view.status in ("handing_off", "lost"):
        return f"waiting for a worker slot (last on {view.worker or '-'})"
    return view.worker or "-"


def _lag(view: SessionView) -> str:
    return "-" if view.lag is None else str(view.lag)


def _age(view: SessionView) -> str:
    age = view.last_tick_age()
    return "-" if age is None else f"{age:.1f}s"


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") if value is not None else None
