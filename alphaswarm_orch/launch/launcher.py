"""A run launcher that starts each run from a warm forkserver.

Dagster's DefaultRunLauncher asks the code server to start a run, and the code server uses a
`spawn` context: every run begins with a fresh Python importing dagster and the code location
(~3 s on a 2-core node), on the path from request to first step. This launcher keeps one
`multiprocessing` forkserver per launching process (daemon, or webserver if it launches) that
has already imported `preload_modules`; a run worker is a fork of it (~0.1 s) running what
`dagster api execute_run` runs (`worker.py`).

Code reload rule: the forkserver keeps the modules it preloaded for its lifetime. With the
code location preloaded (dagster.yaml preloads `alphaswarm_orch.launch.preload`: the code
location and what a run worker imports after the fork), a run executes the code the launching
process's forkserver imported, not what the code server reloaded: restart the daemon (and the
webserver, if it launches runs) on every code deploy, as the compose restart and k8s rollout
of the one image do. Each run still builds its Definitions anew with the environment at
launch, which the worker receives from the launcher.

Runs execute on the launching host: in the deployed stack the daemon dequeues every run, so
runs live in the daemon's pod, which needs what the code server needed for them (storage,
secrets, resources).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any, Self

import redis
from dagster import DagsterInvariantViolationError, DagsterRun, Field, serialize_value

from alphaswarm_orch.compat.dagster import (
    CheckRunHealthResult,
    ConfigurableClass,
    ConfigurableClassData,
    DagsterLaunchFailedError,
    LaunchRunContext,
    ResumeRunContext,
    RunLauncher,
    WorkerStatus,
    run_columns_check,
)
from alphaswarm_orch.execution import request_cancel
from alphaswarm_orch.launch.worker import RELEASE, start_run_worker
from alphaswarm_orch.settings import Settings, redacted
from alphaswarm_orch.tags import RUN_WORKER_HOST_TAG, RUN_WORKER_PID_TAG

__all__ = ["RUN_WORKER_HOST_TAG", "RUN_WORKER_PID_TAG", "ForkserverRunLauncher"]


DEFAULT_PRELOAD_MODULES = ("dagster",)
FORKSERVER_START_MODULE = "alphaswarm_orch.launch.forkserver_start"
FORKSERVER_READY_MODULE = "alphaswarm_orch.launch.forkserver_ready"
RESUMABLE_EXECUTOR = "alphaswarm_celery"
"""Runs on this executor are resumed (it re-attaches to its steps); others end FAILURE."""
DEFAULT_START_TIMEOUT_SECONDS = 120.0


def forkserver_context(preload_modules: Sequence[str]) -> ForkServerContext:
    """The process's forkserver context, with its preload list set.

    The forkserver is one per process: the list takes effect when it starts (first launch or
    `warm`), so every launcher of a process must agree on it. `forkserver_start` comes first
    and `forkserver_ready` last (they act only in the forkserver: see each).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [FORKSERVER_START_MODULE, *preload_modules, FORKSERVER_READY_MODULE]
    )
    return context


def stop_forkserver() -> None:
    """Stop this process's forkserver, if it started one, and wait for it to exit.

    multiprocessing has no public call for it (the forkserver otherwise leaves when this
    process exits, then lingers; see forkserver_start.py). `ForkServer._stop` is its own, used
    by CPython's tests; tests/launch checks it is still there.
    """
    forkserver._forkserver._stop()


class ForkserverRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a fork of a warm forkserver on this host (see module docstring)."""

    def __init__(
        self,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD_MODULES,
        start_timeout_seconds: float = DEFAULT_START_TIMEOUT_SECONDS,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        unknown = [name for name in preload_modules if not _importable(name)]
        if unknown:
            raise DagsterInvariantViolationError(
                f"run_launcher preload_modules {unknown} cannot be found. The forkserver would "
                "skip them silently and every run would import them itself after the fork: "
                "fix run_launcher.config.preload_modules in dagster.yaml."
            )
        self._preload_modules = tuple(preload_modules)
        self._start_timeout_seconds = start_timeout_seconds
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "preload_modules": Field(
                [str],
                is_required=False,
                default_value=list(DEFAULT_PRELOAD_MODULES),
                description="Modules the forkserver imports once; every run starts with them.",
            ),
            "start_timeout_seconds": Field(
                float,
                is_required=False,
                default_value=DEFAULT_START_TIMEOUT_SECONDS,
                description="How long a launch waits for the run worker (includes a cold "
                "forkserver's imports).",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(
            preload_modules=config_value["preload_modules"],
            start_timeout_seconds=config_value["start_timeout_seconds"],
            inst_data=inst_data,
        )

    def warm(self) -> None:
        """Start the forkserver now, so the first launch does not wait for its imports."""
        forkserver_context(self._preload_modules)
        forkserver.ensure_running()

    def launch_run(self, context: LaunchRunContext) -> None:
        self._start(context.dagster_run, resume=False)

    @property
    def supports_resume_run(self) -> bool:
        return True

    def resume_run(self, context: ResumeRunContext) -> None:
        """Run monitoring's answer to a STARTED run whose worker is gone (a daemon rollout
        took it): a new run worker that resumes the run. Its Celery executor re-attaches to
        the steps still in flight on the workers (execution/loop.py), so they never stop."""
        run = context.dagster_run
        executor = self._executor_name(run)
        if executor != RESUMABLE_EXECUTOR:
            # Another executor would run the run's steps again from the start: end the run as
            # run monitoring did before resumption (the step may have had side effects).
            pid, host = run.tags.get(RUN_WORKER_PID_TAG), run.tags.get(RUN_WORKER_HOST_TAG)
            self._instance.report_run_failed(
                run,
                f"run worker {pid} on {host} exited without finishing the run, and its "
                f"executor {executor!r} cannot re-attach to running steps: not resumed "
                f"(only {RESUMABLE_EXECUTOR} runs are).",
            )
            return
        self._start(run, resume=True)

    def _executor_name(self, run: DagsterRun) -> str | None:
        snapshot_id = run.execution_plan_snapshot_id
        if snapshot_id is None:
            return None
        return self._instance.get_execution_plan_snapshot(snapshot_id).executor_name

    def _start(self, run: DagsterRun, resume: bool) -> None:
        mp = forkserver_context(self._preload_modules)
        parent, child = mp.Pipe()
        starter = mp.Process(
            target=start_run_worker,
            args=(
                run.run_id,
                serialize_value(self._instance.get_ref()),
                dict(os.environ),
                child,
                resume,
                # this instance's answer (cached here) spares each run worker a schema reflection
                run_columns_check(self._instance),
            ),
            name=f"dagster-run-{run.run_id}",
        )
        try:
            try:
                starter.start()
            except Exception as exc:
                raise DagsterLaunchFailedError(
                    f"Could not fork a run worker for run {run.run_id}: {exc!r}. The forkserver "
                    f"(preloading {list(self._preload_modules)}) may have failed to import; its "
                    "traceback is in this process's log. Fix the code and restart this process."
                ) from exc
            finally:
                child.close()
            if not parent.poll(self._start_timeout_seconds):
                raise DagsterLaunchFailedError(
                    f"The run worker for run {run.run_id} did not start within "
                    f"{self._start_timeout_seconds}s (start_timeout_seconds of the run launcher)."
                )
            pid = parent.recv()
            self._instance.add_run_tags(
                run.run_id,
                {RUN_WORKER_PID_TAG: str(pid), RUN_WORKER_HOST_TAG: socket.gethostname()},
            )
            parent.send(RELEASE)
        except EOFError as exc:
            raise DagsterLaunchFailedError(
                f"The run worker for run {run.run_id} exited before it started; see this "
                "process's log."
            ) from exc
        finally:
            parent.close()
            starter.join()
            starter.close()

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """Run monitoring's question: is this STARTED run's worker process still there?

        Without it a run whose worker died (OOM kill, the daemon's container replaced on a
        rollout) would stay STARTED for ever. Only the daemon launches runs here (the run
        queue), and monitoring runs in the daemon, so a worker recorded on another host
        belonged to a previous daemon pod and went with it. A run without the tags was not
        launched by this launcher (e.g. `dagster job execute`) and is not judged.
        """
        pid, host = run.tags.get(RUN_WORKER_PID_TAG), run.tags.get(RUN_WORKER_HOST_TAG)
        if pid is None or host is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched by this launcher")
        if host != socket.gethostname():
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN,
                f"run worker {pid} ran on {host}, not on this daemon's host "
                f"{socket.gethostname()}: it ended with the daemon that launched it",
            )
        if _run_worker_alive(int(pid)):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=pid)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker {pid} on {host} exited without finishing the run (stopped with a "
            "previous daemon, or killed, e.g. out of memory)",
            run_worker_id=pid,
        )

    def terminate(self, run_id: str) -> bool:
        """Mark the run CANCELING, ask its running steps to stop, and interrupt its worker if
        it runs on this host.

        A worker on another host (the daemon's pod, when the webserver terminates) is stopped
        by the executor, which ends the run once it sees CANCELING. The steps are asked
        directly too, so that they stop even when the run worker is gone (OOM-killed, node
        lost) and nothing is left to relay the request.
        """
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        self._stop_steps(run)
        pid = run.tags.get(RUN_WORKER_PID_TAG)
        host = run.tags.get(RUN_WORKER_HOST_TAG)
        if pid is None:
            # Not yet released: the worker sees CANCELING before it starts executing.
            return True
        if host != socket.gethostname():
            self._instance.report_engine_event(
                f"Run worker {pid} runs on {host}, not here: its executor stops the run "
                "when it sees CANCELING.",
                run,
                cls=self.__class__,
            )
            return True
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            self._instance.report_run_canceled(
                run, f"Run worker {pid} had already exited without finishing the run."
            )
        return True

    def _stop_steps(self, run: DagsterRun) -> None:
        """Set the run's cancel key, which each running step's watcher checks every second."""
        backend = Settings.from_env().result_backend
        if not backend or not backend.startswith(("redis://", "rediss://", "unix://")):
            return  # no Celery steps (embedded executor)
        client = redis.Redis.from_url(backend, socket_timeout=5, socket_connect_timeout=5)
        try:
            request_cancel(client, run.run_id)
        except redis.RedisError as exc:
            self._instance.report_engine_event(
                f"Could not ask the run's running steps to stop through {redacted(backend)}: "
                f"{exc}. Its run worker stops them when it sees CANCELING.",
                run,
                cls=self.__class__,
            )
        finally:
            client.close()


def _run_worker_alive(pid: int) -> bool:
    """A live (not zombie) process that leads its own session, as run workers do: a pid
    reused by an unrelated process is not taken for the run worker."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X") and os.getsid(pid) == pid
    except (FileNotFoundError, ProcessLookupError):
        return False


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
