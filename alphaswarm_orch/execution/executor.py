"""The executor this code location uses, chosen once in `definitions.py`.

With a broker configured, steps go to Celery over Redis and are routed by their
`dagster-celery/queue` tag; the broker and backend come from the environment when the run
starts, so no URL (and no password) is ever written into run config. The run loop
(`loop.py`) replaces dagster-celery's 1 s polling loop; the worker task is `tasks.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster import DagsterEvent

from alphaswarm_orch.broker.celery_config import celery_config
from alphaswarm_orch.compat.celery import make_app
from alphaswarm_orch.compat.dagster import (
    ExecutionPlan,
    PlanOrchestrationContext,
    RetryMode,
    get_retries_config,
)
from alphaswarm_orch.execution.loop import celery_execution_loop
from alphaswarm_orch.settings import Settings


class AlphaswarmCeleryExecutor(dg.Executor):
    """Runs each step as a Celery task on the worker of its queue (see loop.py, tasks.py)."""

    def __init__(
        self,
        retries: RetryMode,
        broker: str,
        backend: str | None,
        include: list[str],
        config_source: dict[str, Any],
    ) -> None:
        self._retries = retries
        self.broker = broker
        self.backend = backend
        self.include = include
        self.config_source = config_source

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def app_args(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "backend": self.backend,
            "include": self.include,
            "config_source": self.config_source,
        }

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        app = make_app(self.app_args())
        try:
            yield from celery_execution_loop(plan_context, execution_plan, app)
        finally:
            app.close()


@dg.executor(
    name="alphaswarm_celery",
    config_schema={
        "broker": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Celery broker URL; default ALPHASWARM_BROKER_URL.",
        ),
        "backend": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Redis result backend; default ALPHASWARM_RESULT_BACKEND or broker db 1.",
        ),
        "include": dg.Field([str], is_required=False, default_value=[]),
        "config_source": dg.Field(dg.Noneable(dg.Permissive()), is_required=False),
        "retries": get_retries_config(),
    },
    requirements=dg.multiple_process_executor_requirements(),
)
def alphaswarm_celery_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Celery executor over the Redis light queues, configured from the environment."""
    settings = Settings.from_env()
    config = init_context.executor_config
    broker = config.get("broker") or settings.require_broker("the Celery executor")
    backend = config.get("backend") or settings.result_backend
    return AlphaswarmCeleryExecutor(
        retries=RetryMode.from_config(config["retries"]),
        broker=broker,
        backend=backend,
        include=config.get("include") or [],
        config_source={**celery_config(settings), **(config.get("config_source") or {})},
    )


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The one executor choice: Celery with a broker, else Dagster's local executor.

    Embedded, that is `multi_or_in_process_executor`: multiprocess by default (the daemon and
    `dev`), and in-process where a run's config asks for it (`alphaswarm-orch run` does: one
    process imports the code location once instead of once per step)."""
    if settings.embedded:
        return dg.multi_or_in_process_executor
    return alphaswarm_celery_executor
