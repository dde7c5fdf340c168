"""Specs become jobs and schedules; light steps run in-process on the embedded default."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.definitions import build_definitions
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.routing import step_queues
from alphaswarm_orch.settings import WORKFLOWS_DIR, Settings
from alphaswarm_orch.tags import WORKLOAD_TAG
from alphaswarm_orch.workflows.spec import MAX_CHAIN, WorkflowSpecError
from tests.support.switches import write_switch
from tests.workflows.test_spec import VALID, reversed_chain, write

LIGHT_ONLY = """\
name: light
trigger: manual
steps:
  - name: hello
    op: log
    params: {message: hello from a spec}
  - name: ping
    op: http_check
    params: {url: "URL"}
  - name: done
    op: noop
    depends_on: [hello, ping]
"""


@pytest.fixture
def http_status() -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server on 127.0.0.1 answering GET with the status in the list's head."""
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/health", status
    server.shutdown()
    server.server_close()


def definitions(tmp_path: Path, *specs: str, env: dict[str, str] | None = None) -> dg.Definitions:
    folder = tmp_path / "specs"
    folder.mkdir()
    for i, text in enumerate(specs):
        write(folder, f"spec{i}.yaml", text)
    env = {"ALPHASWARM_STORAGE_DIR": str(tmp_path), WORKFLOWS_DIR: str(folder), **(env or {})}
    return build_definitions(Settings.from_env(env))


def test_each_spec_becomes_a_job_with_its_schedule(tmp_path: Path) -> None:
    defs = definitions(tmp_path, VALID, LIGHT_ONLY.replace("URL", "http://h/"))
    job = defs.resolve_job_def("workflows_nightly_job")
    assert job.tags[WORKLOAD_TAG] == "workflow"
    assert job.tags["alphaswarm/workflow"] == "nightly"
    # Every step, dispatch included, runs on the light `workflows` queue.
    assert step_queues(job) == dict.fromkeys(["announce", "backtest", "check", "done"], "workflows")
    deps = {
        node.name: sorted(
            i.node.name
            for i in job.graph.dependency_structure.all_upstream_outputs_from_node(node.name)
        )
        for node in job.nodes
    }
    assert deps == {
        "announce": [],
        "backtest": ["announce"],
        "check": [],
        "done": ["backtest", "check"],
    }

    schedule = defs.resolve_schedule_def("workflows_nightly_job_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "workflows_nightly_job"
    assert defs.resolve_job_def("workflows_light_job").tags[WORKLOAD_TAG] == "workflow"
    schedules = defs.get_repository_def().schedule_defs
    assert [s.name for s in schedules if s.name.startswith("workflows_")] == [
        "workflows_nightly_job_schedule"
    ]


def test_the_longest_chain_a_spec_may_have_builds_into_a_job(tmp_path: Path) -> None:
    # Dagster walks a job's graph recursively: the spec's bound keeps the load below that limit.
    defs = definitions(tmp_path, reversed_chain(MAX_CHAIN))
    job = defs.resolve_job_def("workflows_chain_job")
    assert len(job.nodes) == MAX_CHAIN


def test_an_after_trigger_starts_the_job_once_per_upstream_success(
    tmp_path: Path, http_status: tuple[str, list[int]]
) -> None:
    after = "name: follow\ntrigger: {after: light}\nsteps: [{name: a, op: noop}]\n"
    defs = definitions(tmp_path, LIGHT_ONLY.replace("URL", http_status[0]), after)
    sensor = defs.resolve_sensor_def("workflows_follow_after_light_sensor")
    assert sensor.job_name == "workflows_follow_job"
    upstream = defs.resolve_job_def("workflows_light_job")
    with dg.instance_for_test() as instance:
        result = upstream.execute_in_process(instance=instance)
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        )
        request = sensor(context)
    assert request.run_key == result.run_id
    assert request.tags["alphaswarm/trigger_run"] == result.run_id


