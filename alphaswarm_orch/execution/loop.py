"""The run loop: submit ready steps to Celery, act on each result as soon as it is stored.

Completion is event-driven: the Redis result backend publishes every stored result on the
task's key, and the loop waits on a subscription to the keys of its in-flight steps (one
batched MGET per second backs it up, together with the heartbeat check). It also:

- submits in Dagster priority order with the Redis priority inverted (broker/priority.py);
- on termination (launcher interrupt, or the run marked CANCELING by anyone) stops submitting,
  asks running steps to stop (broker/keys.cancel_key), waits for them up to STOP_TIMEOUT_SECONDS,
  and lets Dagster end the run CANCELED;
- records a failure before or around a step (kill switch, stale worker code, worker lost)
  as that step's STEP_FAILURE, or STEP_UP_FOR_RETRY when the op's retry policy allows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import redis
from billiard.exceptions import WorkerLostError
from celery import Celery, states
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterExecutionInterruptedError,
    deserialize_value,
)

from alphaswarm_orch.broker import keys, running
from alphaswarm_orch.broker.priority import dagster_priority, redis_priority
from alphaswarm_orch.broker.redis_queues import queue_length
from alphaswarm_orch.compat.celery import DELEGATE_MARKER, TASK_EXECUTE_PLAN_NAME
from alphaswarm_orch.compat.dagster import (
    ActiveExecution,
    EngineEventData,
    ExecuteStepArgs,
    ExecutionPlan,
    ExecutionStep,
    InstanceConcurrencyContext,
    PlanOrchestrationContext,
    SerializableErrorInfo,
    StepFailureData,
    StepRetryData,
    pack_value,
    serializable_error_info_from_exc_info,
)
from alphaswarm_orch.execution import liveness
from alphaswarm_orch.guard import run_ended
from alphaswarm_orch.queues import DEFAULT_QUEUE, LIGHT_QUEUES, QUEUE_TAG
from alphaswarm_orch.tags import RUN_WORKER_PID_TAG

TASK_ID_METADATA = "celery_task_id"
"""Metadata key of a step's submission event: the task a resumed run loop re-attaches to."""

SWEEP_SECONDS = 1.0
"""Batched result + heartbeat lookup, and the run-status check for termination."""

IDLE_WAIT_SECONDS = 0.25
"""Longest wait for a result notification before re-checking retries and concurrency slots."""

SLOT_WAIT_SECONDS = 10.0
"""A step not started this long after its submission is reported once as waiting for a slot."""

STOP_TIMEOUT_SECONDS = 60.0
"""After termination, how long running steps get to stop before the loop stops waiting."""


@dataclass
class InFlight:
    """One submitted step."""

    step_key: str
    task_id: str
    channel: bytes
    queue: str
    worker: str | None = None
    lost_since: float | None = None
    redeliveries: int = 0
    submitted_at: float = field(default_factory=time.monotonic)
    wait_reported: bool = False


