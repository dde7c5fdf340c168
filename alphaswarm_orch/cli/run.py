"""`alphaswarm-orch run JOB`: run a job of this code location, as CI does."""

import os
import sys
from pathlib import Path

import click

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.settings import Settings


@click.command(name="run")
@click.argument("job")
@click.option("--config", "-c", "config", multiple=True, help="Run config YAML file(s).")
def run_command(job: str, config: tuple[str, ...]) -> None:
    """Run JOB with `dagster job execute`, on a persistent instance.

    With DAGSTER_HOME unset the instance is SQLite under ALPHASWARM_STORAGE_DIR, so the
    embedded default needs nothing but the package.
    """
    with user_errors():
        settings = Settings.from_env()
    env = dict(os.environ)
    if not env.get("DAGSTER_HOME"):
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        env["DAGSTER_HOME"] = str(settings.dagster_home)
        create_instance_once(settings.dagster_home)
    argv = [sys.executable, "-m", "dagster", "job", "execute"]
    argv += ["-m", "alphaswarm_orch.definitions", "-j", job]
    for path in config:
        argv += ["-c", path]
    os.execve(sys.executable, argv, env)


INITIALIZED = ".alphaswarm-instance-ready"


def create_instance_once(home: Path) -> None:
    """Create the embedded instance's SQLite tables before `dagster job execute` does.

    Two runs started at once on a fresh storage dir would both create them and one dies
    (`table runs already exists`); here the first creates them under a file lock and leaves
    a marker, so later runs skip this (and its import of dagster) entirely.
    """
    if (home / INITIALIZED).exists():
        return
    from filelock import FileLock

    with FileLock(str(home / ".instance.lock")):
        if (home / INITIALIZED).exists():
            return
        from dagster import DagsterInstance

        DagsterInstance.from_config(str(home)).dispose()
        (home / INITIALIZED).touch()
