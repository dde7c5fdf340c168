"""Run one terraform command: argument list (never a shell), redacted output, timeout, cancel.

Stopping follows terraform's own contract: SIGINT first (it stops provisioners, writes state
and releases the lock), SIGKILL to the whole process group only if it has not exited after the
grace period. The command runs in its own session so a signal aimed at the worker does not
reach it unforwarded, and with umask PRIVATE_UMASK: the state, plans and data dirs terraform
writes hold secrets in the clear and are readable by their owner only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from alphaswarm_orch.terraform.errors import TerraformCancelled, TerraformTimeout
from alphaswarm_orch.terraform.redact import Redactor

TAIL_LINES = 20
PRIVATE_UMASK = 0o077


@dataclass(frozen=True)
class Completed:
    returncode: int
    lines: list[str] = field(default_factory=list)
    """Redacted output lines (stderr, and stdout unless captured)."""
    stdout: str = ""
    """Raw stdout when captured (machine-readable output such as `show -json`); never logged."""

    def tail(self, count: int = TAIL_LINES) -> str:
        return "\n".join(self.lines[-count:])


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    redactor: Redactor,
    timeout: float,
    grace: float,
    poll: float,
    on_line: Callable[[str], None] = lambda line: None,
    cancel: Callable[[], bool] | None = None,
    capture_stdout: bool = False,
) -> Completed:
    """Run `argv` to completion; raise TerraformCancelled/TerraformTimeout after stopping it."""
    lines: queue.Queue[str | None] = queue.Queue()
    stdout_chunks: list[bytes] = []
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        umask=PRIVATE_UMASK,
    )
    assert process.stdout is not None and process.stderr is not None
    pumps = [threading.Thread(target=_pump_lines, args=(process.stderr, lines), daemon=True)]
    if capture_stdout:
        pumps.append(
            threading.Thread(target=_pump_raw, args=(process.stdout, stdout_chunks), daemon=True)
        )
    else:
        pumps.append(
            threading.Thread(target=_pump_lines, args=(process.stdout, lines), daemon=True)
        )
    for pump in pumps:
        pump.start()

    output: list[str] = []

    def emit(line: str) -> None:
        safe = redactor.text(line)
        output.append(safe)
        on_line(safe)

    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + poll
    stopped: str | None = None
    try:
        while process.poll() is None:
            try:
                item = lines.get(timeout=poll)
            except queue.Empty:
                item = None
            if item is not None:
                emit(item)
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + poll
            if cancel is not None and cancel():
                stopped = "cancelled"
            elif now > deadline:
                stopped = "timed out"
            if stopped:
                interrupt(process, grace, emit, f"run {stopped}")
                break
    except BaseException:
        # The step itself is being interrupted (KeyboardInterrupt, Dagster's interrupt):
        # forward it before unwinding so terraform releases the lock and writes state.
        interrupt(process, grace, emit, "step interrupted")
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=grace)
        while True:
            try:
                item = lines.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                emit(item)

    result = Completed(
        returncode=process.returncode,
        lines=output,
        stdout=b"".join(stdout_chunks).decode("utf-8", errors="replace"),
    )
    command = " ".join([Path(argv[0]).name, *argv[1:2]])
    if stopped == "cancelled":
        raise TerraformCancelled(
            f"run terminated: `{command}` was interrupted and exited with {process.returncode}. "
            f"Last output:\n{result.tail()}"
        )
    if stopped == "timed out":
        raise TerraformTimeout(
            f"`{command}` ran longer than {timeout:g}s and was interrupted (exit "
            f"{process.returncode}); raise the terraform timeout if this is expected. "
            f"Last output:\n{result.tail()}"
        )
    return result


def interrupt(
    process: subprocess.Popen[bytes], grace: float, emit: Callable[[str], None], why: str
) -> None:
    """SIGINT, wait up to `grace`, then SIGKILL the process group; leave nothing running."""
    if process.poll() is None:
        emit(f"[alphaswarm] {why}: sending SIGINT to terraform (pid {process.pid})")
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            emit(f"[alphaswarm] terraform did not exit {grace:g}s after SIGINT: sending SIGKILL")
            _kill_group(process.pid)
            process.wait()
    _kill_group(process.pid)  # stragglers (provisioner children) of a process that has exited


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pump_lines(stream: IO[bytes], sink: queue.Queue[str | None]) -> None:
    with stream:
        for raw in iter(stream.readline, b""):
            sink.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    sink.put(None)


def _pump_raw(stream: IO[bytes], sink: list[bytes]) -> None:
    with stream:
        for chunk in iter(lambda: stream.read(65536), b""):
            sink.append(chunk)
