"""A worker's steps take their plan from the whole-job plan it cached for the run
(alphaswarm_orch/execution/plans.py): on a real worker, a job with dynamic outputs, a retried
mapped step and two runs of different config give what the in-process executor (a full
`create_execution_plan` per run) gives."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import redis
import yaml

from tests.execution import jobs
from tests.support.runs import REPO, step_outcomes, step_workers

EXECUTE = [sys.executable, "-m", "dagster", "job", "execute", "-m", "tests.execution.jobs"]

pytestmark = pytest.mark.integration


def _config(key: str, keys: list[str], fail: str) -> dict:
    return {
        "ops": {
            "split": {"config": {"report_key": key, "keys": keys}},
            "shard": {"config": {"report_key": key, "fail": fail}},
            "gather": {"config": {"report_key": key}},
        }
    }


def _on_worker(env: dict[str, str], tmp_path: Path, config: dict, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [*EXECUTE, "-j", "dynamic_job", "-c", str(path)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_steps_planned_from_the_cached_run_plan_match_the_in_process_executor(
    orch_env, start_worker, tmp_path
) -> None:
    env = {
        **orch_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), orch_env.get("PYTHONPATH")])),
    }
    node = start_worker("default", "w-plans", "--concurrency", "1", env=env).node
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ALPHASWARM_", "DAGSTER_"))})
    client = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"], decode_responses=True)
    try:
        with dg.DagsterInstance.get() as instance:
            io = dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))
            defs = dg.Definitions(jobs=[jobs.dynamic_job], resources={"io_manager": io})
            job = defs.get_job_def("dynamic_job")
            # two runs of different config through the one pool process (concurrency 1)
            for keys, fail in ((["a", "b", "c"], "b"), (["x", "y"], "x")):
                worker_key, local_key = (f"report:{uuid.uuid4().hex}" for _ in range(2))
                before = {run.run_id for run in instance.get_runs()}
                _on_worker(env, tmp_path, _config(worker_key, keys, fail), "-".join(keys))
                [run] = [r for r in instance.get_runs() if r.run_id not in before]
                local = job.execute_in_process(_config(local_key, keys, fail), instance=instance)

                assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
                expected = {"split": "SUCCESS", "gather": "SUCCESS"}
                expected |= {f"shard[{key}]": "SUCCESS" for key in keys}
                assert step_outcomes(instance, run.run_id) == expected
                assert step_outcomes(instance, local.run_id) == expected
                assert set(step_workers(instance, run.run_id).values()) == {node}
                reports = client.lrange(worker_key, 0, -1)
                assert sorted(reports) == sorted(client.lrange(local_key, 0, -1))
                assert f"shard {fail} attempt 1" in reports  # the retried mapped step
                assert reports[-1] == f"gather {sorted(k.upper() for k in keys)}"
    finally:
        client.close()
        os.environ.clear()
        os.environ.update(saved)
