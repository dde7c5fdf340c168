"""Request -> first step latency through the sensor path: stock Dagster settings vs ours.

    python -m benchmarks.request_latency [--requests N] [--redis-db N]

Runs the same requests against two stacks, one after the other, each with a `paper` worker
(`alphaswarm-orch worker`) and a throw-away Postgres instance database:

- stock: `dagster-daemon run`, DefaultRunLauncher (the code server spawns each run),
  Dagster's QueuedRunCoordinator with its default dequeue interval (5 s) and sensor loop
  (5 s), sensors unthreaded;
- ours: `alphaswarm-orch daemon` (sensor loop ALPHASWARM_SENSOR_LOOP_SECONDS, default 1 s,
  woken when a request arrives) with the repo's dagster.yaml (ForkserverRunLauncher, the
  waking run coordinator, dequeue every 1 s or when a run is queued, threaded sensors).

Each request is appended to the paper request stream the way alphaswarm-core does; the clock
runs from the append to each stage of the run (`STAGES`): its creation (sensor pickup),
RUN_STARTING (dequeued, handed to the launcher), RUN_START (its run worker is executing it)
and the session step's STEP_START. The session is then stopped by a stop request and the
next request is sent after a random 0-5 s pause. The first request of each stack is a
warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import redis
import yaml

from alphaswarm_orch.requests import PaperStop, append_request
from alphaswarm_orch.tags import REQUEST_ID_TAG
from benchmarks.stack import paper_start, stack_env
from tests.support.processes import background
from tests.support.runs import REPO, wait_for
from tests.support.workers import WorkerProcess


def _event_time(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> float:
    records = instance.all_logs(run_id, of_type=kind)
    return records[0].timestamp if records else 0.0


STAGES = (
    "run created (sensor pickup)",
    "RUN_STARTING (dequeued, launching)",
    "RUN_START (run worker ready)",
    "first STEP_START",
)
"""Where the time goes, each stage from the request's append; events of the run's log."""
Row = tuple[float, ...]
EVENTS = (
    dg.DagsterEventType.RUN_STARTING,
    dg.DagsterEventType.RUN_START,
)


def measure(env: dict[str, str], requests: int) -> list[Row]:
    client = redis.Redis.from_url(env["ALPHASWARM_REDIS_URL"])
    os.environ.update(env)
    rows = []
    with dg.DagsterInstance.get() as instance:
        for i in range(requests + 1):  # the first is a warm-up
            session, request_id = f"bench{i}-{uuid.uuid4().hex[:6]}", f"req-{uuid.uuid4().hex}"
            start = paper_start(session, request_id)
            # Requests arrive at random points of the sensor daemon's 5 s loop, not in step
            # with it (a sequential benchmark would otherwise always hit the same phase).
            time.sleep(random.uniform(0, 5))
            sent = time.time()
            append_request(client, start)
            run = wait_for(
                lambda rid=request_id: next(
                    iter(instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: rid}))),
                    None,
                ),
                120,
                f"the run for {request_id}",
                interval=0.02,
            )
            step = wait_for(
                lambda r=run: _event_time(instance, r.run_id, dg.DagsterEventType.STEP_START),
                120,
                f"the session step of {run.run_id}",
                interval=0.02,
            )
            events = [_event_time(instance, run.run_id, kind) for kind in EVENTS]
            created = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
            stop = PaperStop(
                schema_version=1,
                type="paper.stop",
                request_id=f"stop-{request_id}",
                actor="benchmark",
                session_id=session,
            )
            append_request(client, stop)
            wait_for(
                lambda r=run: instance.get_run_by_id(r.run_id).is_finished,
                120,
                f"session {session} to stop",
            )
            if i:
                rows.append(tuple(t - sent for t in (created, *events, step)))
    client.close()
    return rows


def stock_instance_yaml() -> str:
    """The repo's dagster.yaml with Dagster's defaults for what this benchmark compares."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    config["run_coordinator"].update(
        module="dagster._core.run_coordinator", **{"class": "QueuedRunCoordinator"}
    )
    # DefaultRunLauncher cannot resume runs: Dagster refuses resume attempts with it.
    config["run_monitoring"]["max_resume_run_attempts"] = 0
    del config["run_coordinator"]["config"]["dequeue_interval_seconds"]
    del config["sensors"]
    return yaml.safe_dump(config, sort_keys=False)


def run_stack(
    name: str, daemon: Sequence[str], instance_yaml: str, redis_db: int, requests: int
) -> list[Row]:
    with stack_env(f"request-{name}", instance_yaml, redis_db) as env:
        worker = WorkerProcess.start("paper", f"bench-paper-{name}", env)
        try:
            with background([*daemon, "-w", "workspace.yaml"], env, cwd=str(REPO)):
                return measure(env, requests)
        finally:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--redis-db", type=int, default=8, help="uses this DB and the next")
    parser.add_argument(
        "--stack",
        choices=("stock", "ours"),
        action="append",
        help="measure only this stack (repeatable; default both, side by side)",
    )
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    stacks = {
        "stock": ([str(bin_dir / "dagster-daemon"), "run"], stock_instance_yaml()),
        "ours": (
            [sys.executable, "-m", "alphaswarm_orch.cli", "daemon"],
            (REPO / "dagster.yaml").read_text(),
        ),
    }
    chosen = args.stack or list(stacks)
    results = {
        name: run_stack(name, *stacks[name], args.redis_db, args.requests) for name in chosen
    }
    print(table(results, args.requests))


def table(results: dict[str, list[Row]], requests: int) -> str:
    """p50/min/max per stage and stack, and ours/stock of the p50s when both ran."""
    names = list(results)
    both = names == ["stock", "ours"]
    columns = [f"{name} {f}" for name in names for f in ("p50", "min", "max")]
    columns += ["ours/stock"] if both else []
    lines = [
        f"request -> stage through paper_request_sensor, {requests} requests each (s)",
        f"| stage | {' | '.join(columns)} |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for index, stage in enumerate(STAGES):
        values = {name: [row[index] for row in results[name]] for name in names}
        cells = [f"{f(values[name]):.2f}" for name in names for f in (statistics.median, min, max)]
        if both:
            ratio = statistics.median(values["ours"]) / statistics.median(values["stock"])
            cells.append(f"{ratio:.2f}")
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
