"""Turn the project's validation errors into one-line CLI failures with exit code 2."""

from collections.abc import Iterator
from contextlib import contextmanager

import click

from alphaswarm_orch.queues import QueueError
from alphaswarm_orch.settings import SettingsError


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except (QueueError, SettingsError) as exc:
        raise click.UsageError(str(exc)) from exc
