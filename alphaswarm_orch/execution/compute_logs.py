"""Step stdout/stderr capture that costs a thread, not four subprocesses.

Dagster's LocalComputeLogManager mirrors each captured stream through a `tail -F` process
plus a Python watcher process (two of each per step). The in-process executor pays that once
per run; a Celery worker pays it for every step, which on a 2-core machine was about a third
of a trivial step's cost. This manager keeps the same files and artifacts (so the UI reads
them the same way) and mirrors with a thread:

- a stream with a file descriptor is redirected at descriptor level into a pipe that a thread
  copies to the log file and to the original descriptor (subprocess output is captured too);
- a stream without one (a Celery worker's stdout and stderr are loggers) is teed at Python
  level. Stock capture records nothing there.

Configured in dagster.yaml (`compute_logs`); workers get it through the instance ref.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import dagster as dg

from alphaswarm_orch.compat.dagster import (
    IO_TYPE_EXTENSION,
    CapturedLogContext,
    ComputeIOType,
    ConfigurableClassData,
    LocalComputeLogManager,
    ensure_file,
    touch_file,
)
from alphaswarm_orch.settings import Settings

DRAIN_TIMEOUT_SECONDS = 5.0
"""How long the end of a capture waits for the copying thread to reach the pipe's end (a
process the step started and left running can hold the pipe open)."""


class ThreadedComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose capture mirrors with a thread (see module doc)."""

    def __init__(
        self,
        base_dir: str | None = None,
        polling_timeout: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        super().__init__(base_dir or default_base_dir(), polling_timeout, inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "base_dir": dg.Field(dg.StringSource, is_required=False),
            "polling_timeout": dg.Field(dg.Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> ThreadedComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with mirror("stdout", out), mirror("stderr", err):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))


def default_base_dir() -> str:
    """Where Dagster's default manager writes: `$DAGSTER_HOME/storage`."""
    home = os.environ.get("DAGSTER_HOME") or str(Settings.from_env().dagster_home)
    return os.path.join(home, "storage")


@contextmanager
def mirror(name: str, path: str) -> Iterator[None]:
    """Copy what is written to `sys.<name>` during the block to `path` as well."""
    ensure_file(path)
    stream = getattr(sys, name)
    fd = _fileno(stream)
    with open(path, "ab", buffering=0) as log:
        if fd is None:
            tee = _Tee(stream, log)
            setattr(sys, name, tee)
            try:
                yield
            finally:
                setattr(sys, name, stream)
        else:
            with _mirror_fd(stream, fd, log):
                yield


@contextmanager
def _mirror_fd(stream: IO[Any], fd: int, log: IO[bytes]) -> Iterator[None]:
    stream.flush()
    original = os.dup(fd)
    read_end, write_end = os.pipe()
    # The thread writes to its own copy of the original descriptor and closes it, so a
    # thread still draining after the timeout never writes to a reused descriptor number.
    pump = threading.Thread(
        target=_pump,
        args=(read_end, os.dup(log.fileno()), os.dup(original)),
        name="compute-log-mirror",
        daemon=True,
    )
    pump.start()
    os.dup2(write_end, fd)
    os.close(write_end)
    try:
        yield
    finally:
        stream.flush()
        os.dup2(original, fd)  # drops the block's write end: the thread sees end of file
        os.close(original)
        pump.join(DRAIN_TIMEOUT_SECONDS)


def _pump(read_end: int, log_fd: int, echo_fd: int) -> None:
    try:
        while chunk := os.read(read_end, 65536):
            _write_all(log_fd, chunk)
            with contextlib.suppress(OSError):  # the console went away: the file still gets it
                _write_all(echo_fd, chunk)
    finally:
        for fd in (read_end, log_fd, echo_fd):
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fileno(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None
    return fd if isinstance(fd, int) else None


class _Tee(io.TextIOBase):
    """A text stream that writes to `inner` and, encoded, to the log file."""

    def __init__(self, inner: Any, log: IO[bytes]) -> None:
        self._inner = inner
        self._log = log

    def write(self, text: str) -> int:
        self._log.write(text.encode("utf-8", "replace"))
        self._inner.write(text)
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", None) or "utf-8"
