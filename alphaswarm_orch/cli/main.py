"""Entry point: one click group, one module per command family."""

import click

from alphaswarm_orch.cli.daemon import daemon_command
from alphaswarm_orch.cli.health import health_command
from alphaswarm_orch.cli.kill_switch import kill_switch_group
from alphaswarm_orch.cli.ledger import ledger_group
from alphaswarm_orch.cli.requests import submit_group
from alphaswarm_orch.cli.run import run_command
from alphaswarm_orch.cli.sessions import sessions_group
from alphaswarm_orch.cli.worker import worker_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the alphaswarm_orch Dagster code location."""


main.add_command(run_command)
main.add_command(health_command)
main.add_command(worker_group)
main.add_command(submit_group)
main.add_command(kill_switch_group)
main.add_command(ledger_group)
main.add_command(daemon_command)
main.add_command(sessions_group)
