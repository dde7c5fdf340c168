"""Resources of the ingestion domain: the Airbyte API client, the pulls' sources and storage.

`AirbyteResource` wraps the airbyte-api 1.0.1 SDK with the settings its defaults get wrong
for long syncs (DESIGN.md, known facts): a 5 s timeout, no retries, and a relative token URL
that resolves against the wrong base when the API lives under a path.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import airbyte_api
import dagster as dg
import dlt
import httpx
from airbyte_api import api, errors, models
from airbyte_api.utils import BackoffStrategy, RetryConfig
from dlt.common.destination import Destination
from dlt.destinations.impl.postgres.configuration import PostgresCredentials
from pydantic import Field

from alphaswarm_orch.defs.ingestion.sources import PageReader, http_pages
from alphaswarm_orch.settings import Settings

AIRBYTE_URL = "ALPHASWARM_AIRBYTE_URL"
AIRBYTE_CLIENT_ID = "ALPHASWARM_AIRBYTE_CLIENT_ID"
AIRBYTE_CLIENT_SECRET = "ALPHASWARM_AIRBYTE_CLIENT_SECRET"
AIRBYTE_TOKEN = "ALPHASWARM_AIRBYTE_TOKEN"
MARKET_DATA_URL = "ALPHASWARM_MARKET_DATA_URL"
MARKET_DATA_API_KEY = "ALPHASWARM_MARKET_DATA_API_KEY"
REFERENCE_DB_URL = "ALPHASWARM_REFERENCE_DB_URL"
"""Environment variables the ingestion resources read at launch (dg.EnvVar)."""

RETRYABLE_STATUSES = ("429", "500", "502", "503", "504")
ACTIVE_STATUSES = frozenset({"pending", "queued", "running", "incomplete"})
"""Airbyte job statuses that mean "not finished yet" (incomplete = an attempt failed and
Airbyte will retry it)."""


class AirbyteConfigError(ValueError):
    """AirbyteResource config that cannot work; the message names the field and value."""


class AirbyteSyncError(dg.Failure):
    """A sync that did not succeed; the message names the job, its status and Airbyte's reply."""


@dataclass(frozen=True)
class AirbyteJob:
    """The final state of a sync job, as reported by Airbyte."""

    job_id: int
    status: str
    rows_synced: int | None
    bytes_synced: int | None
    duration: str | None
    attached: bool

    def metadata(self) -> dict[str, Any]:
        return {
            "airbyte/job_id": self.job_id,
            "airbyte/status": self.status,
            "airbyte/rows_synced": self.rows_synced,
            "airbyte/bytes_synced": self.bytes_synced,
            "airbyte/duration": self.duration,
            "airbyte/attached_to_existing_job": self.attached,
        }


