"""Resources of the ingestion domain: the Airbyte API client, the pulls' sources and storage.

`AirbyteResource` wraps the airbyte-api 1.0.1 SDK with the settings its defaults get wrong
for long syncs: a 5 s timeout, no retries, and a relative token URL
that resolves against the wrong base when the API lives under a path.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import dlt
import httpx
from dlt.common.destination import Destination
from dlt.destinations.impl.postgres.configuration import PostgresCredentials
from filelock import FileLock, Timeout
from pydantic import Field

from alphaswarm_orch.defs.ingestion.sources import PageReader, http_pages
from alphaswarm_orch.settings import Settings


class _Lazy:
    """A module imported on first attribute access: the airbyte-api SDK costs ~0.3 s to
    import, and every process loading the code location (each run, each step process) would
    pay it even when no connection is configured."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


airbyte_api = _Lazy("airbyte_api")
api = _Lazy("airbyte_api.api")
errors = _Lazy("airbyte_api.errors")
models = _Lazy("airbyte_api.models")
_sdk_utils = _Lazy("airbyte_api.utils")

AIRBYTE_URL = "ALPHASWARM_AIRBYTE_URL"
AIRBYTE_CLIENT_ID = "ALPHASWARM_AIRBYTE_CLIENT_ID"
AIRBYTE_CLIENT_SECRET = "ALPHASWARM_AIRBYTE_CLIENT_SECRET"
AIRBYTE_TOKEN = "ALPHASWARM_AIRBYTE_TOKEN"
MARKET_DATA_URL = "ALPHASWARM_MARKET_DATA_URL"
MARKET_DATA_API_KEY = "ALPHASWARM_MARKET_DATA_API_KEY"
REFERENCE_DB_URL = "ALPHASWARM_REFERENCE_DB_URL"
"""Environment variables the ingestion resources read at launch (dg.EnvVar)."""

RETRYABLE_STATUSES = ("429", "500", "502", "503", "504")
AUTH_REJECTED = (401, 403)
CONFLICT = 409
_ALREADY_RUNNING = re.compile(
    r"already (running|in progress|exists)|sync.*(running|conflict)", re.IGNORECASE
)
"""A 4xx body that says a sync of the connection is running (besides a plain 409)."""
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


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float | None

    def fresh(self) -> bool:
        # Refresh a minute early, like the SDK, so a token does not expire mid-request.
        return self.expires_at is None or time.time() + 60 < self.expires_at


_TOKENS: dict[str, _Token] = {}
"""Process-wide token cache (a worker runs many syncs): key -> token, evicted on 401/403."""
_TOKENS_LOCK = threading.Lock()
_FETCH_LOCKS: dict[str, threading.Lock] = {}


