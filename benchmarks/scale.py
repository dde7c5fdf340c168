"""Growth curves: cost as work grows, each point side by side with stock Dagster where stock
can run it. One command; a table (printed, and as markdown) and a PNG plot per curve.

    python -m benchmarks.scale [--out DIR]   # full sizes (about 30 minutes on 2 cores)
    python -m benchmarks.scale --small       # tiny sizes (a smoke check, a few minutes)

Needs the machine's Redis (DBs --redis-db and the next, flushed) and Postgres (throw-away
databases). Curves:

- fan-out: one run of N independent steps on W workers x 4 (executor.py's fan job):
  in-process executor, stock dagster-celery (`celery worker`), ours (`alphaswarm-orch
  worker`); wall per step, and that figure against the curve's first point.
- queued runs: N runs queued at once (benchmarks/scale_location.py's sensor) for the daemon
  to launch: stock `dagster-daemon run` with Dagster's defaults (DefaultRunLauncher, run
  queue 10 at a time, dequeue every 5 s) vs ours (`alphaswarm-orch daemon`, the repo's
  dagster.yaml); launch rate from the first run created to the last run started, and time
  to drain (to the last run finished).
- paper sessions: N sessions started through the paper request stream, ticked at 1,000
  ticks/s in total (1 in 10 with an order) on one paper worker; USS per session of the daemon's
  process tree (daemon, code server, forkserver and run processes: where run coordinators
  live) over the idle tree, and tick latency (append -> ledger write of a tick with an order).
  Stock: the same with Dagster's run launcher and loops (request_latency.py's stock yaml).
- ledger backlog: the mirror draining N runs into an empty ledger vs the bare event read of
  the same backlog (ledger_mirror.py), runs/s and the ratio.
- idle stack: the daemon's process tree and a paper worker with nothing to do: daemon CPU (%
  of one core, /proc utime+stime) and Postgres connections held (pg_stat_activity).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import redis
import sqlalchemy as sa
import yaml

from alphaswarm_orch.broker.keys import session_stop_key
from alphaswarm_orch.requests import append_request
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from alphaswarm_orch.tags import REQUEST_ID_TAG
from benchmarks import executor, ledger_mirror
from benchmarks.request_latency import stock_instance_yaml
from benchmarks.scale_location import BATCH_TAG, BURST_KEY
from benchmarks.stack import (
    cpu_seconds,
    paper_start,
    postgres_connections,
    stack_env,
    tree,
    uss_bytes,
)
from benchmarks.stack import daemon as stack_daemon
from tests.support.runs import REPO, wait_for
from tests.support.workers import WorkerProcess

MIB = 1024 * 1024
TICKS_PER_SECOND = 1000
ORDER_EVERY = 10
STOCK_DAEMON = [str(Path(sys.executable).parent / "dagster-daemon"), "run"]
OUR_DAEMON = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon"]


@dataclass(frozen=True)
class Sizes:
    fanout: list[int]
    fanout_workers: int
    queue: list[int]
    queue_stock: int
    """The largest burst stock runs (it launches one fresh process per run, 10 at a time)."""
    sessions: list[int]
    tick_seconds: float
    ledger: list[int]
    idle_seconds: float


FULL = Sizes([50, 200, 1000], 4, [10, 100, 300], 10, [1, 10, 20], 10, [1_000, 10_000], 60)
"""Sized to finish in about 30 minutes on 2 shared cores (README, Scale: what did not fit)."""
SMALL = Sizes([5, 10], 1, [2, 4], 4, [1, 2], 2, [200, 400], 5)


@dataclass
class Curve:
    key: str
    title: str
    size_label: str
    systems: list[str]
    measures: list[str]
    baseline: str
    """The system `ours` is divided by in the ratio column."""
    sizes: list[int | str] = field(default_factory=list)
    values: dict[tuple[int | str, str, str], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, size: int | str, system: str, measure: str, value: float) -> None:
        if size not in self.sizes:
            self.sizes.append(size)
        self.values[(size, system, measure)] = value

    def table(self) -> str:
        head = [self.size_label, "measure", *self.systems, f"ours / {self.baseline}"]
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for size in self.sizes:
            for measure in self.measures:
                cells = [_fmt(self.values.get((size, s, measure))) for s in self.systems]
                ours, base = (self.values.get((size, s, measure)) for s in ("ours", self.baseline))
                ratio = f"{ours / base:.2f}x" if ours is not None and base else "-"
                lines.append(f"| {size} | {measure} | " + " | ".join(cells) + f" | {ratio} |")
        return "\n".join([*lines, "", *self.notes])

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        width = 5 * len(self.measures)
        fig, axes = plt.subplots(1, len(self.measures), figsize=(width, 3.8), squeeze=False)
        for ax, measure in zip(axes[0], self.measures, strict=True):
            if len(self.sizes) == 1:  # one point (the idle stack): a bar per system
                systems = [s for s in self.systems if (self.sizes[0], s, measure) in self.values]
                ax.bar(systems, [self.values[(self.sizes[0], s, measure)] for s in systems])
            else:
                for system in self.systems:
                    points = [
                        (size, self.values[(size, system, measure)])
                        for size in self.sizes
                        if (size, system, measure) in self.values
                    ]
                    if points:
                        ax.plot(*zip(*points, strict=True), marker="o", label=system)
                ax.set_xscale("log")
                ax.set_xticks(self.sizes, [str(size) for size in self.sizes])
                ax.minorticks_off()
                ax.set_xlabel(self.size_label)
                ax.legend()
            ax.set_title(measure, fontsize=10)
            ax.grid(alpha=0.3)
        fig.suptitle(self.title, fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)

    def as_json(self) -> dict:
        return {
            "title": self.title,
            "sizes": self.sizes,
            "systems": self.systems,
            "measures": self.measures,
            "values": [[*key, value] for key, value in self.values.items()],
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- fan-out ---------------------------------------------------------------------------------


FANOUT_SYSTEMS = ("in-process", "stock", "ours")


def fanout(sizes: Sizes, redis_db: int, work: Path, systems: list[str] | None = None) -> Curve:
    workers = sizes.fanout_workers
    curve = Curve(
        "fanout",
        f"fan-out: one run of N independent steps, {workers} worker(s) x 4",
        "steps",
        ["in-process", "stock", "ours"],
        ["wall per step (ms)", "per step vs first point (x)", "CPU per step (ms)", "wall (s)"],
        "stock",
    )
    kinds = {"in-process": "in-process", "stock": "stock", "ours": "alphaswarm"}
    kinds = {system: kind for system, kind in kinds.items() if system in (systems or kinds)}
    yaml_text = (REPO / "dagster.yaml").read_text()
    with stack_env("fanout", yaml_text, redis_db) as _env, dg.DagsterInstance.get() as instance:
        for system, kind in kinds.items():
            celery = kind in ("stock", "alphaswarm")
            with executor.workers(kind, work, workers) if celery else nullcontext():
                executor.execute(instance, "fan", kind, sizes.fanout[0])  # warm-up
                for size in sizes.fanout:
                    cpu = cpu_seconds(tree(os.getpid()))  # this process (the run) + workers
                    wall, _ = executor.execute(instance, "fan", kind, size)
                    cpu = cpu_seconds(tree(os.getpid())) - cpu
                    curve.put(size, system, "CPU per step (ms)", 1000 * cpu / size)
                    _log(f"fan-out {size} {system}: {wall:.2f} s")
                    curve.put(size, system, "wall (s)", wall)
                    curve.put(size, system, "wall per step (ms)", 1000 * wall / size)
                    first = curve.values[(sizes.fanout[0], system, "wall per step (ms)")]
                    ratio = 1000 * wall / size / first
                    curve.put(size, system, "per step vs first point (x)", ratio)
    curve.notes.append(
        f"target: ours' wall per step at every size within 1.2x of the {sizes.fanout[0]}-step "
        "figure. CPU per step: user + system CPU of the run's process and the workers (not "
        "Redis' or Postgres'), over N: what the step costs whatever else loads the machine."
    )
    return curve


# -- queued runs -----------------------------------------------------------------------------


def _stacks(stock_yaml: str) -> dict[str, tuple[list[str], str]]:
    """system -> (daemon command, dagster.yaml): stock Dagster's and ours."""
    return {
        "stock": (STOCK_DAEMON, stock_yaml),
        "ours": (OUR_DAEMON, (REPO / "dagster.yaml").read_text()),
    }


