"""Workflows on real processes: `dagster job execute` on Postgres, an alphaswarm `workflows`
worker, and a stand-in executor worker (tests/workflows/executor_stub.py) on `backtest`.

One set of workers serves the module (starting them dominates the cost); every Redis key a
workflow uses carries a per-module token.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import redis
from celery import Celery

from alphaswarm_orch.settings import WORKFLOWS_DIR
from alphaswarm_orch.tags import WORKLOAD_TAG
from tests.support import services
from tests.support.runs import mirrored_run, step_outcomes, step_workers, wait_for
from tests.support.workers import WorkerProcess
from tests.workflows.executor_stub import revoked_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXECUTE = [sys.executable, "-m", "dagster", "job", "execute", "-m", "alphaswarm_orch.definitions"]
TOKEN = uuid.uuid4().hex[:10]


def keys(name: str) -> dict[str, str]:
    return {"flag_key": f"wf-test:{TOKEN}:{name}:flag", "started_key": f"wf-test:{TOKEN}:{name}:id"}


SPECS = {
    "pipeline": """\
name: pipeline
steps:
  - name: announce
    op: log
    params: {message: dispatching a backtest}
  - name: backtest
    depends_on: [announce]
    dispatch: {task: backtest.run, queue: backtest, kwargs: {strategy: momentum, days: 10}}
  - name: done
    op: noop
    depends_on: [backtest]
""",
    "remote_failure": """\
name: remote_failure
steps:
  - name: backtest
    dispatch: {task: backtest.fail, queue: backtest, args: [no prices for 2024-02-30]}
  - name: after
    op: noop
    depends_on: [backtest]
""",
    "timeout": f"""\
name: timeout
steps:
  - name: wait
    dispatch:
      task: backtest.wait_for_flag
      queue: backtest
      kwargs: {keys("timeout")}
      timeout_seconds: 4
""",
    "terminate": f"""\
name: terminate
steps:
  - name: wait
    dispatch:
      task: backtest.wait_for_flag
      queue: backtest
      kwargs: {keys("terminate")}
      timeout_seconds: 300