class ResultWatcher:
    """Waits for stored results of in-flight steps on the Redis result backend."""

    def __init__(self, app: Celery) -> None:
        self.backend = app.backend
        if not hasattr(self.backend, "client") or not hasattr(self.backend, "get_key_for_task"):
            raise dg.DagsterInvariantViolationError(
                f"the alphaswarm_celery executor needs a Redis result backend, got "
                f"{type(self.backend).__name__}: set ALPHASWARM_RESULT_BACKEND to redis://..."
            )
        self.client = self.backend.client
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._by_channel: dict[bytes, str] = {}
        self._flights: dict[str, InFlight] = {}
        self._arrived: dict[str, dict[str, Any]] = {}
        # The last stored value seen per task: the backend keeps a RETRY (pool process lost,
        # step sent again) stored while the redelivered step runs, and the sweep re-reads it
        # every second; each stored state is acted on once.
        self._seen: dict[str, bytes] = {}

    def channel(self, task_id: str) -> bytes:
        key = self.backend.get_key_for_task(task_id)
        return key if isinstance(key, bytes) else key.encode()

    def watch(self, flight: InFlight) -> None:
        """Subscribe before the task is sent, so its result cannot be missed."""
        self._by_channel[flight.channel] = flight.task_id
        self._flights[flight.task_id] = flight
        self.pubsub.subscribe(flight.channel)

    def forget(self, flight: InFlight) -> None:
        self._by_channel.pop(flight.channel, None)
        self._flights.pop(flight.task_id, None)
        self._arrived.pop(flight.task_id, None)
        self._seen.pop(flight.task_id, None)
        self.pubsub.unsubscribe(flight.channel)

    def wait(self, timeout: float) -> None:
        """Block until a notification arrives or `timeout` passes, then drain the rest."""
        if not self.pubsub.subscribed:  # nothing in flight: get_message would not block
            time.sleep(max(timeout, 0.0))
            return
        message = self.pubsub.get_message(timeout=max(timeout, 0.0))
        while message is not None:
            self._record(message)
            message = self.pubsub.get_message(timeout=0.0)

    def _record(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        task_id = self._by_channel.get(message["channel"])
        if task_id is not None:
            self._arrive(task_id, message["data"])

    def _arrive(self, task_id: str, raw: bytes) -> None:
        """Record a stored state of `task_id` unless it is the one already seen."""
        if self._seen.get(task_id) == raw:
            return
        self._seen[task_id] = raw
        self._arrived[task_id] = self.backend.decode_result(raw)

    def sweep(self, flights: list[InFlight]) -> dict[str, bytes | None]:
        """One round trip: every in-flight result and heartbeat. Returns heartbeats by task."""
        if not flights:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.mget([f.channel for f in flights])
            pipe.mget([keys.heartbeat_key(f.task_id) for f in flights])
            results, beats = pipe.execute()
        for flight, raw in zip(flights, results, strict=True):
            if raw is not None:
                self._arrive(flight.task_id, raw)
        return {f.task_id: beat for f, beat in zip(flights, beats, strict=True)}

    def news(self) -> list[InFlight]:
        """The watched steps with a stored state not yet taken."""
        return [self._flights[t] for t in list(self._arrived) if t in self._flights]

    def take(self, task_id: str) -> dict[str, Any] | None:
        """The latest stored state of `task_id`, once (None when nothing new arrived)."""
        return self._arrived.pop(task_id, None)

    def close(self) -> None:
        self.pubsub.close()


def celery_execution_loop(
    job_context: PlanOrchestrationContext, execution_plan: ExecutionPlan, app: Celery
) -> Iterator[DagsterEvent]:
    """Execute `execution_plan` on Celery workers, yielding the steps' events in order."""
    if execution_plan.step_keys_to_execute:
        dg._check.invariant(
            execution_plan.artifacts_persisted,
            "Steps run on other machines: use an IO manager on shared storage "
            "(FilesystemIOManager on a shared volume, S3, GCS), not in-memory IO.",
        )
    run = _Run(job_context, execution_plan, app)
    try:
        with (
            InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as slots,
            execution_plan.start(
                retry_mode=job_context.executor.retries,
                sort_key_fn=lambda step: -run.priority(step),
                instance_concurrency_context=slots,
            ) as active,
        ):
            if job_context.resume_from_failure:
                yield from run.resume(active)
            yield from run.drive(active)
    finally:
        run.close()


class _Run:
    """State of one run loop."""

    def __init__(
        self, job_context: PlanOrchestrationContext, plan: ExecutionPlan, app: Celery
    ) -> None:
        self.context = job_context
        self.plan = plan
        self.app = app
        self.watcher = ResultWatcher(app)
        self.flights: dict[str, InFlight] = {}
        self.run_tags = job_context.dagster_run.tags
        self.stopping = False
        # Steps past SLOT_WAIT_SECONDS found by this sweep, and the queues whose waiting
        # episode was reported (see _report_waiting).
        self.newly_waiting: list[InFlight] = []
        self.waiting_queues: set[str] = set()
        # The same for every step of the run: computed once, not per submission.
        self.job_origin = job_context.reconstructable_job.get_python_origin()
        self.executable_dict = job_context.reconstructable_job.to_dict()
        self.instance_ref = job_context.instance.get_ref()
        self.inner_retries = job_context.executor.retries.for_inner_plan()
        self._broker: redis.Redis | None = None

    def broker(self) -> redis.Redis:
        """The broker's Redis (queue lists, running lists), connected when first needed."""
        if self._broker is None:
            self._broker = redis.Redis.from_url(
                self.app.conf.broker_url, socket_timeout=5, socket_connect_timeout=5
            )
        return self._broker

    def close(self) -> None:
        self.watcher.close()
        if self._broker is not None:
            self._broker.close()

    def priority(self, step: ExecutionStep) -> int:
        return dagster_priority(step.tags, self.run_tags, where=f"step {step.key}")

    def drive(self, active: ActiveExecution) -> Iterator[DagsterEvent]:
        next_sweep = 0.0
        stop_deadline = float("inf")
        while (not active.is_complete and not self.stopping) or self.flights:
            now = time.monotonic()
            sweeping = now >= next_sweep
            interrupted = not self.stopping and active.check_for_interrupts()
            if interrupted and self._detaches():
                yield from self._detach()
            if not self.stopping and (interrupted or (sweeping and self._cancel_requested())):
                yield from self._stop(active)
                stop_deadline = now + STOP_TIMEOUT_SECONDS
            if now > stop_deadline:
                yield DagsterEvent.engine_event(
                    self.context,
                    f"Stopped waiting for steps {sorted(self.flights)} "
                    f"{STOP_TIMEOUT_SECONDS:.0f}s after termination.",
                    EngineEventData(),
                )
                return
            if sweeping:
                # Every in-flight step: heartbeats, lost workers, steps waiting for a slot.
                beats = self.watcher.sweep(list(self.flights.values()))
                next_sweep = now + SWEEP_SECONDS
                for flight in list(self.flights.values()):
                    yield from self._settle(active, flight, beats, now)
                yield from self._report_waiting(now)
            else:
                # Between sweeps only the steps whose result arrived: visiting all N in-flight
                # steps on each of N results made a fan-out O(N^2).
                for flight in self.watcher.news():
                    yield from self._settle(active, flight, {}, now)
            yield from active.plan_events_iterator(self.context)
            if not self.stopping:
                for step in active.get_steps_to_execute():
                    yield from self._submit(active, step)
            if (not active.is_complete and not self.stopping) or self.flights:
                self.watcher.wait(min(IDLE_WAIT_SECONDS, max(0.0, next_sweep - time.monotonic())))

    def _detaches(self) -> bool:
        """Whether an interrupt of this process leaves the run to be resumed, not terminated.

        A terminate marks the run CANCELING before it interrupts the run worker. An interrupt
        without it (SIGTERM when the daemon's host or container stops) ends only this
        process: the steps go on on their workers and run monitoring resumes the run with a
        new run worker, which re-attaches to them. Only for runs this process was launched
        for (run tag) that Dagster will resume (run monitoring on, resumes left).
        """
        if self.run_tags.get(RUN_WORKER_PID_TAG) != str(os.getpid()):
            return False
        if self._cancel_requested():
            return False
        return self.context.instance.run_will_resume(self.context.run_id)

    def _detach(self) -> Iterator[DagsterEvent]:
        steps = sorted(self.flights)
        yield DagsterEvent.engine_event(
            self.context,
            f"Run worker {os.getpid()} was stopped without a terminate request (its host or "
            f"container is stopping): steps {steps} go on on their Celery workers, and run "
            "monitoring resumes the run with a new run worker that re-attaches to them.",
            EngineEventData(),
        )
        raise DagsterExecutionInterruptedError(
            "Run worker stopped; the run will be resumed by run monitoring."
        )

    def resume(self, active: ActiveExecution) -> Iterator[DagsterEvent]:
        """Rebuild the run's state from its event log and re-attach to its steps in flight.

        Steps the previous run worker submitted are not sent again: the loop subscribes to the
        task it recorded (submission event, or the run's task hash in Redis for a task sent
        just before that worker died) and, as for any step, acts on its result, heartbeat or
        redelivery. A step that was never sent is submitted now.
        """
        instance = self.context.instance
        events = [
            record.dagster_event
            # Dagster events only: a session's own log lines (hours of them) are not read.
            for record in instance.all_logs(self.context.run_id, of_type=set(DagsterEventType))
            if record.dagster_event is not None
        ]
        yield DagsterEvent.engine_event(
            self.context,
            "Resuming the run: re-attaching to its steps on the Celery workers.",
            EngineEventData(),
        )
        for event in events:
            if event.step_key is not None and event.event_type != DagsterEventType.ENGINE_EVENT:
                yield event  # the run's outcome counts the steps that failed before
        possibly_in_flight = active.rebuild_from_events(events)
        recorded, executing = _submissions(events)
        client = self.watcher.client
        hashed = {
            k.decode(): v.decode()
            for k, v in client.hgetall(keys.run_tasks_key(self.context.run_id)).items()
        }
        now = time.monotonic()
        for step in possibly_in_flight:
            yield from self._reattach(
                active,
                step,
                recorded.get(step.key),
                hashed.get(step.key),
                executing.get(step.key),
                now,
            )

    def _reattach(
        self,
        active: ActiveExecution,
        step: ExecutionStep,
        recorded: str | None,
        hashed: str | None,
        executing: str | None,
        now: float,
    ) -> Iterator[DagsterEvent]:
        client = self.watcher.client
        candidates = [t for t in dict.fromkeys([hashed, recorded]) if t is not None]
        state = {}
        for task_id in candidates:
            with client.pipeline(transaction=False) as pipe:
                pipe.get(self.watcher.channel(task_id))
                pipe.get(keys.heartbeat_key(task_id))
                result, beat = pipe.execute()
            state[task_id] = (result, beat)
        alive = [t for t in candidates if state[t][0] is not None or state[t][1] is not None]
        # A task with a result or a heartbeat was sent; one with a submission event was sent
        # (the event is written after sending); one only in the hash may never have been.
        task_id = alive[0] if alive else recorded
        for other in candidates:
            if other != task_id:
                liveness.abandon(client, other)  # if it was sent after all, it is skipped
        step_context = self.context.for_step(step)
        if task_id is None:
            yield DagsterEvent.engine_event(
                step_context,
                f'Step "{step.key}" has no task that was surely sent: submitting it.',
                EngineEventData(),
            )
            yield from self._submit(active, step)
            return
        queue = step.tags.get(QUEUE_TAG, DEFAULT_QUEUE)
        flight = InFlight(step.key, task_id, self.watcher.channel(task_id), queue)
        self.watcher.watch(flight)
        self.flights[step.key] = flight
        result, beat = state.get(task_id, (None, None))
        if beat is not None:
            flight.worker = beat.decode()
            where = f"running on {flight.worker}"
        elif result is not None:
            where = "finished; its result is read now"
        elif executing is not None:
            # It started while the previous run worker watched, and beats no longer: its
            # worker died too, unless Celery sends it again within the grace period.
            flight.worker, flight.lost_since = f"{executing} (last seen)", now
            where = f"started on {executing}, no heartbeat now"
        else:
            where = f'waiting in queue "{queue}"'
        yield DagsterEvent.engine_event(
            step_context,
            f'Re-attached to step "{step.key}" (Celery task {task_id}): {where}.',
            EngineEventData(),
        )

    def _cancel_requested(self) -> bool:
        return run_ended(self.context.instance, self.context.run_id)

    def _stop(self, active: ActiveExecution) -> Iterator[DagsterEvent]:
        self.stopping = True
        active.mark_interrupted()
        liveness.request_cancel(self.watcher.client, self.context.run_id)
        started = [f.step_key for f in self.flights.values() if f.worker is not None]
        for flight in [f for f in self.flights.values() if f.worker is None]:
            # Not started yet: the worker that takes it skips it (liveness.admission).
            self._drop(flight)
        yield DagsterEvent.engine_event(
            self.context,
            f"Run terminated: interrupting running steps {started} on their workers.",
            EngineEventData.interrupted(started),
        )

    def _submit(self, active: ActiveExecution, step: ExecutionStep) -> Iterator[DagsterEvent]:
        queue = step.tags.get(QUEUE_TAG, DEFAULT_QUEUE)
        task_id = str(uuid.uuid4())
        flight = InFlight(step.key, task_id, self.watcher.channel(task_id), queue)
        args = ExecuteStepArgs(
            job_origin=self.job_origin,
            run_id=self.context.run_id,
            step_keys_to_execute=[step.key],
            instance_ref=self.instance_ref,
            retry_mode=self.inner_retries,
            known_state=active.get_known_state(),
            print_serialized_events=True,
        )
        self.watcher.watch(flight)
        self.flights[step.key] = flight
        tasks = keys.run_tasks_key(self.context.run_id)
        with self.watcher.client.pipeline(transaction=False) as pipe:
            pipe.hset(tasks, step.key, task_id)
            pipe.expire(tasks, liveness.MARK_TTL_SECONDS)
            pipe.execute()
        self.app.send_task(
            TASK_EXECUTE_PLAN_NAME,
            kwargs={
                "execute_step_args_packed": pack_value(args),
                "executable_dict": self.executable_dict,
            },
            task_id=task_id,
            queue=queue,
            routing_key=f"{queue}.{TASK_EXECUTE_PLAN_NAME}",
            priority=redis_priority(self.priority(step)),
        )
        # Recorded once sent, so that writing it overlaps the worker picking the step up.
        yield DagsterEvent.engine_event(
            self.context.for_step(step),
            f'Submitted celery task for step "{step.key}" to queue "{queue}".',
            EngineEventData(
                metadata={TASK_ID_METADATA: dg.MetadataValue.text(task_id)},
                marker_start=DELEGATE_MARKER,
            ),
        )

    def _settle(
        self,
        active: ActiveExecution,
        flight: InFlight,
        beats: dict[str, bytes | None],
        now: float,
    ) -> Iterator[DagsterEvent]:
        """Act on what is known about one in-flight step: result, redelivery, or silence."""
        meta = self.watcher.take(flight.task_id)
        status = meta["status"] if meta else None
        if status == states.SUCCESS:
            yield from self._finish(active, flight, meta["result"])
            return
        if status in states.EXCEPTION_STATES and status != states.RETRY:
            lost = isinstance(meta["result"], WorkerLostError)
            yield from self._fail(active, flight, _error_info(meta["result"]), lost=lost)
            return
        if status == states.RETRY:
            # Once per stored RETRY (see ResultWatcher._arrive).
            flight.redeliveries += 1
            dead = self._dead_process(flight)
            yield DagsterEvent.engine_event(
                self.context.for_step(self.plan.get_step_by_key(flight.step_key)),
                f'Worker process {dead} died while running step "{flight.step_key}" '
                f"({_reason(meta.get('result'))}): Celery sent the step again (redelivery "
                f"{flight.redeliveries}).",
                EngineEventData(),
            )
            flight.worker, flight.lost_since = None, None
        if flight.task_id not in beats:
            return
        beat = beats[flight.task_id]
        if beat is not None:
            flight.worker, flight.lost_since = beat.decode(), None
        elif flight.worker is not None:
            flight.lost_since = flight.lost_since or now
            if now - flight.lost_since >= liveness.LOST_GRACE_SECONDS:
                yield from self._lost(active, flight)
        elif not flight.wait_reported and now - flight.submitted_at >= SLOT_WAIT_SECONDS:
            flight.wait_reported = True
            self.newly_waiting.append(flight)

    def _report_waiting(self, now: float) -> Iterator[DagsterEvent]:
        """Once per queue per episode: how many of the run's steps wait for a slot on it.

        An episode starts when a step of the run has waited SLOT_WAIT_SECONDS on a queue and
        lasts until every step it counted has started; the event counts all of the run's
        steps not started on the queue, and steps that pass SLOT_WAIT_SECONDS meanwhile are
        not reported
        (a fan-out of 1,000 steps on 16 slots is one event, not one per queued step).
        """
        waiting: dict[str, list[InFlight]] = {}
        reported: set[str] = set()
        newly = {f.task_id for f in self.newly_waiting}
        for flight in self.flights.values():
            if flight.worker is None:
                waiting.setdefault(flight.queue, []).append(flight)
                if flight.wait_reported and flight.task_id not in newly:
                    reported.add(flight.queue)
        self.waiting_queues &= reported
        fresh = {f.queue for f in self.newly_waiting} - self.waiting_queues
        self.newly_waiting.clear()
        for queue in sorted(fresh):
            self.waiting_queues.add(queue)
            for flight in waiting[queue]:
                flight.wait_reported = True
            yield self._waiting(queue, waiting[queue], now)

    def _waiting(self, queue: str, flights: list[InFlight], now: float) -> DagsterEvent:
        """Say that steps wait for a worker slot on `queue`, with the queue's occupancy."""
        try:
            occupancy = (
                f"{queue_length(self.broker(), queue)} queued and "
                f"{running.count(self.broker(), queue)} running steps on the queue"
            )
        except redis.RedisError as exc:
            occupancy = f"occupancy unknown ({exc})"
        table = LIGHT_QUEUES.get(queue)
        slots = f"; each of its workers runs {table.concurrency}" if table else ""
        if len(flights) == 1:
            [flight] = flights
            return DagsterEvent.engine_event(
                self.context.for_step(self.plan.get_step_by_key(flight.step_key)),
                f'Step "{flight.step_key}" has waited {now - flight.submitted_at:.0f}s for a '
                f'worker slot on queue "{queue}": {occupancy}{slots}. It starts when a slot '
                "frees or the queue's autoscaler adds a worker.",
                EngineEventData(),
            )
        longest = max(now - f.submitted_at for f in flights)
        return DagsterEvent.engine_event(
            self.context,
            f'{len(flights)} steps of this run wait for a worker slot on queue "{queue}" (the '
            f"longest for {longest:.0f}s): {occupancy}{slots}. They start as slots free or "
            "the queue's autoscaler adds workers; steps that wait while these do are not "
            "reported one by one.",
            EngineEventData(),
        )

    def _dead_process(self, flight: InFlight) -> str:
        """The process whose start the n-th RETRY ended: the n-th that started the step (by
        the time the loop sees the RETRY, the heartbeat may already be its replacement's)."""
        try:
            starts = liveness.started_by(self.watcher.client, flight.task_id)
        except Exception:
            starts = []
        if len(starts) >= flight.redeliveries:
            return starts[flight.redeliveries - 1]
        return flight.worker or "(unknown: it died before its first heartbeat)"

    def _finish(
        self, active: ActiveExecution, flight: InFlight, result: dict[str, Any]
    ) -> Iterator[DagsterEvent]:
        self._drop(flight)
        for raw in result["events"]:
            event = deserialize_value(raw, DagsterEvent)
            yield event
            active.handle_event(event)
        if result.get("error"):
            error = deserialize_value(result["error"], SerializableErrorInfo)
            yield from self._record_failure(active, flight.step_key, error, retryable=False)
        elif result.get("skipped"):
            yield DagsterEvent.engine_event(
                self.context,
                f'Step "{flight.step_key}" was not run: {result["skipped"]}.',
                EngineEventData(),
            )
        active.verify_complete(self.context, flight.step_key)

    def _fail(
        self, active: ActiveExecution, flight: InFlight, error: SerializableErrorInfo, lost: bool
    ) -> Iterator[DagsterEvent]:
        self._drop(flight)
        yield from self._record_failure(active, flight.step_key, error, retryable=lost)
        active.verify_complete(self.context, flight.step_key)

    def _lost(self, active: ActiveExecution, flight: InFlight) -> Iterator[DagsterEvent]:
        """The worker running this step died as a whole (no heartbeat, no redelivery)."""
        liveness.abandon(self.watcher.client, flight.task_id)
        self.app.control.revoke(flight.task_id)
        with contextlib.suppress(redis.RedisError):  # else pruned by a metrics scrape
            running.finished(self.broker(), flight.queue, flight.task_id)
        message = (
            f'Step "{flight.step_key}" lost its worker {flight.worker}: no heartbeat for '
            f"{liveness.HEARTBEAT_TTL_SECONDS + liveness.LOST_GRACE_SECONDS:.0f}s and no "
            f'redelivery. The worker process for queue "{flight.queue}" was killed or its '
            "node was lost (check OOM kills and node events)."
        )
        error = SerializableErrorInfo(message=message, stack=[], cls_name="WorkerLostError")
        yield from self._fail(active, flight, error, lost=True)

    def _record_failure(
        self, active: ActiveExecution, step_key: str, error: SerializableErrorInfo, retryable: bool
    ) -> Iterator[DagsterEvent]:
        """A STEP_FAILURE (or STEP_UP_FOR_RETRY when the op's policy allows) for `step_key`."""
        step_context = self.context.for_step(self.plan.get_step_by_key(step_key))
        policy = step_context.op_retry_policy
        attempt = active.retry_state.get_attempt_count(step_key)
        if (
            retryable
            and policy is not None
            and self.context.executor.retries.enabled
            and attempt < policy.max_retries
        ):
            event = DagsterEvent.step_retry_event(
                step_context,
                StepRetryData(error=error, seconds_to_wait=policy.calculate_delay(attempt + 1)),
            )
        else:
            event = DagsterEvent.step_failure_event(
                step_context, StepFailureData(error=error, user_failure_data=None)
            )
        yield event
        active.handle_event(event)

    def _drop(self, flight: InFlight) -> None:
        self.flights.pop(flight.step_key, None)
        self.watcher.forget(flight)


def _submissions(events: list[DagsterEvent]) -> tuple[dict[str, str], dict[str, str]]:
    """From a run's events: step -> task id of its latest submission, and step -> the Celery
    worker that started that submission (its "Executing step" event), if one did."""
    recorded: dict[str, str] = {}
    executing: dict[str, str] = {}
    for event in events:
        if event.event_type != DagsterEventType.ENGINE_EVENT or event.step_key is None:
            continue
        metadata = event.engine_event_data.metadata or {}
        if TASK_ID_METADATA in metadata:
            recorded[event.step_key] = str(metadata[TASK_ID_METADATA].value)
            executing.pop(event.step_key, None)
        elif "Celery worker" in metadata:
            executing[event.step_key] = str(metadata["Celery worker"].value)
    return recorded, executing


def _reason(exc: Any) -> str:
    """A stored task exception in one line, e.g. `WorkerLostError: Worker exited ...`."""
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}".strip()
    return str(exc or "no reason stored")


def _error_info(exc: Any) -> SerializableErrorInfo:
    """A stored task exception as Dagster error info (names WorkerLostError plainly)."""
    try:
        raise exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
    except BaseException:
        return serializable_error_info_from_exc_info(sys.exc_info())