class _Credentials:
    """Where a session's bearer token comes from, given to the SDK as a callable.

    Client credentials are exchanged by us, not by the SDK's hook: the hook does not retry
    the token request and keeps a process-wide cache that a 403 never evicts. Ours retries
    429/5xx/connection errors with backoff and evicts a token Airbyte rejected, so the next
    call (or the next sync in the same worker) gets a new one.
    """

    def __init__(self, resource: AirbyteResource, http: httpx.Client, log: Any) -> None:
        self.resource = resource
        self.http = http
        self.log = log
        self.static = resource.bearer_token
        self.last: str | None = None
        self.token_url = resource.resolved_token_url()
        self.key = hashlib.sha256(
            f"{self.token_url}\0{resource.client_id}\0{resource.client_secret}".encode()
        ).hexdigest()

    @property
    def refreshable(self) -> bool:
        return self.static is None

    def __call__(self) -> models.Security:
        self.last = self.static or self._token()
        return models.Security(bearer_auth=self.last)

    def evict(self, rejected: str | None) -> None:
        """Forget `rejected` (unless another thread already replaced it)."""
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self.key)
            if cached is not None and cached.value == rejected:
                del _TOKENS[self.key]

    def _token(self) -> str:
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self.key)
            lock = _FETCH_LOCKS.setdefault(self.key, threading.Lock())
        if cached is not None and cached.fresh():
            return cached.value
        with lock:  # one token request per credentials at a time
            with _TOKENS_LOCK:
                cached = _TOKENS.get(self.key)
            if cached is not None and cached.fresh():
                return cached.value
            token = self._request_token()
            with _TOKENS_LOCK:
                _TOKENS[self.key] = token
            return token.value

    def _request_token(self) -> _Token:
        """POST the client credentials; retry 429/5xx and connection errors with backoff."""
        resource = self.resource
        give_up = time.monotonic() + resource.retry_max_elapsed_seconds
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                reply = self.http.post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": resource.client_id,
                        "client_secret": resource.client_secret,
                    },
                )
            except (httpx.TimeoutException, httpx.NetworkError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code == 429 or reply.status_code >= 500:
                    problem = f"HTTP {reply.status_code}"
                    retry_after = _retry_after(reply)
                elif not reply.is_success:
                    raise AirbyteSyncError(
                        description=(
                            f"Airbyte's token endpoint {self.token_url} refused the client "
                            f"credentials ({AIRBYTE_CLIENT_ID}): HTTP {reply.status_code}: "
                            f"{reply.text[:300] or '(no body)'}"
                        )
                    )
                else:
                    return _parse_token(reply, self.token_url)
            pause = retry_after
            if pause is None:
                pause = min(
                    resource.retry_initial_interval_seconds * 1.5 ** (attempt - 1),
                    resource.retry_max_interval_seconds,
                )
            if time.monotonic() + pause > give_up:
                raise AirbyteSyncError(
                    description=(
                        f"could not get an Airbyte token from {self.token_url} after "
                        f"{attempt} attempt(s) in {resource.retry_max_elapsed_seconds:g}s: "
                        f"{problem}"
                    )
                )
            self.log.warning(
                f"Airbyte token request to {self.token_url} failed ({problem}); "
                f"retrying in {pause:.1f}s (attempt {attempt})"
            )
            time.sleep(pause)


def _retry_after(reply: httpx.Response) -> float | None:
    try:
        return max(0.0, float(reply.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _parse_token(reply: httpx.Response, token_url: str) -> _Token:
    try:
        body = reply.json()
        token = body["access_token"]
        kind = str(body.get("token_type", "")).lower()
        expires_in = body.get("expires_in")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AirbyteSyncError(
            description=f"Airbyte's token endpoint {token_url} answered without a token: "
            f"{reply.text[:300]!r}"
        ) from exc
    if kind != "bearer" or not isinstance(token, str) or not token:
        raise AirbyteSyncError(
            description=f"Airbyte's token endpoint {token_url} answered token_type {kind!r}, "
            "expected a bearer token"
        )
    expires_at = time.time() + float(expires_in) if isinstance(expires_in, int | float) else None
    return _Token(token, expires_at)


class AirbyteAuthError(AirbyteSyncError):
    """Airbyte rejected our token, even a freshly issued one (or the static one)."""


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) if isinstance(exc, errors.SDKError) else None


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
        default=300.0,
        description="Give up retrying a 429/5xx response (or the token request) after this long.",
    )
    poll_interval_seconds: float = 15.0
    sync_deadline_seconds: float = Field(
        default=6 * 60 * 60, description="Overall limit for one sync, from start to finish."
    )
    cancel_on_deadline: bool = True
    cancel_on_termination: bool = True
    cancel_on_error: bool = Field(
        default=False,
        description="When our side fails after the job exists (auth, network, a bug): cancel "
        "the Airbyte job. Default: leave it running; the next attempt attaches to it.",
    )

    def resolved_token_url(self) -> str:
        token_url = self.token_url or f"{self.server_url.rstrip('/')}/applications/token"
        parts = urlsplit(token_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AirbyteConfigError(
                f"AirbyteResource: token_url {token_url!r} must be an absolute http(s) URL "
                "(the SDK resolves a relative one against the host root, not the API path)"
            )
        return token_url

    def _check_credentials(self) -> None:
        if self.bearer_token and (self.client_id or self.client_secret):
            raise AirbyteConfigError(
                "AirbyteResource: set either bearer_token or client_id/client_secret, not both"
            )
        if self.bearer_token:
            return
        if not (self.client_id and self.client_secret):
            raise AirbyteConfigError(
                f"AirbyteResource: no credentials; set {AIRBYTE_CLIENT_ID} and "
                f"{AIRBYTE_CLIENT_SECRET} (auth: client_credentials) or {AIRBYTE_TOKEN} "
                "(auth: bearer in connections.yaml)"
            )
        self.resolved_token_url()

    def _retry(self, statuses: tuple[str, ...], *, connection_errors: bool) -> Any:
        return _sdk_utils.RetryConfig(
            "backoff",
            _sdk_utils.BackoffStrategy(
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
    def session(self, log: Any = None) -> Iterator[_Session]:
        """An SDK client with our timeout (also for the token request) and retry policy.

        Retries honour `Retry-After` (the SDK sleeps exactly that long). Calls made through
        the session get a new token once when Airbyte answers 401/403.
        """
        parts = urlsplit(self.server_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AirbyteConfigError(
                f"AirbyteResource: server_url {self.server_url!r} must be an absolute http(s) "
                "URL, e.g. https://airbyte.internal/api/public/v1"
            )
        self._check_credentials()
        log = log or dg.get_dagster_logger()
        with httpx.Client(follow_redirects=True, timeout=self.request_timeout_seconds) as http:
            credentials = _Credentials(self, http, log)
            sdk = airbyte_api.AirbyteAPI(
                security=credentials,
                server_url=self.server_url,
                client=http,
                retry_config=self._retry(RETRYABLE_STATUSES, connection_errors=True),
                timeout_ms=int(self.request_timeout_seconds * 1000),
            )
            yield _Session(sdk, credentials, log)

    def sync(
        self,
        connection_id: str,
        *,
        log: Any,
        terminated: Callable[[], bool] = lambda: False,
    ) -> AirbyteJob:
        """Run one sync of `connection_id` to completion and return the finished job.

        Attaches to a sync already pending/queued/running instead of starting a second one
        (job creation is not idempotent), also when Airbyte answers our POST with 409 because
        another client started one meanwhile. Cancels the Airbyte job when `terminated()`
        turns true or the deadline passes (if configured), then raises AirbyteSyncError.
        """
        with self.session(log) as session:
            return self._sync(session, connection_id, log, terminated)

    def _sync(
        self,
        session: _Session,
        connection_id: str,
        log: Any,
        terminated: Callable[[], bool],
    ) -> AirbyteJob:
        deadline = time.monotonic() + self.sync_deadline_seconds
        job, attached, raw = self._start(session, connection_id, deadline, log)
        log.info(
            f"Airbyte job {job.job_id} for connection {connection_id}: "
            f"{'attached to existing' if attached else 'created'} ({job.status.value})"
        )
        try:
            while job.status.value in ACTIVE_STATUSES:
                stop = self._stop_reason(deadline, terminated)
                if stop is not None:
                    self._stop(session, job.job_id, *stop, log)
                time.sleep(max(0.0, min(self.poll_interval_seconds, deadline - time.monotonic())))
                request = api.GetJobRequest(job_id=job.job_id)
                response = session.call(
                    f"GET /jobs/{job.job_id}",
                    functools.partial(session.sdk.jobs.get_job, request=request),
                )
                job = _job(response.job_response, response.raw_response)
                raw = response.raw_response.text
                log.debug(f"Airbyte job {job.job_id}: {job.status.value}")
        except dg.DagsterExecutionInterruptedError:
            # The step process was interrupted (run terminated under a local executor).
            if self.cancel_on_termination:
                session.sdk.jobs.cancel_job(request=api.CancelJobRequest(job_id=job.job_id))
                log.warning(f"Airbyte job {job.job_id}: step interrupted; job cancelled")
            raise
        except _Stopped as stopped:
            raise stopped.error from None
        except Exception as exc:
            raise self._our_failure(session, job.job_id, exc, log) from exc
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

    def _our_failure(
        self, session: _Session, job_id: int, exc: Exception, log: Any
    ) -> AirbyteSyncError:
        """Waiting for a job failed on our side: cancel it or leave it for the next attempt."""
        if self.cancel_on_error:
            try:
                session.call(
                    f"DELETE /jobs/{job_id}",
                    lambda: session.sdk.jobs.cancel_job(
                        request=api.CancelJobRequest(job_id=job_id)
                    ),
                )
                outcome = "cancelled (cancel_on_error)"
            except Exception as cancel_exc:
                outcome = (
                    f"left running: cancelling it failed too ({cancel_exc}); the next attempt "
                    "of this connection attaches to it"
                )
        else:
            outcome = "left running; the next attempt of this connection attaches to it"
        message = f"Airbyte job {job_id}: waiting for it failed on our side ({exc}); job {outcome}"
        log.warning(message)
        if isinstance(exc, AirbyteAuthError):
            return AirbyteAuthError(description=message)
        return AirbyteSyncError(description=message)

    def _start(
        self, session: _Session, connection_id: str, deadline: float, log: Any
    ) -> tuple[models.JobResponse, bool, str]:
        """Attach to an unfinished sync, else create one: (job, attached, Airbyte's reply).

        Only 429 (request refused, nothing created) is retried blindly on POST; after a 5xx
        or a timeout the job may exist, so we look again before posting again. A 409 (or a
        4xx saying a sync already runs) means another client started one: we attach to it.
        """
        attempt = 0
        while True:
            active = self._active_job(session, connection_id)
            if active is not None:
                return active, True, ""
            try:
                response = session.call(
                    "POST /jobs",
                    lambda: session.sdk.jobs.create_job(
                        request=models.JobCreateRequest(
                            connection_id=connection_id, job_type=models.JobTypeEnum.SYNC
                        ),
                        retries=self._retry(("429",), connection_errors=False),
                    ),
                )
                raw = response.raw_response
                return _job(response.job_response, raw), False, raw.text
            except (errors.SDKError, httpx.TimeoutException, httpx.NetworkError) as exc:
                status = _status(exc)
                conflict = status == CONFLICT or (
                    status is not None
                    and 400 <= status < 500
                    and bool(_ALREADY_RUNNING.search(getattr(exc, "body", "") or ""))
                )
                if isinstance(exc, AirbyteAuthError):
                    raise
                if conflict:
                    log.info(
                        f"Airbyte refused a second sync of connection {connection_id} (HTTP "
                        f"{status}: a sync already runs, started by another client); "
                        "attaching to it"
                    )
                elif status is not None and status < 500:
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
                if conflict:
                    if attempt > 1:  # the running job was not listed yet: look again shortly
                        time.sleep(pause)
                    continue
                log.warning(
                    f"starting a sync of {connection_id} failed ({exc}); checking for a job "
                    f"it may have created, then retrying in {pause:.1f}s"
                )
                time.sleep(pause)

    def _active_job(self, session: _Session, connection_id: str) -> models.JobResponse | None:
        response = session.call(
            "GET /jobs",
            lambda: session.sdk.jobs.list_jobs(
                request=api.ListJobsRequest(
                    connection_id=connection_id,
                    job_type=models.JobTypeEnum.SYNC,
                    order_by="createdAt|DESC",
                    limit=20,
                )
            ),
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

    def _stop(self, session: _Session, job_id: int, reason: str, cancel: bool, log: Any) -> None:
        outcome = "left running (cancellation disabled)"
        if cancel:
            session.call(
                f"DELETE /jobs/{job_id}",
                lambda: session.sdk.jobs.cancel_job(request=api.CancelJobRequest(job_id=job_id)),
            )
            outcome = "cancelled"
        log.warning(f"Airbyte job {job_id}: {reason}; job {outcome}")
        raise _Stopped(AirbyteSyncError(description=f"Airbyte job {job_id} {outcome}: {reason}"))


class _Stopped(Exception):
    """We stopped waiting on purpose (deadline, termination); carries the step's error."""

    def __init__(self, error: AirbyteSyncError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Session:
    """The SDK plus our token source; `call` retries once with a new token on 401/403."""

    sdk: Any  # airbyte_api.AirbyteAPI
    credentials: _Credentials
    log: Any

    def call(self, what: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except errors.SDKError as exc:
            status = _status(exc)
            if status not in AUTH_REJECTED:
                raise
            if not self.credentials.refreshable:
                raise AirbyteAuthError(
                    description=(
                        f"Airbyte rejected the static bearer token ({AIRBYTE_TOKEN}) on {what}: "
                        f"HTTP {status}; set a valid token or use client credentials"
                    )
                ) from exc
            self.credentials.evict(self.credentials.last)
            self.log.warning(
                f"Airbyte answered HTTP {status} on {what}: token evicted; getting a new "
                "token and retrying once"
            )
        try:
            return request()
        except errors.SDKError as exc:
            status = _status(exc)
            if status not in AUTH_REJECTED:
                raise
            self.credentials.evict(self.credentials.last)
            raise AirbyteAuthError(
                description=(
                    f"Airbyte rejected a newly issued token too on {what}: HTTP {status}: "
                    f"{exc.body or '(no body)'}; check the application's permissions "
                    f"({AIRBYTE_CLIENT_ID})"
                )
            ) from exc


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
    max_attempts: int = Field(default=5, description="Per page: 429/5xx/connection errors.")
    backoff_factor: float = Field(default=1.0, description="Retry waits grow from this (s).")

    def pages(self) -> PageReader:
        return http_pages(
            self.base_url,
            api_key=self.api_key,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_factor=self.backoff_factor,
        )


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
        """The pipeline the asset specs are declared with (its working dir is never run in).

        dlt writes the pipeline's state file when it is created: processes loading the code
        location at once (two runs, a worker) take turns.
        """
        declared = self.root / "dlt" / "declared"
        declared.mkdir(parents=True, exist_ok=True)
        with FileLock(str(declared / ".lock")):
            return dlt.pipeline(
                pipeline_name=f"ingestion_{name}",
                destination=self.destination(),
                dataset_name=name,
                pipelines_dir=str(declared),
            )

    @contextmanager
    def writer(self, log: Any) -> Iterator[None]:
        """Serialise writers of the embedded duckdb file (duckdb admits one writing process).

        A file lock next to the database, held for the whole pull (dlt reads its state from
        the destination first, then loads): a second pull waits, saying so, instead of failing
        on duckdb's lock. Released by the OS if the holder dies. Postgres needs no lock.
        """
        if self.settings.postgres_url:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{self.duckdb_path}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info(
                f"another pull is writing {self.duckdb_path}; waiting for it to finish "
                "(duckdb admits one writer)"
            )
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def run_pipeline(self, name: str, run_id: str, log: Any = None) -> Iterator[dlt.Pipeline]:
        """A pipeline with a working dir private to this run, removed afterwards; the
        destination's writer lock is held meanwhile.

        dlt keeps its state in the destination too, so concurrent runs (a schedule and a
        manual launch) never share a working dir and nothing local needs keeping.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        workdir = self.root / "dlt" / "runs" / f"{run_id}-{name}"
        try:
            with self.writer(log or dg.get_dagster_logger()):
                yield dlt.pipeline(
                    pipeline_name=f"ingestion_{name}",
                    destination=self.destination(),
                    dataset_name=name,
                    pipelines_dir=str(workdir),
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
