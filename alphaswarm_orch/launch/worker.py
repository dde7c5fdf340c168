"""The run worker: one run, executed as `dagster api execute_run` executes it (or, when run
monitoring resumes a run whose worker is gone, as `dagster api resume_run` does).

It is forked from the launcher's warm forkserver (see `launcher.py`), so dagster and the
preloaded modules are already imported. The launcher talks to it over one pipe: the worker
sends its pid, the launcher records it as run tags, then releases the worker. Tags are written
before the run starts because `add_run_tags` rewrites the whole run body and would race the
worker's own status updates (DefaultRunLauncher orders its gRPC tag the same way).
"""

from __future__ import annotations

import os
import sys
from multiprocessing import forkserver, resource_tracker
from multiprocessing.connection import Connection

import dagster as dg
from dagster import serialize_value

from alphaswarm_orch.compat.dagster import (
    EngineEventData,
    InstanceRef,
    answer_run_columns_check,
    cache_run_columns_check,
    capture_interrupts,
    run_command_body,
    serializable_error_info_from_exc_info,
)
from alphaswarm_orch.instance_pool import set_process_role
from alphaswarm_orch.launch import prebuilt
from alphaswarm_orch.launch.forkserver_start import preload_environment

RELEASE = "release"
"""What the launcher sends once the worker's pid is recorded: start executing."""


def start_run_worker(
    run_id: str,
    instance_ref: str,
    environ: dict[str, str],
    conn: Connection,
    resume: bool = False,
    columns_check: bool | None = None,
) -> None:
    """Fork the run worker and return, so the forkserver's child exits at once.

    The run worker is then nobody's child: the launching process (daemon, webserver) neither
    waits for it at exit nor holds a file descriptor per run, and the run outlives it.
    """
    if os.fork():
        conn.close()
        return
    _detach_from_forkserver(conn.fileno())
    code = 1
    try:
        code = _run_worker(run_id, instance_ref, environ, conn, resume, columns_check)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _detach_from_forkserver(keep: int) -> None:
    """Keep only stdio and the launcher's pipe, and forget the forkserver's state.

    The forkserver hands each child the write end of the pipe whose closing tells it that its
    launcher exited, and the resource tracker's: a run worker holding them kept both alive,
    orphaned (parent 1), for as long as it ran. multiprocessing's module state still names
    those descriptors (private attributes; tests/launch checks them): reset, so that
    multiprocessing used by the run (e.g. a spawn executor) starts its own tracker instead of
    writing to a reused descriptor number.
    """
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    server = forkserver._forkserver
    server._forkserver_alive_fd = server._forkserver_address = server._forkserver_pid = None
    resource_tracker._resource_tracker._fd = resource_tracker._resource_tracker._pid = None


def _run_worker(
    run_id: str,
    instance_ref: str,
    environ: dict[str, str],
    conn: Connection,
    resume: bool,
    columns_check: bool | None,
) -> int:
    set_process_role("run worker")
    # Its own session: a Ctrl-C or SIGTERM to the launcher's process group is not a terminate.
    os.setsid()
    # The forkserver kept the environment of its own start; a run sees the launcher's at launch,
    # plus what the preloaded modules set at import, as in a fresh process importing them.
    preloaded = preload_environment()
    os.environ.clear()
    os.environ.update(environ)
    for name, value in preloaded.items():
        os.environ.setdefault(name, value)
    # A terminate that arrives before the run starts is held, then raised at its first step.
    with capture_interrupts():
        conn.send(os.getpid())
        with _instance(instance_ref) as instance:
            # the run is read a few times before it starts: check the runs table's columns once
            if columns_check is None:
                cache_run_columns_check(instance)
            else:
                answer_run_columns_check(instance, columns_check)
            try:
                released = conn.recv() == RELEASE
            except EOFError:
                released = False
            conn.close()
            if not released and resume:
                return 1  # the run stays STARTED: run monitoring resumes it again
            if not released:
                _fail(
                    instance,
                    run_id,
                    "The run launcher exited before it released this run worker; "
                    "launch the run again (re-execute it).",
                )
                return 1
            return _execute(instance, run_id, resume)


@prebuilt.reusable()
def home_instance() -> dg.DagsterInstance | None:
    """The instance of DAGSTER_HOME, built once by the forkserver: creating an instance runs
    about 700 functions of Dagster's config system and SQLAlchemy (0.05-0.3 s, 10-15 MiB of
    a forked run worker's pages). Building it only checks that its tables exist, through each
    storage's own engine: nothing is left open for run workers to inherit."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None


def _instance(instance_ref: str) -> dg.DagsterInstance:
    """The launcher's instance: the forkserver's when it was built from the same ref and
    what it read is unchanged, else one built from the ref here."""
    reused = home_instance.reuse()
    if reused is not None and serialize_value(reused.get_ref()) == instance_ref:
        return reused
    return dg.DagsterInstance.from_ref(dg.deserialize_value(instance_ref, InstanceRef))


def _execute(instance: dg.DagsterInstance, run_id: str, resume: bool) -> int:
    run = instance.get_run_by_id(run_id)
    if run is None:
        print(f"run worker: run {run_id} is not in the instance", file=sys.stderr)
        return 1
    if run.status == dg.DagsterRunStatus.CANCELING:
        # Terminated between launch and start: Dagster would otherwise leave it CANCELING
        # until run monitoring's cancel timeout.
        instance.report_run_canceled(run, "Run terminated before its run worker started.")
        return 0
    _report_stale_definitions(instance, run)
    body = run_command_body(resume)
    try:
        return body(run_id, instance, lambda _event: None, set_exit_code_on_failure=True)
    except Exception:
        # Before execution proper (e.g. the run's code origin cannot be reconstructed):
        # Dagster's own load and execution errors already end the run FAILURE.
        _fail(instance, run_id, "The run worker could not start the run.", sys.exc_info())
        return 1


def _report_stale_definitions(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Have the run's log say when the run builds its Definitions itself because what the
    forkserver built them from changed (names only: a variable's value may be a secret)."""

    def report(name: str, changed: list[str]) -> None:
        more = f" and {len(changed) - 10} more" if changed[10:] else ""
        instance.report_engine_event(
            f"Building {name} for this run: the forkserver's copy is out of date "
            f"({', '.join(changed[:10])}{more} changed since it was built; a daemon restart "
            "refreshes it).",
            run,
        )

    prebuilt.when_stale(report)


def _fail(instance: dg.DagsterInstance, run_id: str, message: str, exc_info=None) -> None:
    """End the run FAILURE with `message` (and the error), unless it already finished."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return
    data = (
        EngineEventData.engine_error(serializable_error_info_from_exc_info(exc_info))
        if exc_info
        else None
    )
    instance.report_engine_event(message, run, data)
    instance.report_run_failed(run, message)