def stock_queue_yaml() -> str:
    """request_latency's stock yaml with the run queue's defaults too (10 runs at a time)."""
    config = yaml.safe_load(stock_instance_yaml())
    del config["run_coordinator"]["config"]
    return yaml.safe_dump(config, sort_keys=False)


def queued_runs(sizes: Sizes, redis_db: int) -> Curve:
    curve = Curve(
        "queue",
        "queued runs: N one-op runs queued at once",
        "runs",
        ["stock", "ours"],
        ["queue rate (runs/s)", "launch rate (runs/s)", "time to drain (s)"],
        "stock",
    )
    for system, (daemon, instance_yaml) in _stacks(stock_queue_yaml()).items():
        with (
            stack_env(f"queue-{system}", instance_yaml, redis_db) as env,
            stack_daemon([*daemon, "-m", "benchmarks.scale_location"], env),
            dg.DagsterInstance.get() as instance,
        ):
            client = redis.Redis.from_url(env["ALPHASWARM_REDIS_URL"])
            _burst(client, instance, 1)  # warm-up: code server, forkserver
            for size in sizes.queue:
                if system == "stock" and size > sizes.queue_stock:
                    continue
                created, started, ended = _burst(client, instance, size)
                _log(f"queue {size} {system}: launched in {started:.1f} s, drained {ended:.1f} s")
                curve.put(size, system, "queue rate (runs/s)", size / created)
                curve.put(size, system, "launch rate (runs/s)", size / started)
                curve.put(size, system, "time to drain (s)", ended)
            client.close()
    if sizes.queue_stock < max(sizes.queue):
        curve.notes.append(
            f"stock is not run beyond {sizes.queue_stock} runs: one fresh process per run, 10 at "
            "a time, would take most of the benchmark's time budget."
        )
    curve.notes.append(
        "The sensor returns the N run requests in one tick; the sensor daemon then creates and "
        "queues them one by one. Queue rate: N / seconds from the first run created to the "
        "last; launch rate: N / seconds from the first run created to the last run's start "
        "(RUN_START); time to drain: to the last run's end."
    )
    return curve


