"""Contracts of the Celery, kombu and dagster-celery internals in alphaswarm_orch.compat.celery,
each exercised the way the package uses it, against the pinned versions."""

from __future__ import annotations

import sys
from collections.abc import Callable

import celery
import pytest

from alphaswarm_orch.compat import celery as compat
from tests.compat.contract import broken, check_all_covered, has_members, run_contract


def _fail(name: str, what: str, dist: str = "celery") -> str:
    return broken(compat, name, dist, what)


def redis_priority_lists() -> None:
    """broker/redis_queues.py names every list of a queue from these (KEDA counts them)."""
    assert compat.PRIORITY_STEPS == [0, 3, 6, 9], _fail(
        "PRIORITY_STEPS", f"kombu's Redis priority steps are now {compat.PRIORITY_STEPS}", "kombu"
    )
    assert compat.PRIORITY_SEPARATOR == "\x06\x16", _fail(
        "PRIORITY_SEPARATOR", f"now {compat.PRIORITY_SEPARATOR!r}", "kombu"
    )
    assert compat.Channel.sep == compat.PRIORITY_SEPARATOR
    assert compat.Channel.unacked_key == "unacked", _fail(
        "Channel", f"unacked hash is now {compat.Channel.unacked_key!r}", "kombu"
    )
    channel_name = compat.Channel._q_for_pri(object.__new__(compat.Channel), "q", 3)
    assert channel_name == "q\x06\x163", _fail("Channel", f"list of q step 3 is {channel_name!r}")


def worker_request_state() -> None:
    missing = has_members(compat.worker_state, ["active_requests", "reserved_requests"])
    assert not missing, _fail("worker_state", f"{missing} are gone (busy gauge, drain)")
    assert len(compat.worker_state.active_requests) == 0


def consumer_steps() -> None:
    """control/health.py's HeartbeatStep requires the tasks step; HeartbeatConsumer wraps
    `ensure_connected`."""
    steps = compat.Consumer.Blueprint.default_steps
    assert compat.CONSUMER_TASKS_STEP in steps, _fail(
        "CONSUMER_TASKS_STEP", f"not among the consumer's steps {sorted(steps)}"
    )
    assert has_members(compat.Consumer, ["ensure_connected"]) == [], _fail(
        "Consumer", "ensure_connected is gone"
    )


def event_dispatch() -> None:
    """control/metrics.py counts events in a dispatcher subclass installed by Events."""
    assert compat.Events.dispatcher_cls == "celery.events.dispatcher:EventDispatcher", _fail(
        "Events", f"dispatcher_cls is {compat.Events.dispatcher_cls!r}"
    )
    app = celery.Celery(broker="memory://", events="alphaswarm_orch.control.metrics:MeteredEvents")
    assert isinstance(app.events, compat.Events), _fail("Events", "Celery(events=...) ignored")
    assert list(compat.EventDispatcher.send.__code__.co_varnames[:3]) == ["self", "type", "blind"]


def node_names() -> None:
    assert list(compat.nodesplit("default@host-1")) == ["default", "host-1"], _fail(
        "nodesplit", "no longer splits name@host"
    )


def step_task_names() -> None:
    dist = "dagster-celery"
    assert compat.TASK_EXECUTE_PLAN_NAME == "execute_plan", _fail(
        "TASK_EXECUTE_PLAN_NAME", "the step task's name changed", dist
    )
    assert isinstance(compat.DELEGATE_MARKER, str) and compat.DELEGATE_MARKER, _fail(
        "DELEGATE_MARKER", "not a marker string", dist
    )
    assert compat.DAGSTER_CELERY_STEP_PRIORITY_TAG == "dagster-celery/priority", _fail(
        "DAGSTER_CELERY_STEP_PRIORITY_TAG", "the README's step priority tag changed", dist
    )
    assert compat.DAGSTER_CELERY_RUN_PRIORITY_TAG == "dagster-celery/run_priority", _fail(
        "DAGSTER_CELERY_RUN_PRIORITY_TAG", "the README's run priority tag changed", dist
    )


def celery_app() -> None:
    app = compat.make_app(
        {"broker": "memory://", "backend": None, "include": [], "config_source": {}}
    )
    dist = "dagster-celery"
    assert app.conf.broker_url == "memory://", _fail("make_app", "broker not taken", dist)


def preload_modules() -> None:
    compat.import_run_worker_modules()
    assert all(name in sys.modules for name in compat.RUN_WORKER_MODULES)


CONTRACTS = {
    redis_priority_lists: ["PRIORITY_STEPS", "PRIORITY_SEPARATOR", "Channel"],
    worker_request_state: ["worker_state"],
    consumer_steps: ["CONSUMER_TASKS_STEP", "Consumer"],
    event_dispatch: ["Events", "EventDispatcher"],
    node_names: ["nodesplit"],
    preload_modules: ["RUN_WORKER_MODULES", "import_run_worker_modules"],
    step_task_names: [
        "TASK_EXECUTE_PLAN_NAME", "DELEGATE_MARKER", "DAGSTER_CELERY_STEP_PRIORITY_TAG",
        "DAGSTER_CELERY_RUN_PRIORITY_TAG",
    ],
    celery_app: ["make_app"],
}
"""Each contract and the compat names it covers."""


def test_every_exported_name_has_a_contract() -> None:
    check_all_covered(compat, CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_contract(contract: Callable[..., None]) -> None:
    run_contract(contract)
