"""`alphaswarm-orch worker ...`."""

import click

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.control.drain import DRAIN_TIMEOUT_SECONDS, DrainError, drain
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.worker.process import run_worker


@click.group(name="worker", invoke_without_command=True)
@click.option(
    "--queues",
    "-q",
    multiple=True,
    help="Light queues to consume, comma-separated or repeated (default,workflows).",
)
@click.option("--concurrency", "-c", type=int, default=None, help="Default: from the queue table.")
@click.option("--name", "-n", default=None, help="Worker node name (default: <queues>@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.pass_context
def worker_group(
    ctx: click.Context,
    queues: tuple[str, ...],
    concurrency: int | None,
    name: str | None,
    loglevel: str,
) -> None:
    """Run a Celery worker for this code location's steps (runs in this process: exec it)."""
    if ctx.invoked_subcommand is not None:
        return
    if not queues:
        raise click.UsageError("--queues is required, e.g. --queues default,workflows")
    with user_errors():
        run_worker(list(queues), concurrency=concurrency, name=name, loglevel=loglevel)


@worker_group.command(name="drain")
@click.option(
    "--timeout",
    type=float,
    default=DRAIN_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for running tasks, then for the exit.",
)
def drain_command(timeout: float) -> None:
    """preStop hook: stop the local worker taking tasks, let running ones finish, exit."""
    with user_errors():
        settings = Settings.from_env()
        try:
            report = drain(settings, timeout, say=click.echo)
        except DrainError as exc:
            raise click.ClickException(str(exc)) from exc
    if not report.exited:
        raise click.ClickException(f"worker {report.node} had not exited after {timeout}s")