def _burst(
    client: redis.Redis, instance: dg.DagsterInstance, size: int
) -> tuple[float, float, float]:
    """Queue `size` runs at once; wait until all succeeded. Seconds from the first run
    created to the last run created, started, and ended."""
    batch = uuid.uuid4().hex[:10]
    client.set(BURST_KEY, f"{batch}:{size}")
    runs = dg.RunsFilter(tags={BATCH_TAG: batch})

    def done() -> list[dg.RunRecord] | None:
        records = instance.get_run_records(filters=runs)
        finished = len(records) == size and all(r.dagster_run.is_finished for r in records)
        return records if finished else None

    records = wait_for(done, 120 + 2 * size, f"{size} queued runs to finish", interval=0.5)
    failed = [r.dagster_run.run_id for r in records if not r.dagster_run.is_success]
    if failed:
        raise RuntimeError(f"{len(failed)} of {size} queued runs failed, e.g. {failed[0]}")
    first = min(r.create_timestamp.timestamp() for r in records)
    created = max(r.create_timestamp.timestamp() for r in records) - first
    started = max(r.start_time or 0.0 for r in records) - first
    ended = max(r.end_time or 0.0 for r in records) - first
    return max(created, 1e-3), started, ended


# -- sessions and the idle stack -------------------------------------------------------------


