"""A fake Airbyte public API on 127.0.0.1 for contract tests.

Real HTTP (a threaded server), scripted per scenario, and strict: every request it receives
and every response it sends is validated against Airbyte's OpenAPI document
(`data/airbyte_api.yaml`, vendored with its source in `data/README.md`; loaded with spec
validation off because of one dangling $ref).
Violations are collected and the `fake_airbyte` fixture fails the test on any. Responses the
document does not declare (injected 429/5xx, 401 for a revoked token, 409 for a second sync of
a connection, as Airbyte answers) are the only ones sent unvalidated.

Scenarios beyond the happy path: a POST /jobs while the connection has an unfinished job is
answered 409 (Airbyte refuses a second sync); `race_lists(n)` holds the next n GET /jobs
until all n arrived, forcing n launches to race into POST; `revoke_tokens` / `revoke_at` make issued
tokens answer 401 or 403 (an expired or rotated token).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC = Path(__file__).with_name("data") / "airbyte_api.yaml"
SPEC_HOST = "https://api.airbyte.com"
"""The spec's server is https://api.airbyte.com/v1; requests are validated as if sent there."""
PREFIX = "/v1"


@dataclass
class _SpecRequest:
    """openapi-core's Request protocol for one received request."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclass
class _SpecResponse:
    """openapi-core's Response protocol for one sent response."""

    status_code: int
    content_type: str
    headers: Headers
    data: bytes | None


@dataclass
class Job:
    job_id: int
    connection_id: str
    statuses: list[str]
    rows: int = 1200
    bytes: int = 64_000
    position: int = 0
    cancelled: bool = False
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def status(self) -> str:
        return "cancelled" if self.cancelled else self.statuses[self.position]

    def advance(self) -> None:
        self.position = min(self.position + 1, len(self.statuses) - 1)

    def body(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "status": self.status,
            "jobType": "sync",
            "startTime": self.started,
            "connectionId": self.connection_id,
            "lastUpdatedAt": datetime.now(UTC).isoformat(),
            "duration": "PT42S",
            "rowsSynced": self.rows,
            "bytesSynced": self.bytes,
        }


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: str | None = None


