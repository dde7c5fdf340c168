"""Celery execution: the executor that routes steps by queue, its run loop, and the step task
workers run.

The names below are the package's public entry points; its modules are internal to it. They
load on first use, so a process that needs one (the launcher's `request_cancel`, the instance's
compute log manager) does not import the executor's Celery and Dagster machinery with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers; `__getattr__` loads them at run time
    from alphaswarm_orch.execution.compute_logs import (
        ThreadedComputeLogManager as ThreadedComputeLogManager,
    )
    from alphaswarm_orch.execution.executor import (
        alphaswarm_celery_executor as alphaswarm_celery_executor,
    )
    from alphaswarm_orch.execution.executor import executor_for as executor_for
    from alphaswarm_orch.execution.liveness import request_cancel as request_cancel
    from alphaswarm_orch.execution.tasks import (
        import_instance_classes as import_instance_classes,
    )
    from alphaswarm_orch.execution.tasks import register_tasks as register_tasks
    from alphaswarm_orch.execution.tasks import start_warm_up as start_warm_up

_PUBLIC = {
    "ThreadedComputeLogManager": "compute_logs",
    "alphaswarm_celery_executor": "executor",
    "executor_for": "executor",
    "import_instance_classes": "tasks",
    "register_tasks": "tasks",
    "request_cancel": "liveness",
    "start_warm_up": "tasks",
}

def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
