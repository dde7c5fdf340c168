"""The Airbyte client under concurrency and auth churn, through the real airbyte-api SDK over
HTTP against the fake (every request and response validated against the vendored document):
409 on a concurrent start, tokens rejected mid-sync or between syncs, a flaky token endpoint,
and failures of ours after the job exists."""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any

import dagster as dg
import pytest

from tests.ingestion.fake_airbyte import FakeAirbyte
from tests.ingestion.test_airbyte_contract import (
    failure_message,
    materialize,
    metadata_of,
    resource,
)


def app_credentials(fake: FakeAirbyte, **overrides: Any):
    """Client credentials of an application of our own (a fresh key in the token cache)."""
    return resource(
        fake,
        bearer_token=None,
        client_id=uuid.uuid4().hex,
        client_secret="test-secret",
        **overrides,
    )


def statuses(fake: FakeAirbyte, method: str, route: str) -> list[int]:
    return [seen.status for seen in fake.requests(method, route)]


def logged(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> str:
    return "\n".join(
        r.user_message for r in instance.all_logs(result.run_id) if r.dagster_event is None
    )


def test_two_launches_at_once_both_attach_to_one_job(fake, connection):
    """Both list (no job yet), both POST: Airbyte answers the second 409; it attaches."""
    fake.race_lists(2)
    fake.new_job_statuses = ["running", "running", "running", "succeeded"]
    airbyte = resource(fake)
    results: list[dg.ExecuteInProcessResult] = []
    launches = [
        threading.Thread(target=lambda: results.append(materialize(connection, airbyte)))
        for _ in range(2)
    ]
    for launch in launches:
        launch.start()
    for launch in launches:
        launch.join(timeout=60)

    assert len(results) == 2 and all(r.success for r in results)
    assert sorted(statuses(fake, "POST", "jobs")) == [200, 409]
    assert len(fake.jobs) == 1
    job_ids = {metadata_of(r)["airbyte/job_id"] for r in results}
    assert job_ids == set(fake.jobs)
    assert sorted(metadata_of(r)["airbyte/attached_to_existing_job"] for r in results) == [
        False,
        True,
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_token_rejected_while_polling_is_refreshed_once(fake, connection, status):
    fake.new_job_statuses = ["running", "running", "running", "succeeded"]
    fake.revoke_at("GET", "job", 2, status)

    result = materialize(connection, app_credentials(fake))

    assert result.success, result.all_events
    assert statuses(fake, "POST", "token") == [200, 200]
    assert statuses(fake, "GET", "job") == [200, status, 200, 200, 200]
    assert not fake.requests("DELETE", "job")


def test_a_rejected_token_is_evicted_for_the_next_sync_in_the_process(fake, connection):
    """The token cache outlives a sync (a worker runs many): a revoked token is not reused."""
    airbyte = app_credentials(fake)
    assert materialize(connection, airbyte).success
    fake.revoke_tokens(401)  # e.g. the application's secret was rotated between syncs
    marker = len(fake.seen)

    second = materialize(connection, airbyte)

    assert second.success
    later = [(s.method, s.path.removeprefix("/v1"), s.status) for s in fake.seen[marker:]]
    assert later[:3] == [
        ("GET", "/jobs", 401),
        ("POST", "/applications/token", 200),
        ("GET", "/jobs", 200),
    ]
    assert statuses(fake, "POST", "token") == [200, 200]


def test_token_endpoint_5xx_is_retried_with_backoff(fake, connection):
    fake.fail_next("POST", "token", 503)
    fake.fail_next("POST", "token", 502, retry_after="0.3")

    result = materialize(connection, app_credentials(fake))

    assert result.success
    tokens = fake.requests("POST", "token")
    assert [t.status for t in tokens] == [503, 502, 200]
    assert tokens[2].at - tokens[1].at >= 0.25  # Retry-After honoured


def test_token_endpoint_down_fails_naming_it_after_retries(fake, connection):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1/applications/token"
    airbyte = app_credentials(fake, token_url=dead, retry_max_elapsed_seconds=1.0)

    result = materialize(connection, airbyte)

    assert not result.success
    message = failure_message(result)
    assert f"could not get an Airbyte token from {dead} after" in message
    assert "ConnectError" in message
    assert not fake.requests("POST", "jobs")


def test_token_refused_twice_leaves_the_job_for_the_next_attempt(fake, connection):
    fake.new_job_statuses = ["running", "running", "running", "succeeded"]
    # From the first poll on, the new token is refused too: the application lost its access.
    fake.revoke_at("GET", "job", 1, 403, new_too=True)
    airbyte = app_credentials(fake)

    with dg.instance_for_test() as instance:
        first = materialize(connection, airbyte, instance=instance)
        assert not first.success
        (job_id,) = fake.jobs
        message = failure_message(first)
        assert "Airbyte rejected a newly issued token too on GET /jobs/" in message
        assert f"Airbyte job {job_id}: waiting for it failed on our side" in message
        assert "left running; the next attempt of this connection attaches to it" in message
        assert "left running; the next attempt" in logged(first, instance)
    assert not fake.requests("DELETE", "job")

    fake.issue_rejected = None  # permission restored: the retry attaches, nothing re-posted
    second = materialize(connection, airbyte)
    assert second.success
    assert metadata_of(second)["airbyte/job_id"] == job_id
    assert metadata_of(second)["airbyte/attached_to_existing_job"] is True
    assert len(fake.requests("POST", "jobs")) == 1


def test_cancel_on_error_cancels_the_job_when_polling_fails(fake, connection):
    fake.new_job_statuses = ["running"]
    for _ in range(40):
        fake.fail_next("GET", "job", 500)
    airbyte = resource(fake, retry_max_elapsed_seconds=0.5, cancel_on_error=True)

    result = materialize(connection, airbyte)

    assert not result.success
    (job_id,) = fake.jobs
    assert [d.path for d in fake.requests("DELETE", "job")] == [f"/v1/jobs/{job_id}"]
    assert f"Airbyte job {job_id}: waiting for it failed on our side" in failure_message(result)
    assert "job cancelled (cancel_on_error)" in failure_message(result)


def test_static_bearer_token_rejected_names_the_variable(fake, connection):
    fake.new_job_statuses = ["running", "running", "succeeded"]
    fake.revoke_at("GET", "job", 2, 401)

    result = materialize(connection, resource(fake))

    assert not result.success
    message = failure_message(result)
    assert "rejected the static bearer token (ALPHASWARM_AIRBYTE_TOKEN)" in message
    assert "left running; the next attempt of this connection attaches to it" in message
