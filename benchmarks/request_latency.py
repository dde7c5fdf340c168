"""Request -> first step latency through the sensor path, on the production stack.

    python -m benchmarks.request_latency [--requests N] [--redis-db N]

Starts what production runs: a `paper` worker (`alphaswarm-orch worker`), `dagster-daemon`
with the repo's dagster.yaml (QueuedRunCoordinator, DefaultRunLauncher) on a throw-away
Postgres database, and the code location's `paper_request_sensor`. Each request is appended
to the paper request stream the way alphaswarm-core does; the clock runs from the append to
the run's creation (sensor pickup), RUN_START and the session step's STEP_START. The session
is then stopped by a stop request and the next request is sent after a random 0-5 s pause.

Baseline (DESIGN.md, stock settings): request -> first step 6-12 s, median 7.9 s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import redis

from alphaswarm_orch.requests import PaperStart, PaperStop, append_request
from alphaswarm_orch.tags import REQUEST_ID_TAG
from tests.support import services
from tests.support.processes import background, free_port
from tests.support.runs import REPO, wait_for
from tests.support.workers import WorkerProcess


def _event_time(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> float:
    records = instance.all_logs(run_id, of_type=kind)
    return records[0].timestamp if records else 0.0


def measure(env: dict[str, str], requests: int) -> list[tuple[float, float, float]]:
    client = redis.Redis.from_url(env["ALPHASWARM_REDIS_URL"])
    os.environ.update(env)
    rows = []
    with dg.DagsterInstance.get() as instance:
        for i in range(requests + 1):  # the first is a warm-up
            session, request_id = f"bench{i}-{uuid.uuid4().hex[:6]}", f"req-{uuid.uuid4().hex}"
            start = PaperStart(
                schema_version=1,
                type="paper.start",
                request_id=request_id,
                actor="benchmark",
                session_id=session,
                symbols=["BTC-USD"],
            )
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
            run_start = _event_time(instance, run.run_id, dg.DagsterEventType.RUN_START)
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
                rows.append((created - sent, run_start - sent, step - sent))
    client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()

    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    backend = f"redis://127.0.0.1:6379/{args.redis_db + 1}"
    services.flush_redis(broker, backend)
    workdir = Path(tempfile.mkdtemp(prefix="bench-request-"))
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with services.temporary_database("as_bench") as postgres:
        env = {
            **os.environ,
            "ALPHASWARM_BROKER_URL": broker,
            "ALPHASWARM_RESULT_BACKEND": backend,
            "ALPHASWARM_REDIS_URL": broker,
            "ALPHASWARM_POSTGRES_URL": postgres,
            "ALPHASWARM_STORAGE_DIR": str(workdir / "storage"),
            "ALPHASWARM_METRICS_PORT": str(free_port()),
            "DAGSTER_HOME": str(home),
        }
        worker = WorkerProcess.start("paper", "bench-paper", env)
        daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run"]
        try:
            with background([*daemon, "-w", "workspace.yaml"], env, cwd=str(REPO)):
                rows = measure(env, args.requests)
        finally:
            worker.stop()
            services.flush_redis(broker, backend)
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"request -> first step through paper_request_sensor, {len(rows)} requests (s)")
    print("| stage | p50 | min | max |")
    print("|---|---|---|---|")
    for name, column in zip(
        ("run created (sensor pickup)", "RUN_START (launcher)", "first STEP_START"),
        zip(*rows, strict=True),
        strict=True,
    ):
        print(
            f"| {name} | {statistics.median(column):.2f} | {min(column):.2f} | {max(column):.2f} |"
        )
    ratio = statistics.median(row[2] for row in rows) / 7.9
    print(f"\nbaseline (DESIGN.md, stock): 6-12 s, median 7.9 s; first step p50 {ratio:.2f}x")


if __name__ == "__main__":
    main()
