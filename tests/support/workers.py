"""Real `alphaswarm-orch worker` processes for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from celery import Celery

READY_TIMEOUT_SECONDS = 60


@dataclass
class WorkerProcess:
    name: str
    queues: str
    process: subprocess.Popen
    log_path: str

    @property
    def node(self) -> str:
        return self.name if "@" in self.name else f"{self.name}@{os.uname().nodename}"

    @classmethod
    def start(
        cls,
        queues: str,
        name: str,
        env: dict[str, str],
        *extra: str,
        cwd: str | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> WorkerProcess:
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - outlives this call
            prefix=f"worker-{name}-", suffix=".log", delete=False
        )
        argv = [sys.executable, "-m", "alphaswarm_orch.cli", "worker", "--queues", queues]
        argv += ["--name", name, *extra]
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        worker = cls(name=name, queues=queues, process=process, log_path=log.name)
        try:
            worker.wait_ready(env["ALPHASWARM_BROKER_URL"], ready_timeout)
        except BaseException:  # not left behind to take the next stack's tasks
            worker.stop(timeout=10)
            raise
        return worker

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def wait_ready(self, broker: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Poll the worker with Celery's ping until it answers (bounded by a deadline)."""
        app = Celery(broker=broker)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker {self.name} exited early:\n{self.log()}")
                replies = app.control.ping(destination=[self.node], timeout=0.5)
                if replies:
                    return
            raise RuntimeError(f"worker {self.name} not ready in {timeout}s")
        finally:
            app.close()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
