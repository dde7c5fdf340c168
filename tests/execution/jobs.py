"""Test-only jobs on the alphaswarm_celery executor (a code location of their own).

Run with `dagster job execute -m tests.execution.jobs -j <job> -c <config>`; workers import
this module by name, so the repo root must be on their PYTHONPATH. Each op reports what it did
to a Redis list named in its config, so tests observe the worker side directly.
"""

import os
import sys
import time
from collections.abc import Iterator

import dagster as dg
import redis
from dagster_celery.tags import DAGSTER_CELERY_STEP_PRIORITY_TAG

from alphaswarm_orch.execution.executor import alphaswarm_celery_executor
from alphaswarm_orch.queues import queue_tags
from alphaswarm_orch.settings import Settings


class Probe(dg.Config):
    """Where the op reports (a Redis list) and how long it may block."""

    report_key: str
    block_seconds: float = 0.0


def _report(config: Probe, message: str) -> None:
    client = redis.Redis.from_url(Settings.from_env().require_redis("test probe"))
    try:
        client.rpush(config.report_key, message)
    finally:
        client.close()


def _block(config: Probe, context: dg.OpExecutionContext) -> None:
    """Block (in sleeps the run's termination must interrupt), reporting start and end."""
    _report(config, f"started {context.op.name} attempt {context.retry_number} pid {os.getpid()}")
    try:
        deadline = time.monotonic() + config.block_seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
        _report(config, f"finished {context.op.name} attempt {context.retry_number}")
    except BaseException as exc:
        _report(config, f"interrupted {context.op.name} by {type(exc).__name__}")
        raise


class Held(dg.Config):
    """A long op: runs until `release_key` exists, appending a timestamp to `progress_key`
    every 0.1 s (its progress, as a session's ticks are)."""

    report_key: str
    release_key: str
    progress_key: str


@dg.op(tags=queue_tags("default"))
def held(context: dg.OpExecutionContext, config: Held) -> None:
    client = redis.Redis.from_url(Settings.from_env().require_redis("test probe"))
    client.rpush(
        config.report_key, f"started held attempt {context.retry_number} pid {os.getpid()}"
    )
    try:
        while not client.exists(config.release_key):
            client.rpush(config.progress_key, repr(time.time()))
            time.sleep(0.1)
        client.rpush(config.report_key, "finished held")
    except BaseException as exc:
        client.rpush(config.report_key, f"interrupted held by {type(exc).__name__}")
        raise
    finally:
        client.close()


@dg.op(tags=queue_tags("default"))
def blocker(context: dg.OpExecutionContext, config: Probe) -> None:
    """Blocks for `block_seconds` on the default queue."""
    _block(config, context)


@dg.op(tags=queue_tags("default"), retry_policy=dg.RetryPolicy(max_retries=1))
def fragile(context: dg.OpExecutionContext, config: Probe) -> None:
    """Blocks on its first attempt (the test kills its worker), returns on the retry."""
    if context.retry_number == 0:
        _block(config, context)
    else:
        _report(config, f"finished {context.op.name} attempt {context.retry_number}")


def _ranked(name: str, priority: int) -> dg.OpDefinition:
    @dg.op(
        name=name, tags={**queue_tags("default"), DAGSTER_CELERY_STEP_PRIORITY_TAG: str(priority)}
    )
    def ranked(config: Probe) -> None:
        _report(config, name)

    return ranked


low, middle, high = _ranked("low", 1), _ranked("middle", 5), _ranked("high", 9)


@dg.op(tags=queue_tags("workflows"))
def on_workflows(config: Probe) -> int:
    _report(config, "workflows")
    return 1


@dg.op(tags=queue_tags("paper"))
def on_paper(config: Probe, value: int) -> int:
    _report(config, "paper")
    return value + 1


@dg.op(tags=queue_tags("default"))
def on_default(config: Probe, value: int) -> None:
    _report(config, "default")


@dg.op(tags=queue_tags("default"))
def talker(config: Probe) -> None:
    """Prints its report key to stdout and stderr: the step's captured logs must hold both."""
    print(f"out {config.report_key}")
    print(f"err {config.report_key}", file=sys.stderr)


class Split(dg.Config):
    report_key: str
    keys: list[str]


class Shard(dg.Config):
    """`fail` names the mapping key whose first attempt fails (its retry succeeds)."""

    report_key: str
    fail: str


@dg.op(tags=queue_tags("default"), out=dg.DynamicOut(str))
def split(config: Split) -> Iterator[dg.DynamicOutput[str]]:
    for key in config.keys:
        yield dg.DynamicOutput(key, mapping_key=key)


@dg.op(tags=queue_tags("default"), retry_policy=dg.RetryPolicy(max_retries=1))
def shard(context: dg.OpExecutionContext, config: Shard, value: str) -> str:
    _report(config, f"shard {value} attempt {context.retry_number}")
    if value == config.fail and context.retry_number == 0:
        raise RuntimeError(f"first attempt of shard {value} fails")
    return value.upper()


@dg.op(tags=queue_tags("default"))
def gather(config: Probe, values: list[str]) -> None:
    _report(config, f"gather {sorted(values)}")


@dg.job
def dynamic_job() -> None:
    gather(split().map(shard).collect())


@dg.job
def block_job() -> None:
    blocker()


@dg.job(executor_def=alphaswarm_celery_executor)  # launched from its module attribute too
def held_job() -> None:
    held()


@dg.job
def fragile_job() -> None:
    fragile()


@dg.job
def priority_job() -> None:
    low()
    middle()
    high()


@dg.job
def three_queue_job() -> None:
    on_default(on_paper(on_workflows()))


@dg.job
def talk_job() -> None:
    talker()


defs = dg.Definitions(
    jobs=[block_job, dynamic_job, held_job, fragile_job, priority_job, three_queue_job, talk_job],
    executor=alphaswarm_celery_executor,
    resources={"io_manager": dg.FilesystemIOManager(base_dir=str(Settings.from_env().io_dir))},
)