class AirbyteResource(dg.ConfigurableResource):
    """Airbyte's public API (`/jobs`), authenticated by bearer token or client credentials."""

    server_url: str = Field(
        description="Public API base, e.g. https://airbyte.internal/api/public/v1"
    )
    bearer_token: str | None = Field(default=None, description="Static token (dg.EnvVar).")
    client_id: str | None = Field(default=None, description="Application client id (dg.EnvVar).")
    client_secret: str | None = Field(default=None, description="Application secret (dg.EnvVar).")
    token_url: str | None = Field(
        default=None,
        description="Absolute token endpoint; default <server_url>/applications/token.",
    )
    request_timeout_seconds: float = Field(
        default=60.0, description="Per request; the SDK's own default (5 s) is too short."
    )
    retry_initial_interval_seconds: float = 0.5
    retry_max_interval_seconds: float = 30.0
    retry_max_elapsed_seconds: float = Field(
        default=300.0, description="Give up retrying a 429/5xx response after this long."
    )
    poll_interval_seconds: float = 15.0
    sync_deadline_seconds: float = Field(
        default=6 * 60 * 60, description="Overall limit for one sync, from start to finish."
    )
    cancel_on_deadline: bool = True
    cancel_on_termination: bool = True

    def _security(self) -> models.Security:
        if self.bearer_token and (self.client_id or self.client_secret):
            raise AirbyteConfigError(
                "AirbyteResource: set either bearer_token or client_id/client_secret, not both"
            )
        if self.bearer_token:
            return models.Security(bearer_auth=self.bearer_token)
        if not (self.client_id and self.client_secret):
            raise AirbyteConfigError(
                f"AirbyteResource: no credentials; set {AIRBYTE_CLIENT_ID} and "
                f"{AIRBYTE_CLIENT_SECRET} (auth: client_credentials) or {AIRBYTE_TOKEN} "
                "(auth: bearer in connections.yaml)"
            )
        token_url = self.token_url or f"{self.server_url.rstrip('/')}/applications/token"
        parts = urlsplit(token_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AirbyteConfigError(
                f"AirbyteResource: token_url {token_url!r} must be an absolute http(s) URL "
                "(the SDK resolves a relative one against the host root, not the API path)"
            )
        return models.Security(
            client_credentials=models.SchemeClientCredentials(
                client_id=self.client_id, client_secret=self.client_secret, token_url=token_url
            )
        )

    def _retry(self, statuses: tuple[str, ...], *, connection_errors: bool) -> RetryConfig:
        return RetryConfig(
            "backoff",
            BackoffStrategy(
                initial_interval=int(self.retry_initial_interval_seconds * 1000),
                max_interval=int(self.retry_max_interval_seconds * 1000),
                exponent=1.5,
                max_elapsed_time=int(self.retry_max_elapsed_seconds * 1000),
                jitter_ms=100,
            ),
            retry_connection_errors=connection_errors,
            status_codes_override=list(statuses),
        )

    @contextmanager
    def session(self) -> Iterator[airbyte_api.AirbyteAPI]:
        """An SDK client with our timeout (also for the token request) and retry policy.

        Retries honour `Retry-After` (the SDK sleeps exactly that long).
        """
        parts = urlsplit(self.server_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AirbyteConfigError(
                f"AirbyteResource: server_url {self.server_url!r} must be an absolute http(s) "
                "URL, e.g. https://airbyte.internal/api/public/v1"
            )
        security = self._security()
        # Our own HTTP client: the SDK's token request uses it directly, without timeout_ms.
        with httpx.Client(follow_redirects=True, timeout=self.request_timeout_seconds) as http:
            yield airbyte_api.AirbyteAPI(
                security=security,
                server_url=self.server_url,
                client=http,
                retry_config=self._retry(RETRYABLE_STATUSES, connection_errors=True),
                timeout_ms=int(self.request_timeout_seconds * 1000),
            )

    def sync(
        self,
        connection_id: str,
        *,
        log: Any,
        terminated: Callable[[], bool] = lambda: False,
    ) -> AirbyteJob:
        """Run one sync of `connection_id` to completion and return the finished job.

        Attaches to a sync already pending/queued/running instead of starting a second one
        (job creation is not idempotent). Cancels the Airbyte job when `terminated()` turns
        true or the deadline passes (if configured), then raises AirbyteSyncError.
        """
        with self.session() as sdk:
            return self._sync(sdk, connection_id, log, terminated)

    def _sync(
        self,
        sdk: airbyte_api.AirbyteAPI,
        connection_id: str,
        log: Any,
        terminated: Callable[[], bool],
    ) -> AirbyteJob:
        deadline = time.monotonic() + self.sync_deadline_seconds
        job, attached, raw = self._start(sdk, connection_id, deadline, log)
        log.info(
            f"Airbyte job {job.job_id} for connection {connection_id}: "
            f"{'attached to existing' if attached else 'created'} ({job.status.value})"
        )
        try:
            while job.status.value in ACTIVE_STATUSES:
                stop = self._stop_reason(deadline, terminated)
                if stop is not None:
                    self._stop(sdk, job.job_id, *stop, log)
                time.sleep(max(0.0, min(self.poll_interval_seconds, deadline - time.monotonic())))
                response = sdk.jobs.get_job(request=api.GetJobRequest(job_id=job.job_id))
                job = _job(response.job_response, response.raw_response)
                raw = response.raw_response.text
                log.debug(f"Airbyte job {job.job_id}: {job.status.value}")
        except dg.DagsterExecutionInterruptedError:
            # The step process was interrupted (run terminated under a local executor).
            if self.cancel_on_termination:
                sdk.jobs.cancel_job(request=api.CancelJobRequest(job_id=job.job_id))
                log.warning(f"Airbyte job {job.job_id}: step interrupted; job cancelled")
            raise
        result = AirbyteJob(
            job_id=job.job_id,
            status=job.status.value,
            rows_synced=job.rows_synced,
            bytes_synced=job.bytes_synced,
            duration=job.duration,
            attached=attached,
        )
        if result.status != "succeeded":
            raise AirbyteSyncError(
                description=(
                    f"Airbyte job {result.job_id} for connection {connection_id} ended "
                    f"{result.status}. Airbyte reported: {raw or '(no body)'}. See the job's "
                    "logs in the Airbyte UI."
                ),
                metadata=result.metadata(),
            )
        return result

    def _start(
        self, sdk: airbyte_api.AirbyteAPI, connection_id: str, deadline: float, log: Any
    ) -> tuple[models.JobResponse, bool, str]:
        """Attach to an unfinished sync, else create one: (job, attached, Airbyte's reply).

        Only 429 (request refused, nothing created) is retried blindly on POST; after a 5xx
        or a timeout the job may exist, so we look again before posting again.
        """
        attempt = 0
        while True:
            active = self._active_job(sdk, connection_id)
            if active is not None:
                return active, True, ""
            try:
                response = sdk.jobs.create_job(
                    request=models.JobCreateRequest(
                        connection_id=connection_id, job_type=models.JobTypeEnum.SYNC
                    ),
                    retries=self._retry(("429",), connection_errors=False),
                )
                raw = response.raw_response
                return _job(response.job_response, raw), False, raw.text
            except (errors.SDKError, httpx.TimeoutException, httpx.NetworkError) as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(exc, errors.SDKError) and status is not None and status < 500:
                    raise AirbyteSyncError(
                        description=(
                            f"Airbyte refused to start a sync of connection {connection_id}: "
                            f"HTTP {status}: {exc.body or exc.message}"
                        )
                    ) from exc
                attempt += 1
                pause = min(
                    self.retry_initial_interval_seconds * 1.5**attempt,
                    self.retry_max_interval_seconds,
                )
                if time.monotonic() + pause >= deadline:
                    raise AirbyteSyncError(
                        description=(
                            f"could not start a sync of connection {connection_id} before the "
                            f"deadline ({self.sync_deadline_seconds:g}s): {exc}"
                        )
                    ) from exc
                log.warning(
                    f"starting a sync of {connection_id} failed ({exc}); checking for a job "
                    f"it may have created, then retrying in {pause:.1f}s"
                )
                time.sleep(pause)

    def _active_job(
        self, sdk: airbyte_api.AirbyteAPI, connection_id: str
    ) -> models.JobResponse | None:
        response = sdk.jobs.list_jobs(
            request=api.ListJobsRequest(
                connection_id=connection_id,
                job_type=models.JobTypeEnum.SYNC,
                order_by="createdAt|DESC",
                limit=20,
            )
        )
        jobs = response.jobs_response.data if response.jobs_response else []
        active = [job for job in jobs if job.status.value in ACTIVE_STATUSES]
        return max(active, key=lambda job: job.job_id) if active else None

    def _stop_reason(
        self, deadline: float, terminated: Callable[[], bool]
    ) -> tuple[str, bool] | None:
        """Why to stop waiting (and whether to cancel the Airbyte job), or None."""
        if terminated():
            return "the Dagster run was terminated", self.cancel_on_termination
        if time.monotonic() >= deadline:
            return (
                f"the sync deadline ({self.sync_deadline_seconds:g}s) passed",
                self.cancel_on_deadline,
            )
        return None

    def _stop(
        self, sdk: airbyte_api.AirbyteAPI, job_id: int, reason: str, cancel: bool, log: Any
    ) -> None:
        outcome = "left running (cancellation disabled)"
        if cancel:
            sdk.jobs.cancel_job(request=api.CancelJobRequest(job_id=job_id))
            outcome = "cancelled"
        log.warning(f"Airbyte job {job_id}: {reason}; job {outcome}")
        raise AirbyteSyncError(description=f"Airbyte job {job_id} {outcome}: {reason}")


def _job(job: models.JobResponse | None, raw: httpx.Response) -> models.JobResponse:
    if job is None:
        raise AirbyteSyncError(
            description=f"Airbyte answered HTTP {raw.status_code} without a job: {raw.text[:500]}"
        )
    return job


class MarketDataApi(dg.ConfigurableResource):
    """The market/reference-data REST API the `market_data` pull reads (paginated JSON)."""

    base_url: str = Field(description="e.g. https://marketdata.internal/v1")
    api_key: str | None = Field(default=None, description="Bearer key (dg.EnvVar); may be empty.")
    timeout_seconds: float = 30.0

    def pages(self) -> PageReader:
        return http_pages(self.base_url, api_key=self.api_key, timeout_seconds=self.timeout_seconds)


class ReferenceDatabase(dg.ConfigurableResource):
    """The SQL database the `reference_data` pull copies tables from."""

    url: str = Field(description="SQLAlchemy URL (dg.EnvVar), e.g. postgresql://host/refdata")


@dataclass(frozen=True)
class PullStorage:
    """Where dlt pulls land: duckdb under the storage dir, or Postgres when it is configured."""

    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.storage_dir / "ingestion"

    @property
    def duckdb_path(self) -> Path:
        return self.root / "ingestion.duckdb"

    def destination(self) -> Destination:
        if self.settings.postgres_url:
            # dlt speaks psycopg2 itself and expects the plain scheme.
            _scheme, _sep, rest = self.settings.postgres_url.partition("://")
            credentials = PostgresCredentials(f"postgresql://{rest}")
            if credentials.password is None:
                credentials.password = ""  # trust/peer auth: dlt otherwise demands a password
            return dlt.destinations.postgres(credentials=credentials)
        return dlt.destinations.duckdb(str(self.duckdb_path))

    def declared_pipeline(self, name: str) -> dlt.Pipeline:
        """The pipeline the asset specs are declared with (its working dir is never run in)."""
        return dlt.pipeline(
            pipeline_name=f"ingestion_{name}",
            destination=self.destination(),
            dataset_name=name,
            pipelines_dir=str(self.root / "dlt" / "declared"),
        )

    @contextmanager
    def run_pipeline(self, name: str, run_id: str) -> Iterator[dlt.Pipeline]:
        """A pipeline with a working dir private to this run, removed afterwards.

        dlt keeps its state in the destination too, so concurrent runs (a schedule and a
        manual launch) never share a working dir and nothing local needs keeping.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        workdir = self.root / "dlt" / "runs" / f"{run_id}-{name}"
        try:
            yield dlt.pipeline(
                pipeline_name=f"ingestion_{name}",
                destination=self.destination(),
                dataset_name=name,
                pipelines_dir=str(workdir),
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