""",
}


@dataclass
class Stack:
    env: dict[str, str]
    instance: dg.DagsterInstance
    redis: redis.Redis
    workflows_worker: WorkerProcess
    executor_worker: WorkerProcess

    def execute(self, workflow: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*EXECUTE, "-j", f"workflows_{workflow}_job"],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_to_end(self, workflow: str) -> dg.DagsterRun:
        process = self.execute(workflow)
        output, _ = process.communicate(timeout=240)
        [run] = self.instance.get_runs(dg.RunsFilter(job_name=f"workflows_{workflow}_job"))
        assert run.is_finished, output[-3000:]
        return run

    def failure(self, run: dg.DagsterRun, step: str) -> dg.DagsterEvent:
        [record] = [
            r
            for r in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            if r.dagster_event.step_key == step
        ]
        return record.dagster_event

    def revocation(self, task_id: str) -> dict[str, str]:
        return wait_for(
            lambda: self.redis.hgetall(revoked_key(task_id)),
            60,
            f"the executor worker to record the revocation of task {task_id}",
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_urls: tuple[str, str]) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("workflows")
    specs = root / "specs"
    specs.mkdir()
    for name, text in SPECS.items():
        (specs / f"{name}.yaml").write_text(text)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    broker, backend = redis_urls
    with services.temporary_database() as postgres_url:
        env = {
            **os.environ,
            "ALPHASWARM_BROKER_URL": broker,
            "ALPHASWARM_RESULT_BACKEND": backend,
            "ALPHASWARM_POSTGRES_URL": postgres_url,
            "ALPHASWARM_STORAGE_DIR": str(root / "storage"),
            "DAGSTER_HOME": str(home),
            WORKFLOWS_DIR: str(specs),  # the run process and the workers load the same specs
            "PYTHONPATH": str(REPO),
        }
        workers: list[WorkerProcess] = []
        client = redis.Redis.from_url(broker, decode_responses=True)
        saved = dict(os.environ)
        os.environ.update(
            {k: v for k, v in env.items() if k.startswith(("ALPHASWARM_", "DAGSTER"))}
        )
        try:
            workers.append(
                WorkerProcess.start("workflows", f"wf-{TOKEN}", env, "--concurrency", "2")
            )
            workers.append(start_executor_stub(env, root / "executor.log"))
            with dg.DagsterInstance.get() as instance:
                yield Stack(env, instance, client, *workers)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            for worker in workers:
                worker.stop()
            client.close()
            services.flush_redis(broker, backend)


def start_executor_stub(env: dict[str, str], log: Path) -> WorkerProcess:
    """A real Celery worker of the stand-in executor app, consuming only `backtest`."""
    node = f"executor-{TOKEN}@{os.uname().nodename}"
    argv = [sys.executable, "-m", "celery", "-A", "tests.workflows.executor_stub", "worker"]
    argv += ["-Q", "backtest", "-c", "2", "-O", "fair", "-n", node]
    argv += ["--without-gossip", "--without-mingle"]
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    worker = WorkerProcess(name=node, queues="backtest", process=process, log_path=str(log))
    worker.wait_ready(env["ALPHASWARM_BROKER_URL"])
    return worker


def test_light_and_dispatched_steps_succeed(stack: Stack) -> None:
    run = stack.run_to_end("pipeline")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags[WORKLOAD_TAG] == "workflow"
    assert step_outcomes(stack.instance, run.run_id) == dict.fromkeys(
        ["announce", "backtest", "done"], "SUCCESS"
    )
    node = stack.workflows_worker.node
    assert step_workers(stack.instance, run.run_id) == dict.fromkeys(
        ["announce", "backtest", "done"], node
    )
    [output] = [
        r.dagster_event.step_output_data.metadata
        for r in stack.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        if r.dagster_event.step_key == "backtest"
    ]
    # The value was computed by the executor worker, not here.
    assert output["result"].value == {"strategy": "momentum", "days": 10, "pnl": 15.0}
    assert output["queue"].value == "backtest"
    ledger = mirrored_run(stack.env, stack.instance, run.run_id)
    assert (ledger["workload_kind"], ledger["status"]) == ("workflow", "success")
    assert ledger["queues"] == "workflows"


def test_remote_failure_fails_the_step_with_the_remote_error(stack: Stack) -> None:
    run = stack.run_to_end("remote_failure")
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert "after" not in {
        k for k, v in step_outcomes(stack.instance, run.run_id).items() if v == "SUCCESS"
    }
    failure = stack.failure(run, "backtest").step_failure_data.user_failure_data
    assert (
        "failed in the executor: BacktestFailed: backtest rejected its input: "
        "no prices for 2024-02-30" in failure.description
    )
    assert "executor_stub.py" in failure.description  # the remote traceback's summary
    assert "in fail_backtest" in failure.description
    assert failure.metadata["remote_exception"].value == "BacktestFailed"


def test_timeout_fails_the_step_and_revokes_the_task(stack: Stack) -> None:
    run = stack.run_to_end("timeout")
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = stack.failure(run, "wait").step_failure_data.user_failure_data
    task_id = failure.metadata["task_id"].value
    assert f"[{task_id}] on 'backtest' gave no result within 4s" in failure.description
    revocation = stack.revocation(task_id)
    if stack.redis.get(keys("timeout")["started_key"]) == task_id:  # the usual case
        assert revocation == {"terminated": "1", "signum": str(int(signal.SIGTERM))}
    else:  # an executor too busy to start it in 4 s discards it on arrival instead
        assert revocation["terminated"] == "0"


def test_run_termination_revokes_the_task_and_cancels_the_run(stack: Stack) -> None:
    process = stack.execute("terminate")
    try:
        task_id = wait_for(
            lambda: stack.redis.get(keys("terminate")["started_key"]),
            120,
            "the executor to start the dispatched task",
        )
        [run] = stack.instance.get_runs(dg.RunsFilter(job_name="workflows_terminate_job"))
        # What a run launcher's terminate does: mark the run canceling, interrupt its process.
        stack.instance.report_run_canceling(run)
        process.send_signal(signal.SIGINT)
        assert stack.revocation(task_id) == {"terminated": "1", "signum": str(int(signal.SIGTERM))}
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    run = stack.instance.get_run_by_id(run.run_id)
    assert run.status == dg.DagsterRunStatus.CANCELED, output[-3000:]
    results = Celery(backend=stack.env["ALPHASWARM_RESULT_BACKEND"])
    assert results.AsyncResult(task_id).state == "REVOKED"
    results.close()