def sessions_and_idle(sizes: Sizes, redis_db: int) -> tuple[Curve, Curve]:
    sessions = Curve(
        "sessions",
        f"paper sessions: N at once, {TICKS_PER_SECOND} ticks/s in total",
        "sessions",
        ["stock", "ours"],
        ["USS per session (MiB)", "tick latency p50 (ms)", "tick latency p99 (ms)"],
        "stock",
        notes=[
            "USS per session: of the sessions' run processes (the run coordinators; each the "
            "process that wrote its run's RUN_START) with their children, over N (target: <= "
            "30 MiB); the daemon's own tree is in the idle stack's table. Tick "
            f"latency: ticks with an order (1 in {ORDER_EVERY}), append -> ledger write.",
        ],
    )
    idle = Curve(
        "idle",
        f"idle stack: daemon + paper worker, nothing to do, {sizes.idle_seconds:.0f} s window",
        "stack",
        ["stock", "ours"],
        ["daemon CPU (% of a core)", "Postgres connections", "daemon tree USS (MiB)"],
        "stock",
    )
    connections: list[str] = []
    for system, (daemon_argv, instance_yaml) in _stacks(stock_instance_yaml()).items():
        config = yaml.safe_load(instance_yaml)
        queue = config["run_coordinator"]["config"]
        queue["max_concurrent_runs"] = max(queue["max_concurrent_runs"], max(sizes.sessions) + 1)
        for limit in queue["tag_concurrency_limits"]:
            if limit["value"] == "paper":
                limit["limit"] = max(limit["limit"], max(sizes.sessions) + 1)
        with stack_env(f"sessions-{system}", yaml.safe_dump(config), redis_db) as env:
            slots = str(max(sizes.sessions) + 1)
            # one pool process per session: slow to fork under load
            worker = WorkerProcess.start(
                "paper", f"bench-paper-{system}", env, "-c", slots, ready_timeout=300
            )
            try:
                with stack_daemon([*daemon_argv, "-w", "workspace.yaml"], env) as d:
                    held = _idle(idle, system, d.pid, env, sizes.idle_seconds)
                    connections.append(f"{system}: {held}")
                    _sessions(sessions, system, env, sizes)
            finally:
                worker.stop()
    idle.notes.append(
        "Postgres connections to the stack's database, by application_name: "
        + "; ".join(connections)
    )
    return sessions, idle


def _ready(daemon_pid: int) -> None:
    """Until the daemon's sensor and run queue loops have sent heartbeats."""
    with dg.DagsterInstance.get() as instance:
        wait_for(
            lambda: {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(instance.get_daemon_heartbeats()),
            180,
            f"daemon {daemon_pid} heartbeats",
            interval=0.5,
        )


def _idle(curve: Curve, system: str, daemon_pid: int, env: dict[str, str], seconds: float) -> str:
    """Measure the idle stack; the Postgres connections it holds, by application."""
    _ready(daemon_pid)
    time.sleep(min(seconds, 15.0))  # past start-up work (first sensor ticks, code loads)
    pids = tree(daemon_pid)
    before, began = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)  # the measurement window
    used = cpu_seconds(tree(daemon_pid)) - before
    share = 100 * used / (time.monotonic() - began)
    connections = postgres_connections(env["ALPHASWARM_POSTGRES_URL"])
    _log(f"idle {system}: {share:.1f}% of a core, {sum(connections.values())} connections")
    curve.put("idle", system, "daemon CPU (% of a core)", share)
    curve.put("idle", system, "Postgres connections", sum(connections.values()))
    curve.put("idle", system, "daemon tree USS (MiB)", uss_bytes(tree(daemon_pid)) / MIB)
    return ", ".join(f"{name or '(unnamed)'} {count}" for name, count in connections.items())


