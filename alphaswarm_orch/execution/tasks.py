"""The Celery task a worker registers to run one step of a run (dagster-celery's protocol).

Same task name and arguments as dagster-celery's `execute_plan` (packed ExecuteStepArgs plus
the ReconstructableJob dict), so a step message reads the same in Flower and in the broker.
What differs, and why:

- Reuse per pool process: one DagsterInstance per instance ref, one loaded job per job
  origin and the whole-job plan of the last few runs (plans.py), instead of rebuilding them
  for every step. Code is therefore loaded once per worker process: **restart workers on
  every code deploy**. A worker whose loaded job no longer matches the run's job snapshot
  refuses the step with an error that says so.
- Warm pool processes: right after a pool process is forked, a background thread opens the
  instance of $DAGSTER_HOME and loads the code location (`warm_process`), so the first step
  a process runs (e.g. a session handed over to this worker) does not pay for the storage
  imports, the instance set-up and the definitions (~2 s on a busy 2-core node). A step that
  arrives meanwhile waits for the warm-up instead of doing the same work a second time.
- Late acknowledgement: a message is acked when the step is done. If the pool process dies,
  Celery sends the step again (up to MAX_WORKER_LOSSES times), then stores WorkerLostError.
- A heartbeat while the step runs (see liveness.py) so that the run loop notices a worker that
  died as a whole, and a watcher that interrupts the step when its run is terminated.
- The kill switch is checked before the step starts; refusals and other failures before the
  step runs come back as an `error` the run loop records as the step's failure.

The result is `{"events": [serialized DagsterEvent, ...], "error": serialized error | None}`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

import dagster as dg
from celery import Celery, Task
from dagster import DagsterExecutionInterruptedError, serialize_value

from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.compat.celery import DELEGATE_MARKER, TASK_EXECUTE_PLAN_NAME
from alphaswarm_orch.compat.dagster import (
    EngineEventData,
    ExecuteStepArgs,
    InstanceRef,
    ReconstructableJob,
    ReconstructableRepository,
    cache_run_columns_check,
    execute_plan_iterator,
    memoize_step_run_config,
    serializable_error_info_from_exc_info,
    unpack_value,
)
from alphaswarm_orch.execution.liveness import StepWatch, admission, worker_identity
from alphaswarm_orch.execution.plans import PlanCache
from alphaswarm_orch.guard import run_ended_check
from alphaswarm_orch.instance import before_step_start
from alphaswarm_orch.queues import DEFAULT_QUEUE, QUEUE_TAG
from alphaswarm_orch.settings import Settings

log = logging.getLogger(__name__)

MAX_WORKER_LOSSES = 2
"""Times Celery sends a step again after its pool process died before it gives up."""


class StepRefused(RuntimeError):
    """A step this worker must not run; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedJob:
    key: str
    """The job's origin (its cache key here and in `_plans`)."""
    recon_job: ReconstructableJob
    snapshot_id: str


_instances: dict[str, dg.DagsterInstance] = {}
_jobs: dict[str, LoadedJob] = {}
_plans = PlanCache()
# Each step's execute_plan_iterator resolves the run config over the whole job: once instead.
memoize_step_run_config()
"""Whole-job plans of the last few runs: a step's plan no longer costs O(steps in the job)."""
_kill_switch: list[KillSwitch] = []
"""The worker's kill switch (`register_tasks`), if it has a Redis to read it from."""
_loading = threading.RLock()
"""Held while the caches are filled: a step waits for the warm-up rather than racing it."""


def _instance(ref: Any) -> dg.DagsterInstance:
    """One instance per instance ref and pool process (opening one costs a storage setup)."""
    key = serialize_value(ref)
    if key in _instances:
        return _instances[key]
    with _loading:
        return _open_instance(key, ref)


def _open_instance(key: str, ref: Any) -> dg.DagsterInstance:
    if key not in _instances:
        # On Postgres the instance's storage keeps this process's connection between steps
        # (instance_pool.py): a step makes about ten queries.
        instance = dg.DagsterInstance.from_ref(ref)
        cache_run_columns_check(instance)  # else a schema reflection on every run read
        _instances[key] = instance
    return _instances[key]


def _job(executable_dict: dict[str, Any]) -> LoadedJob:
    """The job loaded once per origin and pool process; see the module doc on deploys."""
    key = json.dumps(executable_dict, sort_keys=True)
    if key in _jobs:
        return _jobs[key]
    with _loading:
        if key not in _jobs:
            recon_job = ReconstructableJob.from_dict(executable_dict)
            snapshot_id = recon_job.get_definition().get_job_snapshot_id()
            _jobs[key] = LoadedJob(key, recon_job, snapshot_id)
        return _jobs[key]


def import_instance_classes(home: str | None = None) -> None:
    """Import the modules of the instance's configured classes (storage, launcher, ...).

    Done by the worker's main process before it forks its pool, so that every pool process
    shares them instead of importing them with its first step."""
    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        return
    ref = InstanceRef.from_dir(home)
    for value in ref:
        module = getattr(value, "module_name", None)
        if isinstance(module, str):
            importlib.import_module(module)


