"""Delivery guarantees of real workers: drain on SIGTERM or preStop, redelivery after SIGKILL,
no loss and no double effect across a Redis restart."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from alphaswarm_orch.broker.redis_queues import queue_keys
from tests.support.ops import RedisServer, kill_tree, sender, stop_all, worker_env
from tests.support.runs import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def delivery_env(tmp_path: Path, redis_urls: tuple[str, str]) -> Iterator[dict[str, str]]:
    broker, backend = redis_urls
    yield worker_env(broker, backend, tmp_path / "storage", ALPHASWARM_VISIBILITY_TIMEOUT="3")
    for url in redis_urls:
        redis.Redis.from_url(url).flushdb()


def not_lost(client: redis.Redis, queue: str = "default") -> int:
    """Messages still on the broker: waiting in the queue, or unacked (restored later)."""
    return sum(client.llen(key) for key in queue_keys(queue)) + client.hlen("unacked")


def start_held_task(env: dict, client: redis.Redis, prefix: str, name: str) -> WorkerProcess:
    worker = WorkerProcess.start("default", name, env, "--concurrency", "2")
    sender(env).send_task("tests.stub.hold", args=[prefix, "long"], queue="default")
    wait_for(lambda: client.llen(f"{prefix}:started") == 1, 60, "the long task to start")
    return worker


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    stop_all(started)


def test_sigterm_finishes_the_running_task_takes_no_new_one_and_exits(
    delivery_env, workers
) -> None:
    prefix = f"t:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(delivery_env["ALPHASWARM_BROKER_URL"])
    worker = start_held_task(delivery_env, client, prefix, "term-a")
    workers.append(worker)

    worker.process.terminate()
    wait_for(lambda: "Warm shutdown" in worker.log(), 60, "the warm shutdown to begin")
    for _ in range(2):  # a free pool slot is idle: only a stopped consumer leaves these
        sender(delivery_env).send_task("tests.stub.ok", args=[prefix], queue="default")
    assert worker.process.poll() is None, "the worker exited with a task still running"

    client.rpush(f"{prefix}:release:long", 1)
    assert worker.process.wait(60) == 0
    assert client.lrange(f"{prefix}:finished", 0, -1) == [b"long"]
    assert client.get(f"{prefix}:ok") is None
    assert not_lost(client) == 2


def test_drain_command_stops_consuming_waits_for_tasks_and_exits(delivery_env, workers) -> None:
    prefix = f"d:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(delivery_env["ALPHASWARM_BROKER_URL"])
    worker = start_held_task(delivery_env, client, prefix, "drain-a")
    workers.append(worker)

    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "worker", "drain", "--timeout", "90"]
    drain = subprocess.Popen(
        argv, env=delivery_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        control = Celery(broker=delivery_env["ALPHASWARM_BROKER_URL"], set_as_current=False)
        wait_for(
            lambda: (
                control.control.inspect([worker.node], timeout=1).active_queues()
                == {worker.node: []}
            ),
            60,
            "the drained worker to consume no queue",
        )
        control.close()
        for _ in range(2):
            sender(delivery_env).send_task("tests.stub.ok", args=[prefix], queue="default")
        assert drain.poll() is None and worker.process.poll() is None

        client.rpush(f"{prefix}:release:long", 1)
        output, _ = drain.communicate(timeout=90)
    finally:
        if drain.poll() is None:
            drain.kill()
    assert drain.returncode == 0, output
    assert "worker exited" in output
    assert worker.process.wait(10) == 0
    assert client.lrange(f"{prefix}:finished", 0, -1) == [b"long"], output + worker.log()
    assert client.get(f"{prefix}:ok") is None
    assert not_lost(client) == 2


def test_sigkill_mid_task_is_redelivered_to_another_worker(delivery_env, workers) -> None:
    prefix = f"k:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(delivery_env["ALPHASWARM_BROKER_URL"])
    first = start_held_task(delivery_env, client, prefix, "kill-a")
    workers.append(first)

    kill_tree(first.process.pid)
    first.process.wait(10)
    second_env = worker_env(
        delivery_env["ALPHASWARM_BROKER_URL"],
        delivery_env["ALPHASWARM_RESULT_BACKEND"],
        Path(delivery_env["ALPHASWARM_STORAGE_DIR"]),
        ALPHASWARM_VISIBILITY_TIMEOUT="3",
    )
    workers.append(WorkerProcess.start("default", "kill-b", second_env))
    client.rpush(f"{prefix}:release:long", 1)

    wait_for(lambda: client.llen(f"{prefix}:finished") == 1, 90, "the redelivered task to finish")
    starts = [entry.decode().split("|")[1] for entry in client.lrange(f"{prefix}:started", 0, -1)]
    assert [node.split("@")[0] for node in starts] == ["kill-a", "kill-b"]


def test_redis_restart_mid_stream_loses_nothing_and_applies_each_key_once(
    tmp_path: Path, redis_urls: tuple[str, str], workers
) -> None:
    broker_redis = RedisServer.start_in(tmp_path / "redis")
    control_url = redis_urls[0]  # where tasks record their effect: survives the restart
    try:
        env = worker_env(
            broker_redis.url(0),
            broker_redis.url(1),
            tmp_path / "storage",
            ALPHASWARM_REDIS_URL=control_url,
            ALPHASWARM_VISIBILITY_TIMEOUT="5",
        )
        prefix = f"r:{uuid.uuid4().hex}"
        control = redis.Redis.from_url(control_url)
        workers.append(WorkerProcess.start("default", "restart-a", env, "--concurrency", "2"))
        total = 30

        app = sender(env)
        for key in ("k0", "k1"):  # running while Redis restarts
            app.send_task("tests.stub.apply_once", args=[prefix, key, True], queue="default")
        wait_for(lambda: control.llen(f"{prefix}:started") == 2, 60, "both held tasks to start")
        for i in range(2, 20):
            app.send_task("tests.stub.apply_once", args=[prefix, f"k{i}"], queue="default")
        app.close()

        broker_redis.stop()
        broker_redis.start()
        for key in ("k0", "k1"):
            control.rpush(f"{prefix}:release:{key}", 1)
        app = sender(env)
        for i in range(20, total):
            app.send_task("tests.stub.apply_once", args=[prefix, f"k{i}"], queue="default")
        app.close()

        wait_for(
            lambda: int(control.get(f"{prefix}:applied") or 0) == total,
            90,
            f"all {total} tasks to take effect",
        )
        done = [control.exists(f"{prefix}:done:k{i}") for i in range(total)]
        assert all(done), done
        assert int(control.get(f"{prefix}:applied")) == total
        assert int(control.get(f"{prefix}:executions")) >= total
        assert workers[0].process.poll() is None
    finally:  # workers go before their redis-server
        stop_all(workers)
        workers.clear()
        broker_redis.close()