def _sessions(curve: Curve, system: str, env: dict[str, str], sizes: Sizes) -> None:
    client = redis.Redis.from_url(env["ALPHASWARM_REDIS_URL"])
    engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"])
    try:
        with dg.DagsterInstance.get() as instance:
            with _running(client, engine, instance, 1) as (ids, pids):  # warm-up
                _tick(client, engine, ids, 1.0, pids)
            for size in sizes.sessions:
                try:
                    with _running(client, engine, instance, size) as (ids, pids):
                        latencies, uss = _tick(client, engine, ids, sizes.tick_seconds, pids)
                except AssertionError as exc:  # did not come up (or down) in time: say so
                    curve.notes.append(f"{system}, {size} sessions: not measured: {exc}")
                    _log(f"sessions {size} {system}: not measured: {exc}")
                    break  # a larger point would not either
                per_session = uss / size / MIB
                p50, p99 = (1000 * _quantile(latencies, q) for q in (0.5, 0.99))
                _log(f"sessions {size} {system}: {per_session:.1f} MiB/session, p99 {p99:.1f} ms")
                curve.put(size, system, "USS per session (MiB)", per_session)
                curve.put(size, system, "tick latency p50 (ms)", p50)
                curve.put(size, system, "tick latency p99 (ms)", p99)
    finally:
        client.close()
        engine.dispose()


@contextmanager
def _running(
    client: redis.Redis, engine: sa.Engine, instance: dg.DagsterInstance, count: int
) -> Iterator[tuple[list[str], list[int]]]:
    """`count` paper sessions started through the request stream, running (their ledger row
    says so): their ids and their run processes (the pid of each run's RUN_START event);
    stopped and their runs finished afterwards."""
    ids = [f"scale-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for session_id in ids:
        start = paper_start(session_id, f"req-{session_id}")
        append_request(client, start)
    query = sa.text(
        "SELECT count(*) FROM paper_sessions WHERE session_id = ANY(:ids) AND status = 'running'"
    )

    def running() -> bool:
        try:
            with engine.connect() as conn:
                return conn.execute(query, {"ids": ids}).scalar_one() == count
        except sa.exc.ProgrammingError:  # the ledger's tables are not created yet
            return False

    try:
        wait_for(running, 120 + 3 * count, f"{count} sessions running", interval=0.5)
        runs = [
            run
            for session_id in ids
            for run in instance.get_runs(
                filters=dg.RunsFilter(tags={REQUEST_ID_TAG: f"req-{session_id}"})
            )
        ]
        yield ids, [_run_pid(instance, run.run_id) for run in runs]
    finally:
        for session_id in ids:
            client.set(session_stop_key(session_id), "benchmark done", ex=600)
        tags = [{REQUEST_ID_TAG: f"req-{s}"} for s in ids]
        wait_for(
            lambda: all(
                run.is_finished
                for t in tags
                for run in instance.get_runs(filters=dg.RunsFilter(tags=t))
            ),
            180,
            f"{count} session runs to finish",
            interval=0.5,
        )


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run's coordinator process: the process that wrote its RUN_START."""
    records = wait_for(
        lambda: instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START),
        60,
        f"RUN_START of {run_id}",
    )
    return records[0].dagster_event.pid


