"""`alphaswarm-orch worker ...`."""

import click

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.execution.worker import run_worker


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
