"""/metrics of real worker processes: task counters across prefork children, queue gauges."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from alphaswarm_orch.broker import running
from alphaswarm_orch.broker.keys import REQUEST_FAMILIES, dead_letter_stream
from alphaswarm_orch.broker.redis_queues import queue_keys
from alphaswarm_orch.control.metrics import WorkerCollector
from alphaswarm_orch.requests import reader
from alphaswarm_orch.settings import Settings
from tests.support.ops import sample, scrape, sender, stop_all, worker_env
from tests.support.processes import free_port
from tests.support.runs import execute_job, wait_for
from tests.support.switches import KEY_TYPES, refused_redis_url, write_switch
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def ops_env(tmp_path: Path, redis_urls: tuple[str, str]) -> Iterator[dict[str, str]]:
    broker, backend = redis_urls
    env = worker_env(
        broker,
        backend,
        tmp_path / "storage",
        ALPHASWARM_KILL_SWITCH_KEY=f"test:kill:{uuid.uuid4().hex}",
    )
    yield env
    for url in redis_urls:
        redis.Redis.from_url(url).flushdb()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    stop_all(started)


def test_task_counters_sum_every_prefork_child(ops_env, workers) -> None:
    prefix = f"m:{uuid.uuid4().hex}"
    port = int(ops_env["ALPHASWARM_METRICS_PORT"])
    worker = WorkerProcess.start("default", "metrics-a", ops_env, "--concurrency", "2")
    workers.append(worker)
    client = redis.Redis.from_url(ops_env["ALPHASWARM_BROKER_URL"])
    app = sender(ops_env)

    # Two held tasks occupy both pool children at once: work is done by two processes.
    for key in ("h1", "h2"):
        app.send_task("tests.stub.hold", args=[prefix, key], queue="default")
    started = wait_for(
        lambda: client.llen(f"{prefix}:started") == 2 and client.lrange(f"{prefix}:started", 0, -1),
        60,
        "both held tasks to start",
    )
    assert len({entry.split(b"|")[2] for entry in started}) == 2
    for key in ("h1", "h2"):
        client.rpush(f"{prefix}:release:{key}", 1)

    for _ in range(5):
        app.send_task("tests.stub.ok", args=[prefix], queue="default")
    for _ in range(2):
        app.send_task("tests.stub.fail", args=[prefix], queue="default")
    for _ in range(3):
        app.send_task("tests.stub.retry_once", args=[prefix], queue="default")
    app.send_task("tests.stub.send_ok", args=[prefix, "default"], queue="default")

    def settled() -> dict | None:
        samples = scrape(port)
        done = sample(samples, "celery_task_succeeded_total") + sample(
            samples, "celery_task_failed_total"
        )
        return samples if done == 2 + 6 + 2 + 3 + 1 else None

    samples = wait_for(settled, 60, "all 14 task executions to be counted")
    q = {"queue_name": "default", "hostname": worker.node.split("@")[1]}
    assert sample(samples, "celery_task_succeeded_total", name="tests.stub.hold", **q) == 2
    assert sample(samples, "celery_task_succeeded_total", name="tests.stub.ok", **q) == 6
    assert sample(samples, "celery_task_succeeded_total", name="tests.stub.retry_once", **q) == 3
    assert sample(samples, "celery_task_succeeded_total", name="tests.stub.send_ok", **q) == 1
    assert (
        sample(
            samples, "celery_task_failed_total", name="tests.stub.fail", exception="ValueError", **q
        )
        == 2
    )
    assert sample(samples, "celery_task_retried_total", name="tests.stub.retry_once", **q) == 3
    # A retry's next delivery can be received before the retried event: still attributed.
    assert sample(samples, "celery_task_started_total", name="unknown") == 0
    # A retry is a new delivery: received and started count it again.
    assert sample(samples, "celery_task_received_total", name="tests.stub.retry_once", **q) == 6
    assert sample(samples, "celery_task_started_total", name="tests.stub.retry_once", **q) == 6
    assert sample(samples, "celery_task_received_total", **q) == 2 + 6 + 2 + 6 + 1
    # Published from inside a pool child: only multiprocess mode gets it to the scrape.
    assert sample(samples, "celery_task_sent_total", name="tests.stub.ok", **q) == 1
    assert sample(samples, "celery_task_sent_total", name="tests.stub.retry_once", **q) == 3
    assert sample(samples, "celery_task_runtime_count", name="tests.stub.ok", **q) == 6
    assert sample(samples, "celery_task_queue_wait_time_count", name="tests.stub.ok", **q) == 6
    assert sample(samples, "celery_worker_up", hostname=q["hostname"]) == 1
    assert int(client.get(f"{prefix}:ok")) == 6


def test_queue_length_counts_every_priority_sublist(ops_env, workers) -> None:
    prefix = f"q:{uuid.uuid4().hex}"
    port = int(ops_env["ALPHASWARM_METRICS_PORT"])
    worker = WorkerProcess.start("default", "metrics-b", ops_env, "--concurrency", "1")
    workers.append(worker)
    client = redis.Redis.from_url(ops_env["ALPHASWARM_BROKER_URL"])
    app = sender(ops_env)

    app.send_task("tests.stub.hold", args=[prefix, "h"], queue="default")
    wait_for(lambda: client.llen(f"{prefix}:started") == 1, 60, "the held task to start")
    for priority in (0, 3, 6, 9, 9):
        app.send_task("tests.stub.ok", args=[prefix], queue="default", priority=priority)

    keys = queue_keys("default")
    assert [client.llen(key) for key in keys] == [1, 1, 1, 2]
    samples = wait_for(
        lambda: (
            (s := scrape(port))
            and sample(s, "celery_queue_length", queue_name="default") == 5
            and s
        ),
        60,
        "celery_queue_length to count all five waiting messages",
    )
    assert sample(samples, "alphaswarm_queue_unacked", queue_name="default") == 1
    assert sample(samples, "celery_worker_tasks_active") == 1
    # The ledger (SQLite under the storage dir here) answers; its mirror has not run yet.
    assert sample(samples, "alphaswarm_metrics_source_up", source="ledger") == 1
    assert sample(samples, "alphaswarm_ledger_mirror_cursor") == -1

    kill_key = ops_env["ALPHASWARM_KILL_SWITCH_KEY"]
    assert sample(samples, "alphaswarm_kill_switch_engaged", scope="global") == 0
    client.set(f"{kill_key}:default", "maintenance")
    client.xadd(dead_letter_stream("paper"), {"reason": "bad", "payload": "{}"})
    samples = scrape(port)
    assert sample(samples, "alphaswarm_kill_switch_engaged", scope="default") == 1
    assert sample(samples, "alphaswarm_kill_switch_engaged", scope="global") == 0
    assert sample(samples, "alphaswarm_sensor_dead_letters", family="paper") == 1
    assert sample(samples, "alphaswarm_sensor_dead_letters", family="hft") == 0
    for kind in KEY_TYPES:  # fail closed: a switch key of any type is engaged
        write_switch(client, kill_key, kind)
        assert sample(scrape(port), "alphaswarm_kill_switch_engaged", scope="global") == 1, kind
    client.delete(kill_key)
    assert sample(scrape(port), "alphaswarm_kill_switch_engaged", scope="global") == 0

    client.rpush(f"{prefix}:release:h", 1)
    wait_for(lambda: client.get(f"{prefix}:ok") == b"5", 60, "the five queued tasks to run")
    samples = wait_for(
        lambda: (s := scrape(port)) and sample(s, "alphaswarm_queue_unacked") == 0 and s,
        60,
        "the unacked count to return to zero",
    )
    assert sample(samples, "celery_queue_length", queue_name="default") == 0


def test_dagster_step_outcomes_by_job_and_queue(orch_env, start_worker) -> None:
    env = {**orch_env, "ALPHASWARM_METRICS_PORT": str(free_port())}
    start_worker("default,workflows", "metrics-steps", env=env)
    execute_job(orch_env, "smoke_route_job")

    samples = scrape(int(env["ALPHASWARM_METRICS_PORT"]))
    steps = "alphaswarm_dagster_steps_total"
    job = {"job": "smoke_route_job", "outcome": "success"}
    assert sample(samples, steps, queue_name="default", **job) == 2
    assert sample(samples, steps, queue_name="workflows", **job) == 1
    assert sample(samples, steps, outcome="failure") == 0


def test_an_unreadable_kill_switch_reports_engaged(ops_env) -> None:
    """Fail closed: when the kill switch's Redis cannot be read, every scope reports 1."""
    settings = Settings.from_env({**ops_env, "ALPHASWARM_REDIS_URL": refused_redis_url()})
    collector = WorkerCollector(
        settings, "celery@metrics-c", ["default", "paper"], {}, lambda: True
    )
    families = {family.name: family for family in collector.collect()}
    engaged = {
        s.labels["scope"]: s.value for s in families["alphaswarm_kill_switch_engaged"].samples
    }
    assert engaged == {"global": 1, "default": 1, "paper": 1}
    sources = {
        s.labels["source"]: s.value for s in families["alphaswarm_metrics_source_up"].samples
    }
    assert sources["redis"] == 0 and sources["broker"] == 1


