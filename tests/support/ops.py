"""Worker-operations test helpers: a private redis-server, /metrics scraping, process kills."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from alphaswarm_orch.broker.celery_config import celery_config
from alphaswarm_orch.settings import Settings
from tests.support.processes import free_port
from tests.support.runs import wait_for
from tests.support.workers import WorkerProcess


@dataclass
class RedisServer:
    """A redis-server of the test's own on a free port, with an append-only file so that a
    restart keeps queued messages (as a production Redis with persistence does)."""

    directory: Path
    port: int
    process: subprocess.Popen | None = None

    @classmethod
    def start_in(cls, directory: Path) -> RedisServer:
        server = cls(directory=directory, port=free_port())
        server.start()
        return server

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.directory), "--save", "", "--appendonly", "yes"]
        argv += ["--appendfsync", "always", "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_for(lambda: self._pings(client), 20, f"redis-server on port {self.port}")
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut down cleanly (the append-only file is flushed) and wait for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.process = None


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """The worker's /metrics as {(sample name, labels): value}."""
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset], float], metric: str, **labels: str) -> float:
    """Sum of the samples named `metric` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and wanted <= ls)


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            child = int(entry.name)
            found += [child, *descendants(child)]
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a worker and its pool children at once, as a node failure would."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


REPO = Path(__file__).resolve().parents[2]
STUB_TASKS = "tests.control.tasks_stub"


def worker_env(broker: str, backend: str, storage: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker running the stub tasks, with its own metrics port."""
    env = {
        **os.environ,
        "ALPHASWARM_BROKER_URL": broker,
        "ALPHASWARM_RESULT_BACKEND": backend,
        "ALPHASWARM_STORAGE_DIR": str(storage),
        "ALPHASWARM_METRICS_PORT": str(free_port()),
        "ALPHASWARM_WORKER_INCLUDE": STUB_TASKS,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        # Inside the test's directory: a SIGKILLed worker cannot clean up a temp dir of its own.
        "PROMETHEUS_MULTIPROC_DIR": str(storage / "prometheus"),
        **extra,
    }
    return env


def sender(env: dict[str, str]) -> Celery:
    """A Celery client app configured like the executor (same delivery settings)."""
    settings = Settings.from_env(env)
    app = Celery(broker=settings.broker_url, backend=settings.result_backend, set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


def stop_all(started: list[WorkerProcess]) -> None:
    """End of test: any worker still running is killed with its pool (a test that wanted a
    graceful exit has had it by now)."""
    for worker in started:
        if worker.process.poll() is None:
            kill_tree(worker.process.pid)
        worker.stop()