def _tick(
    client: redis.Redis, engine: sa.Engine, ids: list[str], seconds: float, pids: list[int]
) -> tuple[list[float], float]:
    """Append TICKS_PER_SECOND ticks/s over `ids` for `seconds`. The latencies (s) of the
    ticks with an order (append -> handled in the ledger), and the USS of the run processes
    `pids` with their children (median of samples at a quarter, half and three quarters of
    the time)."""
    sent: dict[tuple[str, str], float] = {}
    samples: list[int] = []
    total = int(TICKS_PER_SECOND * seconds)
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / TICKS_PER_SECOND - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the producer's schedule
        if i in (total // 4, total // 2, 3 * total // 4):
            samples.append(uss_bytes(p for pid in pids for p in tree(pid)))
        session_id = ids[i % len(ids)]
        orders = (OrderIntent("buy" if i % 2 else "sell", 1.0),) if i % ORDER_EVERY == 0 else ()
        at = time.time()
        append_tick(client, session_id, Tick(f"t{i}", "BTC-USD", 100.0 + i % 7, orders, at))
        if orders:
            sent[(session_id, f"t{i}")] = at
    query = sa.text(
        "SELECT session_id, tick_id, handled_at FROM paper_ticks WHERE session_id = ANY(:ids)"
    )

    def handled() -> list | None:
        with engine.connect() as conn:
            rows = conn.execute(query, {"ids": ids}).all()
        return rows if len(rows) >= len(sent) else None

    rows = wait_for(handled, 120, f"{len(sent)} ticks handled", interval=0.5)
    latencies = [at.timestamp() - sent[(sid, t)] for sid, t, at in rows if (sid, t) in sent]
    return latencies, statistics.median(samples)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# -- ledger backlog --------------------------------------------------------------------------


def ledger(sizes: Sizes) -> Curve:
    curve = Curve(
        "ledger",
        "ledger mirror: draining a backlog of N runs into an empty ledger",
        "runs",
        ["bare read", "ours"],
        ["runs/s", "seconds per 1000 runs"],
        "bare read",
        notes=[
            "bare read: the same events read batch by batch, nothing written (the floor). "
            "ours: the ledger mirror. Target: >= 500 runs/s and <= 2x the floor.",
        ],
    )
    for drain in ledger_mirror.drains(sizes.ledger):
        _log(f"ledger {drain.runs}: {drain.mirror_rate:.0f} runs/s, {drain.ratio:.2f}x the read")
        size = drain.runs
        curve.put(size, "bare read", "runs/s", drain.read_rate)
        curve.put(size, "ours", "runs/s", drain.mirror_rate)
        curve.put(size, "bare read", "seconds per 1000 runs", 1000 / drain.read_rate)
        curve.put(size, "ours", "seconds per 1000 runs", 1000 / drain.mirror_rate)
    return curve


# -- the command -----------------------------------------------------------------------------

CURVES = ("fanout", "queue", "sessions", "ledger")


def write(out: Path, curves: list[Curve], small: bool, minutes: float) -> str:
    """The table (markdown), scale.json and a PNG per curve in `out`; the table's text."""
    header = (
        f"# Scale curves ({'--small' if small else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {minutes:.1f} min, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    text = "\n\n".join([header, *(curve.table() for curve in curves)]) + "\n"
    (out / "scale.md").write_text(text)
    (out / "scale.json").write_text(
        json.dumps({curve.key: curve.as_json() for curve in curves}, indent=1)
    )
    for curve in curves:
        curve.plot(out / f"{curve.key}.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke check")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale")
    parser.add_argument("--redis-db", type=int, default=12, help="uses this DB and the next")
    parser.add_argument("--only", choices=CURVES, action="append", help="only these curves")
    parser.add_argument(
        "--fanout-system",
        choices=FANOUT_SYSTEMS,
        action="append",
        help="only these systems in the fan-out curve (e.g. ours before/after a change)",
    )
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))  # worker logs
    measures = {
        "fanout": lambda: [fanout(sizes, args.redis_db, work, args.fanout_system)],
        "queue": lambda: [queued_runs(sizes, args.redis_db)],
        "sessions": lambda: list(sessions_and_idle(sizes, args.redis_db)),
        "ledger": lambda: [ledger(sizes)],
    }
    started = time.monotonic()
    curves: list[Curve] = []
    for name in CURVES:
        if name in (args.only or CURVES):
            curves += measures[name]()
            # written after each curve: a failure later keeps what was measured
            text = write(args.out, curves, args.small, (time.monotonic() - started) / 60)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
