"""Worker health: readiness (can this pod reach the broker now?) and liveness (is its consumer
loop still turning?), served with /metrics on ALPHASWARM_METRICS_PORT.

They answer different questions on purpose. Readiness opens a *fresh* broker connection with a
short timeout, because a socket held for hours can look alive when it is dead. Liveness never
touches the broker: a Redis outage must take workers out of rotation, not make Kubernetes
restart healthy workers in a loop. The consumer's event loop beats a heartbeat every
HEARTBEAT_SECONDS, and so does Celery's reconnect loop during an outage, and a draining worker
counts as alive until it exits.

The port is reachable by anything in the cluster, so the server bounds what a client can hold:
each connection has REQUEST_DEADLINE_SECONDS from connecting to have sent its request and
as long again to take the response, and at most MAX_CONNECTIONS are served at once. Past the
cap, the oldest connection that has not sent its request yet is closed to make room (a
scraper or the kubelet sends at once, so idle or trickling clients are the ones that go), and
if every connection is busy answering, the new one is closed unanswered.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import bootsteps
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alphaswarm_orch.compat.celery import CONSUMER_TASKS_STEP, Consumer, worker_state
from alphaswarm_orch.settings import redacted

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
LIVENESS_MAX_AGE_SECONDS = 60.0
"""Default heartbeat age above which /healthz fails (override with ?max_age=S)."""
READINESS_TIMEOUT_SECONDS = 3.0
MAX_READINESS_TIMEOUT_SECONDS = 8.0
"""Longest ?timeout= a /readyz request may ask for (it must answer within the deadline)."""
RECONNECT_MAX_INTERVAL_SECONDS = 5
REQUEST_DEADLINE_SECONDS = 10.0
"""From connecting to the end of the request's headers; the response gets as long again."""
MAX_CONNECTIONS = 64
"""Connections served at once (each holds a thread of the worker's main process)."""
EVICTION_WAIT_SECONDS = 1.0
"""How long a new connection waits for evicted ones' threads to end before it is refused."""


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


def probe_broker(url: str, timeout: float = READINESS_TIMEOUT_SECONDS) -> ProbeResult:
    """Open a new connection to the broker and round-trip a command, within `timeout`.

    Never reuses a pooled socket: `Connection(url)` is new, and kombu's Redis channel PINGs
    when it is created, so a dead or frozen server fails here instead of looking connected.
    """
    started = time.monotonic()
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    conn = Connection(url, connect_timeout=timeout, transport_options=options)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        conn.default_channel  # noqa: B018 - creating the channel PINGs Redis
        return ProbeResult(True, f"broker {redacted(url)} reachable", time.monotonic() - started)
    except Exception as exc:
        detail = f"broker {redacted(url)} unreachable: {type(exc).__name__}: {exc}"
        return ProbeResult(False, detail, time.monotonic() - started)
    finally:
        conn.release()


class Heartbeat:
    """Monotonic time of the consumer loop's last sign of life, and what it was doing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = time.monotonic()
        self.state = "starting"

    def beat(self, state: str) -> None:
        with self._lock:
            if self.state != "draining":
                self.state = state
            self._at = time.monotonic()

    def drain(self) -> None:
        """From now on the worker is finishing its tasks and exiting: alive until it exits."""
        with self._lock:
            self.state = "draining"

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._at

    def alive(self, max_age: float = LIVENESS_MAX_AGE_SECONDS) -> bool:
        return self.state == "draining" or self.age() <= max_age

    def up(self) -> bool:
        """Alive and connected (celery_worker_up): 0 while starting or reconnecting."""
        return self.state in ("consuming", "draining") and self.alive()


HEARTBEAT = Heartbeat()
"""The worker process's heartbeat (one worker per process)."""


class HeartbeatStep(bootsteps.StartStopStep):
    """Consumer bootstep: beat from the consumer's event loop while it runs."""

    requires = (CONSUMER_TASKS_STEP,)

    def start(self, c: Consumer) -> None:
        HEARTBEAT.beat("consuming")
        # Entries registered while connecting belong to this connection: Celery cancels them
        # when it is lost and this step registers a new one when it is back.
        c.timer.call_repeatedly(HEARTBEAT_SECONDS, HEARTBEAT.beat, ("consuming",))


class HeartbeatConsumer(Consumer):
    """Celery's consumer, beating the heartbeat from its broker (re)connect loop too.

    While Redis is down the consumer sits in kombu's retry loop, not in its event loop; kombu
    calls `callback` there at least once a second, and that is the sign of life. The wait
    between attempts is capped at RECONNECT_MAX_INTERVAL_SECONDS (kombu's default grows to
    30 s), so a worker resumes consuming within seconds of Redis coming back.
    """

    def ensure_connected(self, conn: Connection) -> Connection:
        ensure = conn.ensure_connection

        def ensure_with_heartbeat(*args: Any, callback: Callable | None = None, **kw: Any):
            def tick() -> None:
                HEARTBEAT.beat("reconnecting")
                if callback is not None:
                    callback()

            kw.setdefault("interval_max", RECONNECT_MAX_INTERVAL_SECONDS)
            return ensure(*args, callback=tick, **kw)

        conn.ensure_connection = ensure_with_heartbeat
        HEARTBEAT.beat("reconnecting")
        return super().ensure_connected(conn)


