"""The metrics/health port bounds what clients can hold: idle and trickling connections are
closed at their deadline, at most MAX_CONNECTIONS are served at once, and a scrape still gets
through while hundreds of half-open connections are held. Real HTTP on 127.0.0.1, and a real
worker process for the thread count of its main process."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from alphaswarm_orch.control.health import MAX_CONNECTIONS, HealthServer
from tests.support.ops import http_get, scrape, stop_all, worker_env
from tests.support.runs import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

HALF_OPEN = 400
"""As many half-open connections as the review held open against a worker."""


def half_open(port: int, count: int) -> list[socket.socket]:
    """Connections that send the start of a request and never finish it."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /metr")
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed `sock` (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


@pytest.fixture
def server(redis_urls: tuple[str, str]) -> Iterator[HealthServer]:
    health = HealthServer(
        0,
        CollectorRegistry(),
        broker_url=redis_urls[0],
        node="limits@test",
        queues=["default"],
        host="127.0.0.1",
        max_connections=8,
        request_deadline=1.0,
    )
    health.start()
    yield health
    health.httpd.shutdown()
    health.httpd.server_close()


def test_idle_connections_are_capped_and_closed_while_scrapes_get_through(
    server: HealthServer,
) -> None:
    baseline = threading.active_count()
    sockets = half_open(server.port, 100)
    try:
        # Each new connection past the cap closes the oldest idle one: 8 threads, not 100.
        wait_for(
            lambda: threading.active_count() <= baseline + 8 and server.httpd.connections() <= 8,
            10,
            "at most 8 connection threads",
        )
        assert http_get(server.port, "/metrics")[0] == 200
        assert json.loads(http_get(server.port, "/healthz")[1])["node"] == "limits@test"
        # Every idle connection is closed: evicted at once, or at its 1 s deadline.
        assert all(closed_by_server(sock, timeout=10) for sock in sockets)
        wait_for(lambda: server.httpd.connections() == 0, 10, "every connection to end")
    finally:
        close_all(sockets)


def test_a_trickling_client_is_closed_at_its_deadline(server: HealthServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        started = time.monotonic()
        closed = False
        # One header byte every 0.2 s keeps each read short; the deadline is for the request.
        while not closed and time.monotonic() - started < 20:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed = closed_by_server(sock, timeout=0.2)
        assert closed, "a client trickling its request kept its connection"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/readyz?timeout=inf", "timeout='inf' must be a number of seconds above 0, at most 8"),
        ("/readyz?timeout=3600", "timeout='3600' must be a number of seconds"),
        ("/healthz?max_age=nan", "max_age='nan' must be a number of seconds"),
        ("/healthz?max_age=-1", "max_age='-1' must be a number of seconds"),
    ],
)
def test_probe_durations_are_bounded(server: HealthServer, path: str, problem: str) -> None:
    status, body = http_get(server.port, path)
    assert status == 400
    assert problem in json.loads(body)["error"]


@pytest.fixture
def worker(tmp_path: Path, redis_urls: tuple[str, str]) -> Iterator[tuple[WorkerProcess, int]]:
    """A real worker and its metrics port."""
    broker, backend = redis_urls
    env = worker_env(broker, backend, tmp_path / "storage")
    started = [WorkerProcess.start("default", "limits-a", env, "--concurrency", "1")]
    yield started[0], int(env["ALPHASWARM_METRICS_PORT"])
    stop_all(started)
    for url in redis_urls:
        redis.Redis.from_url(url).flushdb()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_worker_holds_a_bounded_number_of_threads_under_half_open_connections(
    worker: tuple[WorkerProcess, int],
) -> None:
    process, port = worker
    pid = process.process.pid
    assert scrape(port)
    baseline = threads_of(pid)
    sockets = half_open(port, HALF_OPEN)
    try:
        bound = baseline + MAX_CONNECTIONS + 2
        wait_for(lambda: threads_of(pid) <= bound, 20, f"at most {bound} threads in the worker")
        assert scrape(port)  # a scrape is served while the connections are held
        # Those past the cap were closed at once; the rest go at their 10 s deadline.
        assert all(closed_by_server(sock, timeout=30) for sock in sockets)
        assert scrape(port)
    finally:
        close_all(sockets)