def test_dead_letters_added_keeps_growing_past_the_trimmed_cap(ops_env, monkeypatch) -> None:
    """The stream is trimmed (XADD MAXLEN ~), so its length stops at the cap; the added series
    (XINFO STREAM entries-added) counts every letter, which is what the alert watches."""
    monkeypatch.setattr(reader, "DEAD_LETTER_MAXLEN", 10)
    settings = Settings.from_env(ops_env)
    collector = WorkerCollector(settings, "celery@metrics-d", ["default"], {}, lambda: True)
    client = redis.Redis.from_url(settings.redis_url)

    def series() -> tuple[dict[str, float], dict[str, float]]:
        families = {family.name: family for family in collector.collect()}
        held = families["alphaswarm_sensor_dead_letters"].samples
        added = families["alphaswarm_sensor_dead_letters_added"].samples
        assert {s.name for s in added} == {"alphaswarm_sensor_dead_letters_added_total"}
        return (
            {s.labels["family"]: s.value for s in held},
            {s.labels["family"]: s.value for s in added},
        )

    # No dead letter yet: the streams do not exist, and every family reads 0.
    assert series() == ({f: 0 for f in REQUEST_FAMILIES}, {f: 0 for f in REQUEST_FAMILIES})
    # Redis trims whole macro nodes (100 entries by default), so write a few hundred.
    for i in range(1, 301):
        reader.dead_letter(client, "paper", f"{i}-0", "bad", {"payload": "{}"})
    held, added = series()
    assert held["paper"] == client.xlen(dead_letter_stream("paper")) < 300  # trimmed
    assert added == {"paper": 300, "hft": 0, "terraform": 0}
    for i in range(301, 501):
        reader.dead_letter(client, "paper", f"{i}-0", "bad", {"payload": "{}"})
    held_after, added_after = series()
    assert held_after["paper"] <= held["paper"] + 100  # the held count stays near the cap
    assert added_after["paper"] == 500
    # A re-read of an entry already dead-lettered appends nothing and counts nothing.
    reader.dead_letter(client, "paper", "500-0", "bad", {"payload": "{}"})
    assert series()[1]["paper"] == 500
    # Deleting the stream (an operator clearing old letters) resets the counter, which
    # Prometheus' increase() reads as a reset, not as new letters.
    client.delete(dead_letter_stream("paper"))
    assert series()[1]["paper"] == 0


