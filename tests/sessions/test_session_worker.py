"""A session run on a real `paper` Celery worker: refused under the kill switch, then a
session that handles its ticks and ends cleanly on a stop request."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
import yaml

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.ledger.db import migrate
from alphaswarm_orch.sessions.simulator import paper_fills, paper_sessions
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from alphaswarm_orch.tags import REQUEST_ID_TAG
from tests.sessions.conftest import paper_start
from tests.support.runs import step_outcomes, step_workers, wait_for

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def execute(env: dict[str, str], config: Path, request_id: str) -> subprocess.Popen:
    """`dagster job execute` of paper_session_job: the run process; steps go to Celery."""
    argv = [sys.executable, "-m", "dagster", "job", "execute", "-m", "alphaswarm_orch.definitions"]
    argv += ["-j", "paper_session_job", "-c", str(config)]
    argv += ["--tags", json.dumps({REQUEST_ID_TAG: request_id})]
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def step_error(instance: dg.DagsterInstance, run_id: str) -> str:
    [record] = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    error, chain = record.dagster_event.step_failure_data.error, []
    while error is not None:
        chain.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(chain)


def run_for(instance: dg.DagsterInstance, request_id: str) -> dg.DagsterRun:
    [run] = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: request_id}))
    return run


@pytest.mark.integration
def test_session_on_a_paper_worker_refused_then_run_and_stopped(
    orch_env: dict[str, str],
    start_worker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = {**orch_env, "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex[:8]}"}
    for name in ("ALPHASWARM_POSTGRES_URL", "ALPHASWARM_STORAGE_DIR", "DAGSTER_HOME"):
        monkeypatch.setenv(name, env[name])
    worker = start_worker("paper", f"paper-{uuid.uuid4().hex[:6]}", env=env)
    client = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"])
    switch = KillSwitch(client, env["ALPHASWARM_KILL_SWITCH_KEY"])
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    start = paper_start(session_id)
    config = tmp_path / "run.yaml"
    session_config = start.model_dump(exclude={"schema_version", "type"})
    config.write_text(yaml.safe_dump({"ops": {"paper_session": {"config": session_config}}}))
    engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"])
    # The ledger migrations, as the session runs them first: lets this test poll at once.
    migrate(env["ALPHASWARM_POSTGRES_URL"])
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    started: list[subprocess.Popen] = []
    try:
        switch.engage("exchange outage", queue="paper")
        refused = execute(env, config, "refused-1")
        started.append(refused)
        output, _ = refused.communicate(timeout=TIMEOUT)
        assert refused.returncode != 0, output
        run = run_for(instance, "refused-1")
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert step_outcomes(instance, run.run_id) == {"paper_session": "FAILURE"}
        # The worker refuses the step before it starts; the refusal is in the event trail the
        # ledger mirrors into workload_runs.
        error = step_error(instance, run.run_id)
        assert "KillSwitchEngaged" in error and "exchange outage" in error
        assert not client.exists(tick_stream(session_id))

        switch.clear("paper")
        process = execute(env, config, "session-1")
        started.append(process)
        for i in range(30):
            append_tick(
                client, session_id, Tick(f"t{i}", "BTC-USD", 100.0 + i, (OrderIntent("buy", 1),))
            )

        def fills() -> int:
            with engine.connect() as conn:
                return conn.execute(
                    sa.select(sa.func.count())
                    .select_from(paper_fills)
                    .where(paper_fills.c.session_id == session_id)
                ).scalar()

        wait_for(lambda: fills() == 30, TIMEOUT, "30 fills from the worker's session")
        client.set(session_stop_key(session_id), "end of test")
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output + worker.log()
        run = run_for(instance, "session-1")
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert step_workers(instance, run.run_id)["paper_session"] == worker.node
        with engine.connect() as conn:
            session = conn.execute(
                sa.select(paper_sessions).where(paper_sessions.c.session_id == session_id)
            ).one()
        assert session.status == "stopped"
        assert session.cash == pytest.approx(100_000 - sum(100.0 + i for i in range(30)))
    finally:
        switch.clear("paper")
        client.set(session_stop_key(session_id), "cleanup")  # ends a session left running
        for leftover in started:
            try:
                leftover.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                leftover.kill()
                leftover.communicate()
        client.delete(tick_stream(session_id), session_stop_key(session_id))
        client.close()
        instance.dispose()
        engine.dispose()
