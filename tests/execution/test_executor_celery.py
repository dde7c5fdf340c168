"""The alphaswarm_celery executor on real workers: termination, worker loss, priority,
routing across queues and the kill switch, observed on the worker side through Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis
import yaml

from alphaswarm_orch.broker import keys, running
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.broker.redis_queues import queue_keys, queue_length
from alphaswarm_orch.settings import Settings
from tests.support.ops import sample, scrape
from tests.support.processes import free_port
from tests.support.runs import step_outcomes, step_workers, wait_for
from tests.support.switches import REASON, write_switch

REPO = Path(__file__).resolve().parents[2]
EXECUTE = [sys.executable, "-m", "dagster", "job", "execute", "-m", "tests.execution.jobs"]

pytestmark = pytest.mark.integration


@pytest.fixture
def env(orch_env: dict[str, str]) -> dict[str, str]:
    """orch_env with the repo importable by workers and a kill-switch key of this test's own."""
    return {
        **orch_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), orch_env.get("PYTHONPATH")])),
        "ALPHASWARM_KILL_SWITCH_KEY": f"alphaswarm:test:kill:{uuid.uuid4().hex}",
    }


@pytest.fixture
def instance(env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ALPHASWARM_", "DAGSTER_"))})
    try:
        with dg.DagsterInstance.get() as inst:
            yield inst
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def broker(env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"], decode_responses=True)
    yield client
    client.close()


def _launch(env: dict[str, str], tmp_path: Path, job: str, ops: dict) -> subprocess.Popen:
    config = tmp_path / f"{job}.yaml"
    config.write_text(yaml.safe_dump({"ops": ops}))
    log = open(tmp_path / f"{job}.log", "w")  # noqa: SIM115 - the process writes it
    return subprocess.Popen(
        [*EXECUTE, "-j", job, "-c", str(config)], env=env, cwd=REPO, stdout=log, stderr=log
    )


def _finish(process: subprocess.Popen, tmp_path: Path, job: str, timeout: float = 180) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(
            f"{job} did not finish in {timeout}s:\n{(tmp_path / f'{job}.log').read_text()}"
        ) from None


def _reports(broker: redis.Redis, key: str) -> list[str]:
    return broker.lrange(key, 0, -1)


def _only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    [run] = wait_for(instance.get_runs, 120, "the run to be created")
    return run


def _finished_run(instance: dg.DagsterInstance, tmp_path: Path, job: str) -> dg.DagsterRun:
    """The run of `job` once its `dagster job execute` exited (with its log if there is none)."""
    runs = instance.get_runs()
    assert len(runs) == 1, (tmp_path / f"{job}.log").read_text()
    return runs[0]


def _step_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    kinds = (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    messages = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type in kinds:
            messages.append(event.event_specific_data.error.message)
    return messages


def _blocking_run(
    env: dict[str, str], tmp_path: Path, broker: redis.Redis, key: str
) -> subprocess.Popen:
    """`dagster job execute` of block_job (300 s), returned once its step runs on a worker."""
    process = _launch(
        env,
        tmp_path,
        "block_job",
        {"blocker": {"config": {"report_key": key, "block_seconds": 300}}},
    )
    try:
        wait_for(lambda: _reports(broker, key), 120, "the step to start on the worker")
    except BaseException:
        process.kill()
        raise
    return process


def _wait_interrupted(broker: redis.Redis, key: str) -> None:
    wait_for(
        lambda: any(r.startswith("interrupted blocker") for r in _reports(broker, key)),
        60,
        "the worker to interrupt the running step",
    )


def test_terminating_a_run_interrupts_its_running_step_and_the_run_ends_canceled(
    env, start_worker, instance, broker, tmp_path
) -> None:
    start_worker("default", "w-term", env=env)
    key = f"report:{uuid.uuid4().hex}"
    process = _blocking_run(env, tmp_path, broker, key)
    try:
        run = _only_run(instance)
        instance.run_launcher.terminate(run.run_id)  # what the UI's Terminate does
        _wait_interrupted(broker, key)
        _finish(process, tmp_path, "block_job")
    finally:
        process.kill()
    reports = _reports(broker, key)
    assert reports[-1] == "interrupted blocker by DagsterExecutionInterruptedError"
    assert not any(r.startswith("finished") for r in reports)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED


@pytest.mark.parametrize("ending", ["terminated", "failed by run monitoring"])
def test_a_step_whose_run_worker_is_gone_stops_when_its_run_ends(
    env, start_worker, instance, broker, tmp_path, ending
) -> None:
    """Nothing is left to relay the end: `terminate` sets the cancel key; a run failed by
    run monitoring is seen by the step's own run check (every 10 s)."""
    start_worker("default", "w-orphan", env=env)
    key = f"report:{uuid.uuid4().hex}"
    process = _blocking_run(env, tmp_path, broker, key)
    try:
        run = _only_run(instance)
    finally:
        process.kill()  # the run worker dies mid-step
        process.wait()
    if ending == "terminated":
        assert instance.run_launcher.terminate(run.run_id)
    else:
        instance.report_run_failed(run, "Run worker lost.")
    _wait_interrupted(broker, key)
    assert not any(r.startswith("finished") for r in _reports(broker, key))


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def test_pool_process_killed_mid_step_is_sent_again_and_the_run_succeeds(
    env, start_worker, instance, broker, tmp_path
) -> None:
    start_worker("default", "w-requeue", env=env)
    key = f"report:{uuid.uuid4().hex}"
    process = _launch(
        env, tmp_path, "block_job", {"blocker": {"config": {"report_key": key, "block_seconds": 3}}}
    )
    try:
        [first] = wait_for(lambda: _reports(broker, key), 120, "the step to start")
        os.kill(int(first.rsplit(" ", 1)[1]), signal.SIGKILL)
        _finish(process, tmp_path, "block_job")
    finally:
        process.kill()
    reports = _reports(broker, key)
    starts = [r for r in reports if r.startswith("started blocker attempt 0")]
    assert len(starts) == 2 and starts[0] != starts[1], reports
    assert reports[-1] == "finished blocker attempt 0"
    run = _finished_run(instance, tmp_path, "block_job")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS


def _engine_messages(instance: dg.DagsterInstance, run_id: str, needle: str) -> list[str]:
    return [
        record.dagster_event.message
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if record.dagster_event is not None and needle in (record.dagster_event.message or "")
    ]


def test_a_killed_pool_process_is_reported_once_naming_the_process_that_died(
    env, start_worker, instance, broker, tmp_path
) -> None:
    """The redelivered step runs on for seconds after the kill: one event, not one a second,
    and it names the killed pool process, not its live replacement."""
    start_worker("default", "w-flood", env=env)
    key = f"report:{uuid.uuid4().hex}"
    process = _launch(
        env, tmp_path, "block_job", {"blocker": {"config": {"report_key": key, "block_seconds": 8}}}
    )
    try:
        [first] = wait_for(lambda: _reports(broker, key), 120, "the step to start")
        killed = int(first.rsplit(" ", 1)[1])
        os.kill(killed, signal.SIGKILL)
        _finish(process, tmp_path, "block_job")
    finally:
        process.kill()
    starts = [r for r in _reports(broker, key) if r.startswith("started blocker")]
    assert len(starts) == 2, starts
    replacement = int(starts[1].rsplit(" ", 1)[1])
    run = _finished_run(instance, tmp_path, "block_job")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    [message] = _engine_messages(instance, run.run_id, "died while running step")
    assert f"pid {killed} died" in message and "WorkerLostError" in message, message
    assert f"pid {replacement}" not in message


def test_worker_killed_mid_step_is_detected_and_the_op_retry_policy_applies(
    env, start_worker, instance, broker, tmp_path
) -> None:
    workers = [start_worker("default", f"w-lost-{i}", env=env) for i in range(2)]
    key = f"report:{uuid.uuid4().hex}"
    process = _launch(
        env,
        tmp_path,
        "fragile_job",
        {"fragile": {"config": {"report_key": key, "block_seconds": 300}}},
    )
    try:
        [first] = wait_for(lambda: _reports(broker, key), 120, "the first attempt to start")
        child = int(first.rsplit(" ", 1)[1])
        parent = _parent_pid(child)
        assert parent in {w.process.pid for w in workers}
        os.kill(parent, signal.SIGKILL)  # the whole worker: nothing is left to requeue it
        os.kill(child, signal.SIGKILL)
        _finish(process, tmp_path, "fragile_job")
    finally:
        process.kill()
    run = _finished_run(instance, tmp_path, "fragile_job")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert _reports(broker, key)[-1] == "finished fragile attempt 1"
    [error] = _step_errors(instance, run.run_id)
    assert 'Step "fragile" lost its worker' in error and "no heartbeat" in error


def test_higher_priority_steps_run_first_on_redis(
    env, start_worker, instance, broker, tmp_path
) -> None:
    """Served by priority; while they wait for a worker, one event says that three do."""
    key = f"report:{uuid.uuid4().hex}"
    probe = {"config": {"report_key": key}}
    process = _launch(env, tmp_path, "priority_job", {"low": probe, "middle": probe, "high": probe})
    try:
        wait_for(lambda: queue_length(broker, "default") == 3, 120, "all three steps queued")
        # p 9 -> Redis 0 (served first), p 5 -> 4 (level 3), p 1 -> 8 (level 6).
        by_level = {k: broker.llen(k) for k in queue_keys("default")}
        assert list(by_level.values()) == [1, 1, 1, 0], by_level
        run = _only_run(instance)
        # No worker yet: the three waiting steps are one event for the queue, not three.
        [waiting] = wait_for(
            lambda: _engine_messages(instance, run.run_id, "for a worker slot"),
            120,
            "the waiting-for-a-slot event",
        )
        assert waiting.startswith("3 steps of this run wait for a worker slot"), waiting
        assert 'on queue "default" (the longest for' in waiting, waiting
        assert "3 queued and 0 running steps on the queue" in waiting, waiting
        start_worker("default", "w-priority", "--concurrency", "1", env=env)
        _finish(process, tmp_path, "priority_job")
    finally:
        process.kill()
    assert _reports(broker, key) == ["high", "middle", "low"]
    assert len(_engine_messages(instance, run.run_id, "for a worker slot")) == 1


def test_job_across_three_queues_runs_each_step_on_a_worker_of_its_queue(
    env, start_worker, instance, broker, tmp_path
) -> None:
    nodes = {q: start_worker(q, f"w-{q}", env=env).node for q in ("workflows", "paper", "default")}
    key = f"report:{uuid.uuid4().hex}"
    probe = {"config": {"report_key": key}}
    process = _launch(
        env,
        tmp_path,
        "three_queue_job",
        {"on_workflows": probe, "on_paper": probe, "on_default": probe},
    )
    _finish(process, tmp_path, "three_queue_job")
    run = _finished_run(instance, tmp_path, "three_queue_job")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert step_workers(instance, run.run_id) == {
        "on_workflows": nodes["workflows"],
        "on_paper": nodes["paper"],
        "on_default": nodes["default"],
    }
    assert _reports(broker, key) == ["workflows", "paper", "default"]


def test_kill_switch_refuses_the_step_and_the_reason_is_the_step_failure(
    env, start_worker, instance, broker, tmp_path
) -> None:
    switch = KillSwitch.from_settings(Settings.from_env(env))
    switch.engage("desk halted", queue="default")
    start_worker("default", "w-kill", env=env)
    key = f"report:{uuid.uuid4().hex}"
    process = _launch(env, tmp_path, "block_job", {"blocker": {"config": {"report_key": key}}})
    _finish(process, tmp_path, "block_job")
    run = _finished_run(instance, tmp_path, "block_job")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert step_outcomes(instance, run.run_id) == {"blocker": "FAILURE"}
    [error] = _step_errors(instance, run.run_id)
    assert "desk halted" in error and "step blocker refused" in error
    assert _reports(broker, key) == []

    # Fail closed: a switch written as a hash (not a string) refuses the step all the same.
    switch.clear(queue="default")
    write_switch(broker, switch.key, "hash")
    process = _launch(env, tmp_path, "block_job", {"blocker": {"config": {"report_key": key}}})
    _finish(process, tmp_path, "block_job")
    second = next(r for r in instance.get_runs() if r.run_id != run.run_id)
    assert second.status == dg.DagsterRunStatus.FAILURE
    [error] = _step_errors(instance, second.run_id)
    assert f"kill switch {switch.key!r} is set ({REASON}): step blocker refused" in error
    assert _reports(broker, key) == []


def test_a_step_s_prints_on_a_worker_are_in_its_captured_logs(
    env, start_worker, instance, tmp_path
) -> None:
    start_worker("default", "w-logs", env=env)
    token = f"token-{uuid.uuid4().hex}"
    process = _launch(env, tmp_path, "talk_job", {"talker": {"config": {"report_key": token}}})
    _finish(process, tmp_path, "talk_job")
    run = _only_run(instance)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    (captured,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
    data = captured.dagster_event.logs_captured_data
    assert data.step_keys == ["talker"]
    manager = instance.compute_log_manager
    log_key = manager.build_log_key_for_run(run.run_id, data.file_key)
    logs = manager.get_log_data(log_key)
    assert f"out {token}" in logs.stdout.decode()
    assert f"err {token}" in logs.stderr.decode()
    assert manager.is_capture_complete(log_key)


def test_a_step_waiting_for_a_slot_says_so_and_a_running_step_counts_for_scaling(
    env, start_worker, instance, broker, tmp_path
) -> None:
    """No worker at first: one event names the queue and its occupancy. Then the running
    step is in its queue's running list (what KEDA adds to the queue length) and in the
    workers' alphaswarm_queue_running gauge, and leaves both when it returns."""
    token = uuid.uuid4().hex
    keys = {k: f"slot:{token}:{k}" for k in ("report_key", "release_key", "progress_key")}
    process = _launch(env, tmp_path, "held_job", {"held": {"config": keys}})
    try:
        run = _only_run(instance)
        [waiting] = wait_for(
            lambda: _engine_messages(instance, run.run_id, "for a worker slot"),
            120,
            "the waiting-for-a-slot event",
        )
        assert 'on queue "default": 1 queued and 0 running steps' in waiting, waiting
        port = free_port()
        start_worker("default", "w-slot", env={**env, "ALPHASWARM_METRICS_PORT": str(port)})
        wait_for(lambda: broker.llen(keys["progress_key"]) > 0, 120, "the step to run")
        assert running.count(broker, "default") == 1
        assert sample(scrape(port), "alphaswarm_queue_running", queue_name="default") == 1
        broker.set(keys["release_key"], "1")
        _finish(process, tmp_path, "held_job")
    finally:
        process.kill()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert len(_engine_messages(instance, run.run_id, "for a worker slot")) == 1
    wait_for(lambda: running.count(broker, "default") == 0, 30, "the step to leave the list")


def test_running_entries_of_dead_workers_are_pruned(broker) -> None:
    """Old entries without a heartbeat go; old ones with a heartbeat and young ones stay."""
    queue = f"prune-{uuid.uuid4().hex}"
    now = time.time()
    old = now - running.PRUNE_AFTER_SECONDS - 1
    broker.rpush(keys.running_key(queue), f"dead {old}", f"alive {old}", f"young {now}")
    broker.set(keys.heartbeat_key("alive"), "w pid 1", ex=10)
    try:
        assert running.prune(broker, queue) == 2
        assert [e.split()[0] for e in broker.lrange(keys.running_key(queue), 0, -1)] == [
            "alive",
            "young",
        ]
        running.finished(broker, queue, "young")
        assert running.count(broker, queue) == 1
    finally:
        broker.delete(keys.running_key(queue), keys.heartbeat_key("alive"))