def families_of(collector: WorkerCollector) -> dict[str, dict[tuple, float]]:
    """Each family's samples, keyed by their label values."""
    return {
        family.name: {tuple(s.labels.values()): s.value for s in family.samples}
        for family in collector.collect()
    }


@pytest.mark.parametrize("ledger", ["postgres", "sqlite"])
def test_a_scrape_creates_nothing(ledger, redis_urls, postgres_url, tmp_path) -> None:
    """Against a fresh Redis and a ledger never migrated (an empty Postgres database, or an
    embedded SQLite file not created yet), a scrape writes no key, creates no table, file or
    directory: the ledger reads as a mirror that has not run, and session series are absent."""
    broker, backend = redis_urls
    storage = tmp_path / "storage"
    env = {
        "ALPHASWARM_BROKER_URL": broker,
        "ALPHASWARM_RESULT_BACKEND": backend,
        "ALPHASWARM_STORAGE_DIR": str(storage),
    }
    if ledger == "postgres":
        env["ALPHASWARM_POSTGRES_URL"] = postgres_url
    settings = Settings.from_env(env)
    clients = [redis.Redis.from_url(url) for url in redis_urls]
    for client in clients:
        client.flushdb()
    collector = WorkerCollector(
        settings, "celery@metrics-e", ["default", "paper"], {}, lambda: True
    )

    families = families_of(collector)

    assert [client.dbsize() for client in clients] == [0, 0]
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    assert not storage.exists()
    assert families["alphaswarm_metrics_source_up"] == {
        ("broker",): 1,
        ("redis",): 1,
        ("ledger",): 1,
    }
    assert families["alphaswarm_ledger_mirror_cursor"] == {(): -1}
    assert "alphaswarm_sessions" not in families
    assert families["alphaswarm_queue_running"] == {("default",): 0, ("paper",): 0}


def test_a_scrape_counts_running_steps_and_the_worker_prunes_dead_ones(ops_env, workers) -> None:
    """A scrape counts only live entries of a running list and leaves the list as it is; the
    worker's own pruning removes the entry of a dead worker (no step heartbeat)."""
    client = redis.Redis.from_url(ops_env["ALPHASWARM_BROKER_URL"])
    key = running.running_key("default")
    old = time.time() - running.PRUNE_AFTER_SECONDS - 1
    client.rpush(key, f"dead {old}", f"young {time.time() + 3600}")
    collector = WorkerCollector(
        Settings.from_env(ops_env), "celery@metrics-f", ["default"], {}, lambda: True
    )

    assert families_of(collector)["alphaswarm_queue_running"] == {("default",): 1}
    assert client.llen(key) == 2

    workers.append(WorkerProcess.start("default", "metrics-f", ops_env, "--concurrency", "1"))
    wait_for(
        lambda: [entry.split()[0] for entry in client.lrange(key, 0, -1)] == [b"young"],
        60,
        "the dead entry to be pruned",
    )