def test_a_bad_spec_fails_the_code_location_load(tmp_path: Path) -> None:
    bad = VALID.replace("queue: backtest", "queue: workflows")
    with pytest.raises(WorkflowSpecError, match=r"spec1\.yaml:11: steps\[1\]\.dispatch\.queue"):
        definitions(tmp_path, LIGHT_ONLY.replace("URL", "http://h/"), bad)


def test_light_steps_run_and_record_their_results(
    tmp_path: Path, http_status: tuple[str, list[int]]
) -> None:
    url, _status = http_status
    job = definitions(tmp_path, LIGHT_ONLY.replace("URL", url)).resolve_job_def(
        "workflows_light_job"
    )
    result = job.execute_in_process()
    assert result.success
    assert {e.step_key for e in result.get_step_success_events()} == {"hello", "ping", "done"}
    outputs = {
        e.step_key: e.step_output_data.metadata for e in result.all_events if e.is_successful_output
    }
    assert outputs["hello"]["result"].value == {"message": "hello from a spec"}
    ping = outputs["ping"]["result"].value
    assert (ping["url"], ping["status"]) == (url, 200)


def test_a_failed_http_check_fails_its_step(
    tmp_path: Path, http_status: tuple[str, list[int]]
) -> None:
    url, status = http_status
    status[0] = 503
    job = definitions(tmp_path, LIGHT_ONLY.replace("URL", url)).resolve_job_def(
        "workflows_light_job"
    )
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "ping"
    assert (
        f"GET {url} returned 503, expected 200"
        in failure.step_failure_data.user_failure_data.description
    )
    assert "done" not in {e.step_key for e in result.get_step_success_events()}


def test_a_dispatch_without_a_broker_names_the_variable(tmp_path: Path) -> None:
    job = definitions(tmp_path, VALID).resolve_job_def("workflows_nightly_job")
    result = job.execute_in_process(raise_on_error=False, op_selection=["announce", "backtest"])
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "backtest"
    message = failure.step_failure_data.error.cause.message
    assert "workflow step 'backtest' (dispatch to 'backtest') needs a Celery broker" in message
    assert "ALPHASWARM_BROKER_URL" in message


def test_a_dispatch_is_refused_while_the_kill_switch_is_set(
    tmp_path: Path, redis_urls: tuple[str, str]
) -> None:
    env = {
        "ALPHASWARM_BROKER_URL": redis_urls[0],
        "ALPHASWARM_RESULT_BACKEND": redis_urls[1],
        "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex}",
    }
    defs = definitions(tmp_path, VALID, env=env)
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path), **env})
    job = defs.resolve_job_def("workflows_nightly_job")
    switch = KillSwitch.from_settings(settings)
    switch.engage("incident 7", queue="backtest")
    try:
        result = job.execute_in_process(raise_on_error=False, op_selection=["announce", "backtest"])
        # Fail closed: the global switch written as a set (any non-string type) refuses too.
        switch.clear(queue="backtest")
        write_switch(switch.client, switch.key, "set")
        again = job.execute_in_process(raise_on_error=False, op_selection=["announce", "backtest"])
        sent = switch.client.keys("backtest*")
    finally:
        switch.clear()
        switch.clear(queue="backtest")
        switch.client.close()
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "backtest"
    description = failure.step_failure_data.user_failure_data.description
    assert "(incident 7): dispatch of 'backtest.run' to 'backtest' refused" in description
    assert sent == []  # nothing reached the executor queue
    engine = sa.create_engine(settings.ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ledger_refusals)).all()
    engine.dispose()
    assert [(r.source, r.queue, r.run_id) for r in rows] == [
        ("workflows_nightly__backtest", "backtest", result.run_id),
        ("workflows_nightly__backtest", "backtest", again.run_id),
    ]
    [failure] = [e for e in again.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert "(key of type set exists): dispatch of 'backtest.run' to 'backtest' refused" in (
        description
    )
