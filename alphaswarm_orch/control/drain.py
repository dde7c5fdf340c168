"""Drain the worker in this pod (Kubernetes preStop): stop taking tasks, finish, exit.

The worker is found through its own /healthz on localhost (node name, pid, queues, active
tasks), so drain works in the pod without any state shared on disk. Consumers are cancelled
by a Celery control message addressed to that node only; if the broker is unreachable that
step is skipped, since SIGTERM (Celery's warm shutdown) also stops consuming before it waits
for running tasks. Then the sessions the worker runs are asked to hand themselves on to
another worker (they would never finish), so the wait for running tasks takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery

from alphaswarm_orch.sessions.handoff import request_handoff
from alphaswarm_orch.settings import Settings, redacted

DRAIN_TIMEOUT_SECONDS = 570.0
"""Default budget: under the pods' terminationGracePeriodSeconds (600) so SIGTERM comes first."""
_POLL_SECONDS = 0.5


class DrainError(RuntimeError):
    """The worker could not be drained; the message says what to check."""


@dataclass
class DrainReport:
    node: str
    pid: int
    cancelled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finished: bool = False
    exited: bool = False


def local_status(port: int, timeout: float = 2.0) -> dict:
    """The local worker's /healthz body (any status code), or DrainError if none answers."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except (OSError, ValueError) as exc:
        raise DrainError(
            f"no worker answers on {url} ({exc}): is the worker running in this pod, and is "
            "ALPHASWARM_METRICS_PORT the same for it and for this command?"
        ) from exc


def drain(
    settings: Settings,
    timeout: float = DRAIN_TIMEOUT_SECONDS,
    say: Callable[[str], None] = lambda _line: None,
) -> DrainReport:
    """Cancel the local worker's consumers, wait for its tasks, SIGTERM it, wait for exit."""
    deadline = time.monotonic() + timeout
    status = local_status(settings.metrics_port)
    report = DrainReport(node=status["node"], pid=int(status["pid"]))
    say(f"draining {report.node} (pid {report.pid}): {status['reserved']} task(s) held")
    _cancel_consumers(settings, report, status["queues"])
    _hand_sessions_on(settings, report)
    for line in report.notes:
        say(line)

    while time.monotonic() < deadline:
        try:
            held = local_status(settings.metrics_port)["reserved"]
        except DrainError:
            break
        if held == 0:
            report.finished = True
            break
        time.sleep(_POLL_SECONDS)
    if not report.finished:
        say("tasks still running at the deadline: they finish or are redelivered")

    os.kill(report.pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        if not _running(report.pid):
            report.exited = True
            break
        time.sleep(_POLL_SECONDS)
    say(f"worker {'exited' if report.exited else 'still exiting after SIGTERM'}")
    return report


def _cancel_consumers(settings: Settings, report: DrainReport, queues: list[str]) -> None:
    broker = settings.require_broker("worker drain")
    app = Celery(broker=broker, set_as_current=False)
    app.conf.broker_connection_timeout = 3
    app.conf.broker_connection_max_retries = 1
    try:
        for queue in queues:
            replies = app.control.cancel_consumer(
                queue, destination=[report.node], reply=True, timeout=3
            )
            if replies:
                report.cancelled.append(queue)
            else:
                report.notes.append(f"{report.node} did not confirm cancelling {queue!r}")
    except Exception as exc:
        report.notes.append(
            f"could not reach the broker {redacted(broker)} ({exc}); relying on SIGTERM"
        )
    finally:
        app.close()


def _hand_sessions_on(settings: Settings, report: DrainReport) -> None:
    """After the consumers are cancelled (so the worker cannot take its sessions back): ask
    the sessions it runs to move to another worker (sessions/handoff.py)."""
    if settings.redis_url is None:
        return
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        request_handoff(client, report.node, "worker drain")
    except redis.RedisError as exc:
        report.notes.append(
            f"could not ask the sessions on {report.node} to hand on ({exc}); they hand on at "
            "SIGTERM"
        )
    finally:
        client.close()


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (exited, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