def warm_process(code_location_module: str) -> None:
    """Open this pool process's instance ($DAGSTER_HOME) and load the code location.

    Runs in a background thread of a freshly forked pool process (worker_process_init), so
    the process reports itself alive at once; a step arriving meanwhile waits on the lock.
    A failure is only logged: the step then opens what it needs and reports the error."""
    with _loading:
        try:
            home = os.environ.get("DAGSTER_HOME")
            if home:
                _instance(InstanceRef.from_dir(home)).get_run_by_id("warm-up")
            ReconstructableRepository.for_module(
                code_location_module, "defs", working_directory=os.getcwd()
            ).get_definition()
        except Exception as exc:
            log.warning("pool process %s not warmed up: %s", os.getpid(), exc)


def start_warm_up(code_location_module: str) -> threading.Thread:
    thread = threading.Thread(
        target=warm_process, args=(code_location_module,), name="alphaswarm-warm-up", daemon=True
    )
    thread.start()
    return thread


def _check_code_version(job: LoadedJob, run: dg.DagsterRun, where: str) -> None:
    if run.job_snapshot_id is not None and run.job_snapshot_id != job.snapshot_id:
        raise StepRefused(
            f"{where} has a different version of job {run.job_name!r} loaded (snapshot "
            f"{job.snapshot_id[:12]}) than run {run.run_id} was created with "
            f"({run.job_snapshot_id[:12]}). Workers load code once: restart them on every "
            "code deploy, then re-execute the run."
        )


def _error(exc_info: Any) -> dict[str, Any]:
    return {"events": [], "error": serialize_value(serializable_error_info_from_exc_info(exc_info))}


def execute_step(
    task: Task, execute_step_args_packed: dict[str, Any], executable_dict: dict[str, Any]
) -> dict[str, Any]:
    """Run one step and return its events (the run loop handles them in order)."""
    args = unpack_value(execute_step_args_packed, as_type=ExecuteStepArgs)
    (step_key,) = args.step_keys_to_execute or ()  # the run loop sends one step per task
    client = task.backend.client
    task_id = task.request.id
    refusal = admission(client, task_id, args.run_id)
    if refusal is not None:
        return {"events": [], "error": None, "skipped": refusal}
    identity = worker_identity(task.request.hostname)
    with StepWatch(client, task_id, args.run_id, identity) as watch:
        try:
            instance = _instance(args.instance_ref)
            job = _job(executable_dict)
            run = instance.get_run_by_id(args.run_id)
            if run is None:
                raise StepRefused(f"run {args.run_id} is not in the Dagster instance")
            _check_code_version(job, run, f"worker {identity}")
            watch.watch_run(run_ended_check(instance, args.run_id))
            plan = _plans.step_plan(
                job.key, job.recon_job.get_definition(), run.run_config, step_key, args.known_state
            )
            queue = plan.get_step_by_key(step_key).tags.get(QUEUE_TAG, DEFAULT_QUEUE)
            for kill_switch in _kill_switch:
                kill_switch.check(f"step {step_key}", queue=queue)
        except Exception:
            return _error(sys.exc_info())

        events: list[dg.DagsterEvent] = []
        sigterm = _sigterm_handler()
        try:
            # Its first events commit without waiting for the disk each; STEP_START's own
            # commit makes them durable (see instance.before_step_start).
            with before_step_start():
                events.append(
                    instance.report_engine_event(
                        f"Executing step {step_key} in celery worker",
                        run,
                        EngineEventData(
                            {"step_keys": step_key, "Celery worker": task.request.hostname},
                            marker_end=DELEGATE_MARKER,
                        ),
                        step_key=step_key,
                    )
                )
                for event in execute_plan_iterator(
                    execution_plan=plan,
                    job=job.recon_job,
                    dagster_run=run,
                    instance=instance,
                    retry_mode=args.retry_mode,
                    run_config=run.run_config,
                ):
                    events.append(event)
        except DagsterExecutionInterruptedError:
            if not watch.cancelled:
                raise  # a real SIGINT/SIGTERM: let Celery see it
        finally:
            _restore_sigterm(sigterm)
    return {"events": [serialize_value(event) for event in events], "error": None}


def _sigterm_handler() -> Any:
    """Dagster's interrupt capture rebinds SIGTERM; keep the pool process's own handler."""
    if threading.current_thread() is threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return None


def _restore_sigterm(handler: Any) -> None:
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register the step task on the worker's Celery `app`; steps check the kill switch of
    the worker's `settings` (read once, at worker start; the pool processes inherit it)."""
    _kill_switch[:] = [KillSwitch.from_settings(settings)] if settings.redis_url else []
    app.task(
        bind=True,
        name=TASK_EXECUTE_PLAN_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        retry_on_worker_lost=True,
        max_retries=MAX_WORKER_LOSSES,
        default_retry_delay=0,
    )(execute_step)
