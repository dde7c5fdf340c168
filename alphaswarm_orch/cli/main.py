"""Entry point: one click group, one module per command family.

Command modules are imported only when their command runs (click's lazy-group pattern), so a
command that does not need Dagster does not pay for importing it: `kill-switch` and `submit`
need Redis only, and an emergency stop must be instant. `--help` still lists every command
(it imports them all).
"""

import importlib
from typing import Any

import click

LAZY_COMMANDS = {
    "run": "alphaswarm_orch.cli.run:run_command",
    "health": "alphaswarm_orch.cli.health:health_command",
    "worker": "alphaswarm_orch.cli.worker:worker_group",
    "submit": "alphaswarm_orch.cli.requests:submit_group",
    "kill-switch": "alphaswarm_orch.cli.kill_switch:kill_switch_group",
    "ledger": "alphaswarm_orch.cli.ledger:ledger_group",
    "daemon": "alphaswarm_orch.cli.daemon:daemon_command",
    "dev": "alphaswarm_orch.cli.dev:dev_command",
    "sessions": "alphaswarm_orch.cli.sessions:sessions_group",
}
"""Command name -> `module:attribute` of its click command, imported when it is invoked."""


class LazyGroup(click.Group):
    """A group whose subcommands named in `lazy` are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"{self.lazy[cmd_name]} is not the click command {cmd_name!r}")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def main() -> None:
    """Operate the alphaswarm_orch Dagster code location."""
