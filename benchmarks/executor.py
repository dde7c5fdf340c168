"""Step overhead of the Celery executors, side by side, measured in one run.

    python -m benchmarks.executor            # chain of 10, fan-out of 50, 3 repeats
    python -m benchmarks.executor --small    # chain of 5, fan-out of 10, 1 repeat

Needs the machine's Redis and Postgres (like the tests). Uses Redis databases --redis-db and
the next one (default 4/5, NOT flushed: only this benchmark's own keys are written) and a
throw-away Postgres database. Each Celery executor gets its own worker (concurrency 4, queue
`default`), started only while that executor is measured, so the two never take each
other's tasks. Cases:

- in-process: dagster's in_process_executor (one process, no IPC: the floor for Dagster work);
- multiprocess: dagster's multiprocess_executor (the embedded default);
- stock: dagster_celery.celery_executor with a `celery worker` running its execute_plan;
- alphaswarm: alphaswarm_celery_executor with `alphaswarm-orch worker`;
- raw Celery: a no-op task's sequential round trip on the same Redis (the transport floor).

"handoff p50" is the per-sequential-step overhead: in the chain, the median time from one
step's STEP_SUCCESS to the next step's STEP_START (noticing completion, submitting,
queueing, and the worker preparing the step).
"""

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/executor.py`
    sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
import psycopg2  # noqa: E402
from celery import Celery  # noqa: E402
from dagster_celery import celery_executor  # noqa: E402
from dagster_celery.make_app import make_app  # noqa: E402
from dagster_celery.tasks import create_task  # noqa: E402

from alphaswarm_orch.execution.executor import alphaswarm_celery_executor  # noqa: E402
from alphaswarm_orch.queues import queue_tags  # noqa: E402
from alphaswarm_orch.settings import Settings  # noqa: E402

CHAIN = int(os.environ.get("BENCH_CHAIN", "10"))
FAN = int(os.environ.get("BENCH_FAN", "50"))
EXECUTORS = {
    "in-process": dg.in_process_executor,
    "multiprocess": dg.multiprocess_executor,
    "stock": celery_executor,
    "alphaswarm": alphaswarm_celery_executor,
}


@dg.op(tags=queue_tags("default"))
def first() -> int:
    return 0


@dg.op(tags=queue_tags("default"))
def step(value: int) -> int:
    return value + 1


@dg.op(tags=queue_tags("default"))
def leaf() -> int:
    return 1


def _chain_job(name: str, executor: dg.ExecutorDefinition, _size: int) -> dg.JobDefinition:
    @dg.job(name=f"chain_{name}", executor_def=executor, resource_defs=_resources())
    def chain() -> None:
        value = first()
        for index in range(CHAIN - 1):
            value = step.alias(f"step_{index + 1}")(value)

    return chain


def _fan_job(name: str, executor: dg.ExecutorDefinition, size: int) -> dg.JobDefinition:
    @dg.job(name=f"fan_{name}", executor_def=executor, resource_defs=_resources())
    def fan() -> None:
        for index in range(size):
            leaf.alias(f"leaf_{index}")()

    return fan


def _resources() -> dict:
    return {"io_manager": dg.FilesystemIOManager(base_dir=str(Settings.from_env().io_dir))}


def _key(name: str) -> str:
    return name.replace("-", "_")


def bench_job(kind: str, shape: str, size: int | None = None) -> dg.JobDefinition:
    """The `shape` (chain | fan) job on executor `kind` (a fan-out of `size`, default FAN);
    workers rebuild it by this name."""
    build = _chain_job if shape == "chain" else _fan_job
    return build(_key(kind), EXECUTORS[kind], size or FAN)


def _noop() -> None:
    """The raw round trip's task: nothing but the transport."""


stock_app: Celery | None = None
"""The stock worker's app (`celery -A benchmarks.executor:stock_app worker`): dagster-celery's
execute_plan plus a no-op task for the raw round trip."""
if os.environ.get("BENCH_STOCK_WORKER"):
    stock_app = make_app(
        {
            "broker": os.environ["ALPHASWARM_BROKER_URL"],
            "backend": os.environ["ALPHASWARM_RESULT_BACKEND"],
        }
    )
    create_task(stock_app)
    stock_app.task(name="bench.noop")(_noop)


@contextmanager
def _postgres() -> Iterator[str]:
    admin = os.environ.get(
        "ALPHASWARM_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    host = admin.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg2://{host}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@contextmanager
def workers(kind: str, log_dir: Path, count: int = 1) -> Iterator[None]:
    """`count` workers of executor `kind` (concurrency 4 each, queue `default`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = []
    try:
        for n in range(count):
            if kind == "stock":
                env["BENCH_STOCK_WORKER"] = "1"
                argv = [sys.executable, "-m", "celery", "-A", "benchmarks.executor:stock_app"]
                argv += ["worker", "-Q", "default", "-c", "4"]
                argv += ["--hostname", f"bench-stock-{uuid.uuid4().hex[:6]}@%h"]
            else:
                argv = [sys.executable, "-m", "alphaswarm_orch.cli", "worker", "--queues"]
                argv += ["default", "--concurrency", "4"]
                argv += ["--name", f"bench-ours-{uuid.uuid4().hex[:6]}"]
            log = log_dir / f"worker-{kind}-{n}.log"
            with open(log, "w") as out:
                processes.append(
                    (subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=out), log)
                )
        _wait_ready(processes)
        yield
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(processes: list[tuple[subprocess.Popen, Path]]) -> None:
    """Until every worker answers Celery's ping (each names itself in its reply)."""
    app = Celery(broker=os.environ["ALPHASWARM_BROKER_URL"])
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            for process, log in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{log.read_text()}")
            if len(app.control.ping(timeout=0.5)) >= len(processes):
                return
        raise RuntimeError(f"workers not ready in 90s:\n{processes[0][1].read_text()}")
    finally:
        app.close()


def _run_config(kind: str) -> dict:
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if kind != "stock":
        return quiet
    return {
        **quiet,
        "execution": {
            "config": {
                "broker": os.environ["ALPHASWARM_BROKER_URL"],
                "backend": os.environ["ALPHASWARM_RESULT_BACKEND"],
            }
        },
    }


def execute(
    instance: dg.DagsterInstance, shape: str, kind: str, size: int | None = None
) -> tuple[float, str]:
    """Run the `shape` job on executor `kind` to success: (wall seconds, run id)."""
    job = dg.build_reconstructable_job(
        "benchmarks.executor", "bench_job", reconstructable_args=(kind, shape, size)
    )
    job_name = f"{shape}_{_key(kind)}"
    started = time.perf_counter()
    with dg.execute_job(job, instance=instance, run_config=_run_config(kind)) as result:
        wall = time.perf_counter() - started
        if not result.success:
            raise RuntimeError(f"{job_name} failed: run {result.run_id}")
        return wall, result.run_id


def _handoffs(instance: dg.DagsterInstance, run_id: str) -> list[float]:
    """Seconds from each chain step's success to the next step's start."""
    starts, successes = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            successes[event.step_key] = record.timestamp
    keys = ["first", *(f"step_{i + 1}" for i in range(CHAIN - 1))]
    return [starts[b] - successes[a] for a, b in itertools.pairwise(keys)]


def _raw_round_trip(samples: int) -> list[float]:
    app = Celery(
        broker=os.environ["ALPHASWARM_BROKER_URL"], backend=os.environ["ALPHASWARM_RESULT_BACKEND"]
    )
    try:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            app.send_task("bench.noop", queue="default").get(timeout=30)
            times.append(time.perf_counter() - started)
        return times
    finally:
        app.close()


def measure(repeats: int, log_dir: Path, kinds: list[str]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with dg.DagsterInstance.get() as instance:
        for kind in kinds:
            worker = workers(kind, log_dir) if kind in ("stock", "alphaswarm") else None
            with worker or _nothing():
                execute(instance, "chain", kind)  # warm-up (imports, worker caches)
                chains, handoffs, fans = [], [], []
                for _ in range(repeats):
                    wall, run_id = execute(instance, "chain", kind)
                    chains.append(wall)
                    handoffs += _handoffs(instance, run_id)
                    fans.append(execute(instance, "fan", kind)[0])
                results[kind] = {
                    "chain": statistics.median(chains),
                    "handoff": statistics.median(handoffs),
                    "fan": statistics.median(fans),
                }
                if kind == "stock":
                    results["raw"] = {"round_trip": statistics.median(_raw_round_trip(50))}
            print(f"measured {kind}", file=sys.stderr)
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def table(results: dict[str, dict[str, float]]) -> str:
    kinds = [kind for kind in EXECUTORS if kind in results]
    ours = results["alphaswarm"]
    rows: list[tuple[str, Callable[[dict[str, float]], float], str]] = [
        (f"chain of {CHAIN}: wall (s)", lambda r: r["chain"], "{:.2f}"),
        ("chain: handoff p50 per sequential step (ms)", lambda r: 1000 * r["handoff"], "{:.0f}"),
        (f"fan-out of {FAN}: wall (s)", lambda r: r["fan"], "{:.2f}"),
    ]
    head = ["case", *kinds, "alphaswarm / in-process", "alphaswarm / stock"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, get, fmt in rows:
        cells = [fmt.format(get(results[k])) for k in kinds]
        ratio_in = get(ours) / get(results["in-process"]) if get(results["in-process"]) else 0
        ratio_stock = get(ours) / get(results["stock"]) if get(results["stock"]) else 0
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {ratio_in:.2f}x | {ratio_stock:.2f}x |"
        )
    raw = 1000 * results["raw"]["round_trip"]
    lines.append(f"\nraw Celery round trip on the same Redis (no-op task, p50): {raw:.1f} ms")
    return "\n".join(lines)


def main() -> None:
    global CHAIN, FAN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="chain 5, fan-out 10, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--redis-db", type=int, default=4, help="uses this db and the next")
    parser.add_argument(
        "--no-multiprocess",
        action="store_true",
        help="leave out the multiprocess executor (the slowest case, not a target)",
    )
    args = parser.parse_args()
    chain, fan, repeats = (5, 10, 1) if args.small else (10, 50, 3)
    repeats = args.repeats or repeats
    work = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with _postgres() as postgres:
        os.environ.update(
            {
                "BENCH_CHAIN": str(chain),
                "BENCH_FAN": str(fan),
                "ALPHASWARM_BROKER_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
                "ALPHASWARM_RESULT_BACKEND": f"redis://127.0.0.1:6379/{args.redis_db + 1}",
                "ALPHASWARM_POSTGRES_URL": postgres,
                "ALPHASWARM_STORAGE_DIR": str(work / "storage"),
                "DAGSTER_HOME": str(home),
            }
        )
        CHAIN, FAN = chain, fan
        kinds = [k for k in EXECUTORS if not (args.no_multiprocess and k == "multiprocess")]
        results = measure(repeats, work, kinds)
    print(table(results))
    print(f"\n(medians of {repeats} repeat(s) after one warm-up chain; logs in {work})")


if __name__ == "__main__":
    main()