@dataclass(frozen=True)
class WorkerStatus:
    """What /healthz reports (the drain command reads node, pid, queues and reserved)."""

    node: str
    pid: int
    queues: list[str]
    state: str
    heartbeat_age: float
    active: int
    reserved: int
    alive: bool


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them, each with a deadline."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline: float = REQUEST_DEADLINE_SECONDS,
    ) -> None:
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        """Notified whenever a connection's thread ends."""
        self._serving = 0
        """Connections with a live thread (evicted ones included until their thread ends)."""
        self._reading: dict[socket.socket, None] = {}
        """Connections still reading their request, oldest first."""
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._released:
            admitted = self._admit()
            if not admitted and self._serving > self.max_connections:
                # Evicted connections' threads are on their way out: wait for them (briefly:
                # this is the accept loop) rather than turn away a scrape behind a flood.
                admitted = self._released.wait_for(self._admit, timeout=EVICTION_WAIT_SECONDS)
            if admitted:
                self._serving += 1
                self._reading[request] = None
        if not admitted:
            log.debug(
                "health: %s connections busy, closing one from %s", self._serving, client_address
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def _admit(self) -> bool:
        """Room for one more connection, closing the oldest idle one if needed (lock held)."""
        if self._serving < self.max_connections:
            return True
        if self._serving >= 2 * self.max_connections or not self._reading:
            return False  # all busy answering, or evicted ones still on their way out
        oldest = next(iter(self._reading))
        del self._reading[oldest]
        _abort(oldest)  # its thread's read returns at once and the thread ends
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        with self._released:
            self._serving -= 1
            self._reading.pop(request, None)
            self._released.notify_all()

    def request_received(self, request: Any) -> None:
        """The connection has sent its request: no longer a candidate for eviction."""
        with self._lock:
            self._reading.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or vanishes is routine here, not a traceback on stderr."""
        routine = isinstance(sys.exc_info()[1], OSError)
        level = logging.DEBUG if routine else logging.WARNING
        log.log(level, "health: request from %s failed", client_address, exc_info=True)

    def connections(self) -> int:
        with self._lock:
            return self._serving


def _abort(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already gone
        connection.shutdown(socket.SHUT_RDWR)


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket until an absolute deadline: one byte every few seconds (slowloris)
    does not keep a connection, where a per-read socket timeout alone would."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self.connection = connection
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received before the connection's deadline")
        self.connection.settimeout(remaining)
        return self.connection.recv_into(buffer)


class HealthServer:
    """/metrics, /healthz and /readyz on one port, served from a daemon thread."""

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        broker_url: str,
        node: str,
        queues: list[str],
        host: str = "0.0.0.0",
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline: float = REQUEST_DEADLINE_SECONDS,
    ) -> None:
        self.registry = registry
        self.broker_url = broker_url
        self.node = node
        self.queues = queues
        self.httpd = BoundedHTTPServer(
            (host, port),
            _handler(self),
            max_connections=max_connections,
            request_deadline=request_deadline,
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def close_in_child(self) -> None:
        """A forked pool child must not hold the listening socket (the port outlives us)."""
        self.httpd.socket.close()

    def status(self, max_age: float) -> WorkerStatus:
        return WorkerStatus(
            node=self.node,
            pid=os.getpid(),
            queues=self.queues,
            state=HEARTBEAT.state,
            heartbeat_age=round(HEARTBEAT.age(), 3),
            active=len(worker_state.active_requests),
            reserved=len(worker_state.reserved_requests),
            alive=HEARTBEAT.alive(max_age),
        )


def _seconds(query: dict[str, list[str]], name: str, default: float, maximum: float) -> float:
    """A `?name=S` query value, refused (ValueError -> 400) unless finite, > 0, <= maximum."""
    raw = query.get(name, [str(default)])[0]
    value = float(raw)
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise ValueError(f"{name}={raw!r} must be a number of seconds above 0, at most {maximum:g}")
    return value


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        httpd: BoundedHTTPServer

        def setup(self) -> None:
            super().setup()
            self.httpd = self.server  # type: ignore[assignment]
            deadline = self.httpd.request_deadline
            # The request (line and headers) must arrive within the deadline as a whole.
            self.rfile.close()
            self.rfile = io.BufferedReader(
                _DeadlineReader(self.connection, time.monotonic() + deadline)
            )

        def parse_request(self) -> bool:
            ok = super().parse_request()
            self.httpd.request_received(self.request)
            # The response (a /readyz probe included) gets a deadline of its own.
            self.connection.settimeout(self.httpd.request_deadline)
            return ok

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif url.path == "/healthz":
                    max_age = _seconds(query, "max_age", LIVENESS_MAX_AGE_SECONDS, 86400.0)
                    status = server.status(max_age)
                    self._json(200 if status.alive else 503, asdict(status))
                elif url.path == "/readyz":
                    timeout = _seconds(
                        query, "timeout", READINESS_TIMEOUT_SECONDS, MAX_READINESS_TIMEOUT_SECONDS
                    )
                    result = probe_broker(server.broker_url, timeout)
                    self._json(200 if result.ok else 503, asdict(result))
                else:
                    self._json(404, {"error": f"no such path {url.path!r}"})
            except ValueError as exc:
                self._json(400, {"error": str(exc)})

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health: " + format, *args)

    return Handler
