"""The Celery tasks a worker registers to run this code location's steps."""

from __future__ import annotations

from celery import Celery
from dagster_celery.tasks import create_task


def register_tasks(app: Celery) -> None:
    """Register the step task (dagster-celery's `execute_plan` protocol) on `app`."""
    create_task(app)
