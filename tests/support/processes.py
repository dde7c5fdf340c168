"""Long-running service processes (webserver, daemon, HTTP servers) for integration tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def background(argv: list[str], env: dict[str, str], cwd: str | None = None) -> Iterator:
    """Run `argv` for the duration of the block; its output goes to a temp log (on `.log`)."""
    log = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    process.log = log.name  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def read_log(process: subprocess.Popen) -> str:
    with open(process.log, errors="replace") as fh:  # type: ignore[attr-defined]
        return fh.read()
