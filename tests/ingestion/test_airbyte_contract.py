"""Contract tests: the Airbyte sync assets, driven through the real airbyte-api SDK over real
HTTP against a fake Airbyte that validates every request and response against Airbyte's
OpenAPI document. They prove we speak the documented API; they are not Airbyte integration
tests (no Airbyte runs here).
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from openapi_core.datatypes import RequestParameters

from alphaswarm_orch.defs.ingestion.assets import airbyte_sync_assets
from alphaswarm_orch.defs.ingestion.config import AirbyteConnection
from alphaswarm_orch.defs.ingestion.resources import AirbyteConfigError, AirbyteResource
from alphaswarm_orch.queues import QUEUE_TAG
from tests.ingestion.fake_airbyte import SPEC, FakeAirbyte, _SpecRequest

STREAMS = ("prices", "corporate_actions")


def resource(fake: FakeAirbyte, **overrides: Any) -> AirbyteResource:
    """Short waits for tests; production defaults are minutes and hours."""
    config: dict[str, Any] = {
        "server_url": fake.base_url,
        "bearer_token": "static-test-token",
        "request_timeout_seconds": 30.0,
        "retry_initial_interval_seconds": 0.05,
        "retry_max_interval_seconds": 0.2,
        "retry_max_elapsed_seconds": 20.0,
        "poll_interval_seconds": 0.05,
        "sync_deadline_seconds": 60.0,
        **overrides,
    }
    return AirbyteResource(**config)


def materialize(
    connection: AirbyteConnection,
    airbyte: AirbyteResource,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [airbyte_sync_assets(connection, ("team:ingestion",))],
        resources={"airbyte": airbyte},
        instance=instance,
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert len(failures) == 1, result.all_events
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def metadata_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    materializations = result.get_asset_materialization_events()
    assert {tuple(m.asset_key.path) for m in materializations} == {
        ("ingestion", "vendor_prices", stream) for stream in STREAMS
    }
    return {k: v.value for k, v in materializations[0].materialization.metadata.items()}


def test_contract_sync_queued_running_succeeded(fake, connection):
    result = materialize(connection, resource(fake))

    assert result.success
    job_id = next(iter(fake.jobs))
    assert metadata_of(result) == {
        "airbyte/job_id": job_id,
        "airbyte/status": "succeeded",
        "airbyte/rows_synced": 1200,
        "airbyte/bytes_synced": 64_000,
        "airbyte/duration": "PT42S",
        "airbyte/attached_to_existing_job": False,
    }
    assert len(fake.requests("POST", "jobs")) == 1
    assert len(fake.requests("GET", "job")) == 3  # queued -> running -> succeeded


def test_contract_client_credentials_use_the_absolute_token_url(fake, connection):
    airbyte = resource(
        fake, bearer_token=None, client_id=uuid.uuid4().hex, client_secret="test-secret"
    )
    result = materialize(connection, airbyte)

    assert result.success
    tokens = fake.requests("POST", "token")
    assert [t.path for t in tokens] == ["/v1/applications/token"]


def test_contract_failed_sync_fails_the_step_with_job_id_and_airbyte_reply(fake, connection):
    fake.new_job_statuses = ["queued", "running", "failed"]
    result = materialize(connection, resource(fake))

    assert not result.success
    job_id = next(iter(fake.jobs))
    message = failure_message(result)
    assert f"Airbyte job {job_id} for connection {connection.connection_id} ended failed" in message
    assert '"status": "failed"' in message  # Airbyte's own reply is quoted
    assert not fake.requests("DELETE", "job")


def test_contract_cancelled_sync_fails_the_step(fake, connection):
    fake.new_job_statuses = ["running", "cancelled"]
    result = materialize(connection, resource(fake))

    assert not result.success
    assert f"Airbyte job {next(iter(fake.jobs))}" in failure_message(result)
    assert "ended cancelled" in failure_message(result)


def test_contract_attaches_to_an_already_running_job(fake, connection):
    job_id = fake.add_job(connection.connection_id, ["running", "running", "succeeded"])
    fake.add_job(str(uuid.uuid4()), ["running"])  # another connection's job: ignored

    result = materialize(connection, resource(fake))

    assert result.success
    assert not fake.requests("POST", "jobs")
    metadata = metadata_of(result)
    assert metadata["airbyte/job_id"] == job_id
    assert metadata["airbyte/attached_to_existing_job"] is True


def test_contract_incomplete_is_not_finished(fake, connection):
    fake.new_job_statuses = ["running", "incomplete", "running", "succeeded"]
    result = materialize(connection, resource(fake))

    assert result.success
    assert len(fake.requests("GET", "job")) == 4


def test_contract_429_is_retried_after_retry_after(fake, connection):
    fake.fail_next("POST", "jobs", 429, retry_after="1")
    result = materialize(connection, resource(fake))

    assert result.success
    posts = fake.requests("POST", "jobs")
    assert [p.status for p in posts] == [429, 200]
    # The backoff configured here is 0.05 s: the 1 s gap is the server's Retry-After.
    assert posts[1].at - posts[0].at >= 0.95
    assert len(fake.jobs) == 1


def test_contract_5xx_then_success_creates_one_job(fake, connection):
    fake.fail_next("POST", "jobs", 502)
    fake.fail_next("GET", "job", 503)
    result = materialize(connection, resource(fake))

    assert result.success
    assert [p.status for p in fake.requests("POST", "jobs")] == [502, 200]
    # After the 502 the job might exist: the asset looked before posting again.
    assert len(fake.requests("GET", "jobs")) == 2
    assert [g.status for g in fake.requests("GET", "job")][:2] == [503, 200]
    assert len(fake.jobs) == 1


def test_contract_post_slower_than_the_sdk_default_timeout(fake, connection):
    fake.post_delay_seconds = 6.0  # the SDK's own default timeout is 5 s
    result = materialize(connection, resource(fake, request_timeout_seconds=30.0))

    assert result.success
    assert [p.status for p in fake.requests("POST", "jobs")] == [200]
    assert len(fake.jobs) == 1


def test_contract_deadline_cancels_the_job(fake, connection):
    fake.new_job_statuses = ["running"]
    result = materialize(connection, resource(fake, sync_deadline_seconds=1.0))

    assert not result.success
    job_id = next(iter(fake.jobs))
    assert [d.path for d in fake.requests("DELETE", "job")] == [f"/v1/jobs/{job_id}"]
    assert f"Airbyte job {job_id} cancelled: the sync deadline (1s) passed" in failure_message(
        result
    )


def test_contract_deadline_without_cancel_leaves_the_job(fake, connection):
    fake.new_job_statuses = ["running"]
    airbyte = resource(fake, sync_deadline_seconds=0.5, cancel_on_deadline=False)
    result = materialize(connection, airbyte)

    assert not result.success
    assert not fake.requests("DELETE", "job")
    assert "left running (cancellation disabled)" in failure_message(result)


def test_contract_run_termination_cancels_the_job(fake, connection):
    fake.new_job_statuses = ["running"]
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    with dg.instance_for_test() as instance:
        worker = threading.Thread(
            target=lambda: outcome.update(
                result=materialize(connection, resource(fake), instance=instance)
            )
        )
        worker.start()
        fake.wait_for(lambda: len(fake.requests("GET", "job")) >= 2)
        (run,) = instance.get_runs()
        instance.report_run_canceling(run, message="terminated by the test")
        worker.join(timeout=60)
        assert not worker.is_alive()

    result = outcome["result"]
    assert not result.success
    job_id = next(iter(fake.jobs))
    assert [d.path for d in fake.requests("DELETE", "job")] == [f"/v1/jobs/{job_id}"]
    assert "the Dagster run was terminated" in failure_message(result)


def test_contract_fake_rejects_what_the_document_forbids(fake):
    """The validator is live: a bad request and a bad response are both caught."""
    reply = httpx.post(
        f"{fake.base_url}/jobs",
        json={"connectionId": str(uuid.uuid4()), "jobType": "nope"},
        headers={"Authorization": "Bearer static-test-token"},
    )
    assert reply.status_code == 400
    assert "jobType" in fake.violations[0] or "nope" in fake.violations[0]

    job_request = _SpecRequest(
        host_url="https://api.airbyte.com",
        path="/v1/jobs/1",
        method="get",
        parameters=RequestParameters(),
        content_type="",
        body=None,
    )
    fake._send(job_request, 200, {"jobId": 1, "status": "running", "jobType": "sync"})
    assert "connectionId" in fake.violations[1]
    fake.violations.clear()


def test_sync_step_runs_on_the_ingestion_queue(connection):
    assets = airbyte_sync_assets(connection, ("team:ingestion",))
    assert assets.op.tags[QUEUE_TAG] == "ingestion"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"token_url": "/applications/token"},
            "token_url '/applications/token' must be an absolute",
        ),
        ({"client_secret": None}, "no credentials"),
        ({"bearer_token": "t"}, "either bearer_token or client_id/client_secret"),
        ({"server_url": "airbyte:8000"}, "server_url 'airbyte:8000' must be an absolute"),
    ],
)
def test_bad_airbyte_config_is_named(overrides, message):
    config = {
        "server_url": "http://airbyte.internal/api/public/v1",
        "client_id": "id",
        "client_secret": "secret",
        **overrides,
    }
    with (
        pytest.raises(AirbyteConfigError, match=re.escape(message)),
        AirbyteResource(**config).session(),
    ):
        pass


def test_the_openapi_document_travels_with_the_repository():
    """A fresh clone has everything the contract tests read: nothing outside the repo."""
    repo = Path(__file__).resolve().parents[2]
    assert SPEC.resolve().is_relative_to(repo), SPEC
    assert SPEC.is_file()
    assert "airbyte_api.yaml" in (SPEC.parent / "README.md").read_text()
