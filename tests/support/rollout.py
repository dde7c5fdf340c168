"""Daemon rollouts with container semantics around one long Celery step (tests, benchmark).

A rollout stops `alphaswarm-orch daemon` as a container teardown does: SIGTERM to the daemon
and to its run workers (or SIGKILL), then SIGKILL to whatever of the daemon's processes is
left (forkserver, run workers), and starts a new daemon. The step (`held` in
tests.execution.jobs) appends a timestamp every 0.1 s; the longest gap between two is how long
the work stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import redis

from alphaswarm_orch.tags import RUN_WORKER_PID_TAG
from tests.support.ops import descendants
from tests.support.runs import REPO, wait_for

DAEMON = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-m"]
JOBS = "tests.execution.jobs"
LAUNCH = [
    sys.executable,
    "-m",
    "dagster",
    "job",
    "launch",
    "-m",
    "tests.execution.jobs",
    "-j",
    "held_job",
]
GRACE_SECONDS = 10.0
MODES = ("sigterm", "sigkill", "sigterm-daemon")
"""sigterm: SIGTERM to the daemon and the run worker, SIGKILL to the rest after the grace;
sigkill: SIGKILL to every process at once; sigterm-daemon: SIGTERM to the daemon only, then
SIGKILL to the rest (what a pod's teardown does to processes PID 1 does not stop)."""


@dataclass
class Rollouts:
    run_id: str
    status: dg.DagsterRunStatus
    reports: list[str]
    progress: list[float]
    restarts: list[float] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    stopped_at: int | None = None
    """The rollout (1-based) after which the step never started again (within the timeout)."""

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    @property
    def longest_gap(self) -> float:
        return max((b - a for a, b in itertools.pairwise(self.progress)), default=0.0)


def start_daemon(
    env: dict[str, str], logs: list[str], module: str = JOBS, cwd: Path = REPO
) -> subprocess.Popen:
    """`alphaswarm-orch daemon -m module`, its output in a new file appended to `logs`."""
    log = tempfile.NamedTemporaryFile(prefix="daemon-", suffix=".log", delete=False)  # noqa: SIM115
    logs.append(log.name)
    return subprocess.Popen(
        [*DAEMON, module],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def container_stop(
    daemon: subprocess.Popen, run_workers: Iterable[int | None] | int | None, mode: str
) -> None:
    """Stop the daemon and every process of its 'container' (see MODES): its descendants and
    the run workers given (one pid or several)."""
    if run_workers is None or isinstance(run_workers, int):
        run_workers = [run_workers]
    workers = [pid for pid in run_workers if pid is not None]
    targets = [daemon.pid, *descendants(daemon.pid), *workers]
    first = {"sigterm": [daemon.pid, *workers], "sigterm-daemon": [daemon.pid]}.get(mode, [])
    for pid in filter(None, first):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if first:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(GRACE_SECONDS)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    daemon.wait()


def run_worker(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's current run worker (None before it has one)."""
    run = instance.get_run_by_id(run_id)
    value = run.tags.get(RUN_WORKER_PID_TAG) if run else None
    return int(value) if value else None


def reattached(instance: dg.DagsterInstance, run_id: str) -> int:
    """How many run workers re-attached to the run's step so far."""
    return sum(
        (record.dagster_event.message or "").startswith("Re-attached to step")
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if record.dagster_event is not None
    )


def roll_out(
    daemon: subprocess.Popen,
    env: dict[str, str],
    instance: dg.DagsterInstance,
    run_ids: list[str],
    rollout: int,
    logs: list[str],
    module: str = JOBS,
    timeout: float = 180,
) -> subprocess.Popen:
    """Rollout number `rollout` (1-based; its MODES entry in turn) of `daemon` with the run
    workers of `run_ids`; returns the new daemon once a new run worker of every run
    re-attached to its steps (one re-attach per rollout so far)."""
    container_stop(daemon, [run_worker(instance, r) for r in run_ids], MODES[(rollout - 1) % 3])
    daemon = start_daemon(env, logs, module)
    try:
        for run_id in run_ids:
            wait_for(
                lambda r=run_id: reattached(instance, r) >= rollout,
                timeout,
                f"rollout {rollout}: a new run worker of {run_id} re-attached to its steps",
                interval=0.2,
            )
    except BaseException:  # the caller only knows the old daemon: stop the new one here
        container_stop(daemon, [run_worker(instance, r) for r in run_ids], "sigkill")
        raise
    return daemon


def run_rollouts(
    env: dict[str, str],
    instance: dg.DagsterInstance,
    restarts: int = 3,
    timeout: float = 180,
    expect_resume: bool = True,
) -> Rollouts:
    """Launch held_job through a daemon, do `restarts` rollouts while its step runs, release
    the step, and return what happened. Needs a `default` worker running.

    With `expect_resume` each rollout waits until a new run worker re-attached to the step;
    without (the behaviour before resumption, for the benchmark) until the step progresses
    again, and stops at the first rollout after which it does not within `timeout`.
    """
    client = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"], decode_responses=True)
    token = uuid.uuid4().hex
    keys = {k: f"rollout:{token}:{k}" for k in ("report_key", "release_key", "progress_key")}
    logs: list[str] = []
    run_id = str(uuid.uuid4())
    daemon = start_daemon(env, logs)
    try:
        # Through the run queue, with the code location's origin, as the UI or a sensor does:
        # the daemon launches it, and run retries (the behaviour before resumption) work.
        config = json.dumps({"ops": {"held": {"config": keys}}})
        subprocess.run(
            [*LAUNCH, "--run-id", run_id, "--config-json", config],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        wait_for(lambda: client.llen(keys["progress_key"]) > 5, timeout, "the step to progress")
        times: list[float] = []
        stopped_at = None
        for i in range(restarts):
            times.append(time.time())
            if expect_resume:
                daemon = roll_out(daemon, env, instance, [run_id], i + 1, logs, timeout=timeout)
                continue
            container_stop(daemon, run_worker(instance, run_id), MODES[i % len(MODES)])
            daemon = start_daemon(env, logs)
            try:  # before: the run fails, then run retries re-execute the step (or not)
                wait_for(
                    lambda n=i + 2: _starts(client, keys["report_key"]) >= n,
                    timeout,
                    f"rollout {i + 1}: the step started again",
                    interval=0.2,
                )
            except AssertionError:
                stopped_at = i + 1
                break
        client.set(keys["release_key"], "1")
        wait_for(
            lambda: all(r.is_finished for r in instance.get_runs()),
            timeout,
            "the run (and any retry of it) to finish",
        )
        finished = instance.get_run_by_id(run_id)
        return Rollouts(
            run_id,
            finished.status,
            client.lrange(keys["report_key"], 0, -1),
            [float(t) for t in client.lrange(keys["progress_key"], 0, -1)],
            times,
            logs,
            stopped_at,
        )
    finally:
        container_stop(daemon, run_worker(instance, run_id), "sigkill")
        client.close()


def _starts(client: redis.Redis, key: str) -> int:
    return sum(r.startswith("started held") for r in client.lrange(key, 0, -1))