class FakeAirbyte:
    """Scripted Airbyte: jobs advance one status per GET; faults and delays are queued."""

    def __init__(self, spec: Path = SPEC) -> None:
        if not spec.is_file():
            raise RuntimeError(
                f"Airbyte OpenAPI document not found at {spec}: it is vendored in the "
                "repository (tests/ingestion/data/airbyte_api.yaml)"
            )
        self.openapi = OpenAPI.from_file_path(str(spec), config=Config(spec_validator_cls=None))
        self.lock = threading.Lock()
        self.jobs: dict[int, Job] = {}
        self.next_job_id = 1000
        self.new_job_statuses = ["queued", "running", "succeeded"]
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.post_delay_seconds = 0.0
        self.bearer_tokens = {"static-test-token"}
        self.rejected_tokens: dict[str, int] = {}
        self.revocations: list[tuple[str, str, int, int]] = []
        self.conflict_on_active = True
        self.list_barrier: threading.Barrier | None = None
        self.list_waiters = 0
        self.issue_rejected: int | None = None
        """When set, every token issued is already rejected with this status (a revoked app)."""
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/applications/token"

    def start(self) -> FakeAirbyte:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # -- scripting -------------------------------------------------------------------
    def add_job(self, connection_id: str, statuses: list[str]) -> int:
        """An existing job (e.g. started by Airbyte's own scheduler)."""
        with self.lock:
            return self._new_job(connection_id, statuses).job_id

    def fail_next(self, method: str, route: str, status: int, retry_after: str | None = None):
        """Answer the next `method` on `route` ('jobs', 'job', 'token') with `status`."""
        with self.lock:
            self.faults.setdefault((method, route), []).append(Fault(status, retry_after))

    def race_lists(self, clients: int) -> None:
        """Hold the next `clients` GET /jobs until all of them arrived (then answer all)."""
        with self.lock:
            self.list_barrier = threading.Barrier(clients)
            self.list_waiters = 0

    def revoke_tokens(self, status: int = 401) -> None:
        """Every token issued so far (and the static one) is answered with `status` from now."""
        with self.lock:
            self._revoke(status)

    def revoke_at(
        self, method: str, route: str, nth: int, status: int = 401, *, new_too: bool = False
    ) -> None:
        """Revoke every issued token just before serving the `nth` `method` on `route`
        (and, with `new_too`, every token issued after that: the application lost access)."""
        with self.lock:
            self.revocations.append((method, route, nth, -status if new_too else status))

    def _revoke(self, status: int) -> None:
        for token in self.bearer_tokens:
            self.rejected_tokens[token] = status

    def requests(self, method: str | None = None, route: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method)
                and (route is None or _route(s.path)[0] == route)
            ]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; seen: {self.seen}")
            time.sleep(0.02)

    # -- serving ---------------------------------------------------------------------
    def _new_job(self, connection_id: str, statuses: list[str]) -> Job:
        job = Job(self.next_job_id, connection_id, list(statuses))
        self.jobs[job.job_id] = job
        self.next_job_id += 1
        return job

    def handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> tuple:
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query))
        route, job_id = _route(parts.path)
        content_type = (headers.get("Content-Type") or "").lower()
        if route == "token" and content_type.startswith("application/x-www-form-urlencoded"):
            # The SDK posts the token request as a form. The document declares the same schema
            # for form and JSON, but its properties spell `grant-type` while `required` says
            # `grant_type`; openapi-core's form decoder keeps only declared properties, so no
            # form could pass. Validate the same fields as the JSON body instead.
            body = json.dumps(dict(parse_qsl(body.decode()))).encode()
            content_type = "application/json"
        spec_request = _SpecRequest(
            host_url=SPEC_HOST,
            path=parts.path,
            method=method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(parse_qsl(parts.query)), header=headers, cookie={}
            ),
            content_type=content_type,
            body=body or None,
        )
        with self.lock:
            served = 1 + sum(
                1 for s in self.seen if s.method == method and _route(s.path)[0] == route
            )
            for plan in [r for r in self.revocations if r[:3] == (method, route, served)]:
                self.revocations.remove(plan)
                self._revoke(abs(plan[3]))
                if plan[3] < 0:
                    self.issue_rejected = -plan[3]
        problem = self._check_request(spec_request, route, headers)
        if problem:
            self.violations.append(f"{method} {raw_path}: {problem}")
            return self._send(spec_request, 400, {"message": problem}, validate=False)
        if route != "token":
            with self.lock:
                rejected = self.rejected_tokens.get(headers.get("Authorization", "")[7:])
            if rejected == 403:  # declared by the document, without a body
                return self._send(spec_request, 403, None)
            if rejected is not None:
                return self._send(spec_request, rejected, {"message": "token expired"}, False)
        with self.lock:
            fault = self.faults.get((method, route), [])
            if fault:
                injected = fault.pop(0)
                extra = {"Retry-After": injected.retry_after} if injected.retry_after else {}
                return self._send(
                    spec_request, injected.status, {"message": "injected"}, False, extra
                )
        if route == "token":
            token = f"token-{uuid.uuid4().hex}"
            with self.lock:
                self.bearer_tokens.add(token)
                if self.issue_rejected is not None:
                    self.rejected_tokens[token] = self.issue_rejected
            reply = {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
            return self._send(spec_request, 200, reply)
        if route == "jobs" and method == "GET":
            with self.lock:
                barrier = self.list_barrier
                self.list_waiters += barrier is not None
                if barrier is not None and self.list_waiters >= barrier.parties:
                    self.list_barrier = None  # one-shot: later lists answer at once
            if barrier is not None:
                with suppress(threading.BrokenBarrierError):
                    barrier.wait(timeout=30)
            with self.lock:
                data = [
                    j.body()
                    for j in sorted(self.jobs.values(), key=lambda j: -j.job_id)
                    if j.connection_id == query.get("connectionId")
                ]
            return self._send(spec_request, 200, {"data": data})
        if route == "jobs" and method == "POST":
            if self.post_delay_seconds:
                time.sleep(self.post_delay_seconds)
            request = json.loads(body)
            with self.lock:
                running = [
                    j
                    for j in self.jobs.values()
                    if j.connection_id == request["connectionId"]
                    and j.status in ("pending", "queued", "running", "incomplete")
                ]
                if running and self.conflict_on_active:
                    message = {"message": f"A sync is already running for job {running[0].job_id}"}
                    return self._send(spec_request, 409, message, validate=False)
                job = self._new_job(request["connectionId"], self.new_job_statuses)
                reply = job.body()
            return self._send(spec_request, 200, reply)
        if route == "job":
            with self.lock:
                job = self.jobs.get(job_id)
                if job is None:
                    return self._send(spec_request, 404, None)
                if method == "DELETE":
                    job.cancelled = True
                reply = job.body()
                if method == "GET":
                    job.advance()
            return self._send(spec_request, 200, reply)
        self.violations.append(f"{method} {raw_path}: no such route in the fake")
        return 404, {}, b""

    def _check_request(self, request: _SpecRequest, route: str, headers: Headers) -> str | None:
        try:
            self.openapi.validate_request(request)
        except Exception as exc:  # openapi-core raises a family of validation errors
            return f"request violates the Airbyte API: {exc!r} {getattr(exc, '__cause__', '')}"
        if route != "token":
            auth = headers.get("Authorization", "")
            with self.lock:
                known = auth.removeprefix("Bearer ") in self.bearer_tokens
            if not auth.startswith("Bearer ") or not known:
                return f"missing or unknown bearer token: {auth!r}"
        return None

    def _send(
        self,
        request: _SpecRequest,
        status: int,
        payload: Any,
        validate: bool = True,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = b"" if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **(extra_headers or {})}
        if validate:
            response = _SpecResponse(status, "application/json", Headers(headers), data or None)
            try:
                self.openapi.validate_response(request, response)
            except Exception as exc:
                self.violations.append(
                    f"response to {request.method.upper()} {request.path} violates the "
                    f"Airbyte API: {exc!r} {getattr(exc, '__cause__', '')}"
                )
        return status, headers, data


def _route(path: str) -> tuple[str, int | None]:
    rest = path.removeprefix(PREFIX)
    if rest == "/applications/token":
        return "token", None
    if rest == "/jobs":
        return "jobs", None
    if rest.startswith("/jobs/") and rest[6:].isdigit():
        return "job", int(rest[6:])
    return "unknown", None


def _handler(fake: FakeAirbyte) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = Headers(list(self.headers.items()))
            status, reply_headers, data = fake.handle(self.command, self.path, headers, body)
            with fake.lock:
                fake.seen.append(
                    Seen(
                        self.command,
                        urlsplit(self.path).path,
                        dict(parse_qsl(urlsplit(self.path).query)),
                        status,
                        time.monotonic(),
                    )
                )
            self.send_response(status)
            for name, value in reply_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@contextmanager
def running_fake() -> Iterator[FakeAirbyte]:
    fake = FakeAirbyte().start()
    try:
        yield fake
    finally:
        fake.stop()
