"""`alphaswarm-orch run JOB`: run a job of this code location, as CI does, then say what it did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.cli.run_summary import load_asset_graph, print_summary
from alphaswarm_orch.instance import prepare_dagster_home
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.tags import CLI_INVOCATION_TAG

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@click.command(name="run")
@click.argument("job")
@click.option("--config", "-c", "config", multiple=True, help="Run config YAML file(s).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Console level of the run's log; `debug` shows every Dagster event and warning.",
)
@click.option(
    "--multiprocess",
    is_flag=True,
    help="Embedded default only: run each step in a process of its own (as the daemon does) "
    "instead of all steps in the run's process.",
)
def run_command(job: str, config: tuple[str, ...], log_level: str, multiprocess: bool) -> None:
    """Run JOB with `dagster job execute` on a persistent instance, mirror it into the
    ledger and print what it wrote.

    With DAGSTER_HOME unset the instance is the project's `dagster.yaml` in
    ALPHASWARM_STORAGE_DIR/dagster_home (SQLite there), so the embedded default needs nothing
    but the package.
    """
    with user_errors():
        settings = Settings.from_env()
    env = dict(os.environ)
    if not env.get("DAGSTER_HOME"):
        if note := prepare_dagster_home(settings.dagster_home):
            click.echo(note, err=True)
        env["DAGSTER_HOME"] = str(settings.dagster_home)
    if log_level.lower() != "debug":
        # Dagster's beta/supersession notices about our own definitions, once per process.
        env.setdefault("PYTHONWARNINGS", "ignore")
    invocation = uuid.uuid4().hex
    argv = [sys.executable, "-m", "dagster", "job", "execute"]
    argv += ["-m", "alphaswarm_orch.definitions", "-j", job]
    argv += ["--tags", json.dumps({CLI_INVOCATION_TAG: invocation})]
    for path in config:
        argv += ["-c", path]
    # Meanwhile load the asset graph the ledger mirror needs for lineage.
    pool = ThreadPoolExecutor(max_workers=1)
    asset_graph = pool.submit(load_asset_graph)
    with tempfile.TemporaryDirectory() as tmp:
        # Files listed first take precedence: the caller's config can still set loggers.
        console = Path(tmp) / "console.yaml"
        defaults: dict = {"loggers": {"console": {"config": {"log_level": log_level.upper()}}}}
        if settings.embedded and not multiprocess:
            # In process: the code location is imported once, not again by a step process
            # (about half the time before the first step of the sample job).
            defaults["execution"] = {"config": {"in_process": {}}}
        console.write_text(json.dumps(defaults))
        returncode = _run_in_foreground([*argv, "-c", str(console)], env)
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    print_summary(settings, invocation, asset_graph)
    pool.shutdown()
    sys.exit(returncode)


def _run_in_foreground(argv: list[str], env: dict[str, str]) -> int:
    """Run the job's process to its end. Ctrl-C reaches it from the terminal (Dagster then
    cancels the run cleanly); SIGTERM to us is passed on. Either way we still summarise."""
    child = subprocess.Popen(argv, env=env)
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
