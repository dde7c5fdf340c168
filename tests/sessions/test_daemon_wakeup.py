"""The real daemon acts on a request when it arrives, not on its next loop, and on requests
held by the kill switch when the switch is cleared.

The sensor loop and the dequeue interval are both set to 30 s here: a run created and
launched well before that was picked up by the request streams' listener and launched by the
woken dequeue loop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pytest
import redis
from dagster._core.scheduler.instigation import InstigatorType

from alphaswarm_orch.broker.keys import request_hold_key, request_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.tags import REQUEST_ID_TAG
from tests.support.processes import background, read_log
from tests.support.runs import REPO, wait_for

pytestmark = pytest.mark.integration

LOOP_SECONDS = 30
"""Both periods: anything the daemon does sooner after an arrival, a wake-up did."""


def _ticked(instance: dg.DagsterInstance, name: str) -> bool:
    return any(
        instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.instigator_name == name
    )


def test_a_request_is_launched_on_arrival_not_on_the_next_loop(
    sensor_env: dict[str, str], instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    config = Path(sensor_env["DAGSTER_HOME"]) / "dagster.yaml"
    text = config.read_text()
    assert "dequeue_interval_seconds: 1\n" in text
    config.write_text(
        text.replace("dequeue_interval_seconds: 1\n", "dequeue_interval_seconds: 30\n")
    )
    env = {**sensor_env, "ALPHASWARM_SENSOR_LOOP_SECONDS": str(LOOP_SECONDS)}
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-w", "workspace.yaml"]
    with background(argv, env, cwd=str(REPO)) as daemon:
        try:
            # The first loop ran (it would pick up a request already waiting).
            wait_for(lambda: _ticked(instance, "paper_request_sensor"), 120, "a first tick")
            payload = {
                "schema_version": 1,
                "type": "paper.start",
                "request_id": "r-wake",
                "actor": "ops",
                "session_id": "s-wake",
                "symbols": ["BTC-USD"],
            }
            redis_client.xadd(request_stream("paper"), {"payload": json.dumps(payload)})
            run = wait_for(
                lambda: next(
                    iter(instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: "r-wake"}))),
                    None,
                ),
                LOOP_SECONDS / 2,
                "the run of r-wake, before the next sensor loop",
                interval=0.1,
            )
            # Launched by the woken dequeue loop: its run worker started the run.
            wait_for(
                lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED,
                LOOP_SECONDS / 2,
                "the run to start before the next dequeue interval",
                interval=0.1,
            )
            # No paper worker here: the session step waits in its queue until terminated.
            _terminate(instance, run)
        except AssertionError:
            print(read_log(daemon)[-6000:])
            raise


def _terminate(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Terminate `run` (its session step waits for a paper worker) and wait for its end."""
    instance.run_launcher.terminate(run.run_id)
    wait_for(
        lambda: instance.get_run_by_id(run.run_id).is_finished, 60, "the terminated run to finish"
    )


def _run_for(instance: dg.DagsterInstance, request_id: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: request_id}))
    return runs[0] if runs else None


def test_requests_held_by_the_kill_switch_launch_when_it_is_cleared(
    sensor_env: dict[str, str], instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    env = {**sensor_env, "ALPHASWARM_SENSOR_LOOP_SECONDS": str(LOOP_SECONDS)}
    switch = KillSwitch(redis_client, sensor_env["ALPHASWARM_KILL_SWITCH_KEY"])
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-w", "workspace.yaml"]
    with background(argv, env, cwd=str(REPO)) as daemon:
        try:
            wait_for(lambda: _ticked(instance, "paper_request_sensor"), 120, "a first tick")
            switch.engage("freeze")
            payload = {
                "schema_version": 1,
                "type": "paper.start",
                "request_id": "r-held",
                "actor": "ops",
                "session_id": "s-held",
                "symbols": ["BTC-USD"],
            }
            redis_client.xadd(request_stream("paper"), {"payload": json.dumps(payload)})
            # The arrival woke the sensor, which held the request (and said by which switch).
            wait_for(
                lambda: redis_client.get(request_hold_key("paper")) == switch.key.encode(),
                LOOP_SECONDS / 2,
                "the paper request sensor to hold the request",
                interval=0.1,
            )
            assert _run_for(instance, "r-held") is None
            switch.clear()
            run = wait_for(
                lambda: _run_for(instance, "r-held"),
                LOOP_SECONDS / 2,
                "the run of r-held, before the next sensor loop",
                interval=0.1,
            )
            assert redis_client.get(request_hold_key("paper")) is None
            wait_for(
                lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED,
                60,
                "the run to start",
                interval=0.1,
            )
            _terminate(instance, run)
        except AssertionError:
            print(read_log(daemon)[-6000:])
            raise
