"""Growth curves: cost as work grows, each point side by side with stock Dagster where stock
can run it. One command; a table (printed, and as markdown) and a PNG plot per curve.

    python -m benchmarks.scale [--out DIR]   # the issue's sizes, budgets adding up to 35 min
    python -m benchmarks.scale --small       # tiny sizes (a smoke check, about 5 minutes)
    python -m benchmarks.scale --only queue ledger   # some curves (or --only queue,ledger)

Needs the machine's Redis (DBs --redis-db and the next, flushed) and Postgres (throw-away
databases). Each curve has a time budget (Sizes.budgets): a point estimated not to fit in
what is left is not measured (the table's notes say so), and every wait ends at a deadline
in proportion to the point's size, cut to the budget. Progress: timestamped lines on stderr.
Curves:

- fan-out: one run of N independent steps on W workers x 4 (executor.py's fan job):
  in-process executor, stock dagster-celery (`celery worker`), ours (`alphaswarm-orch
  worker`); wall per step, and that figure against the curve's first point.
- queued runs: N runs queued at once (benchmarks/scale_location.py's sensor) for the daemon
  to launch: stock `dagster-daemon run` with Dagster's defaults (DefaultRunLauncher, run
  queue 10 at a time, dequeue every 5 s; only up to Sizes.queue_stock runs) vs ours
  (`alphaswarm-orch daemon`, the repo's dagster.yaml); launch rate from the first run
  created to the last run started, and time to drain (to the last run finished).
- paper sessions: N sessions started through the paper request stream, ticked at 1,000
  ticks/s in total (1 in 10 with an order) on one paper worker; USS per session of the
  sessions' run coordinators, tick latency (append -> ledger write of a tick with an order)
  and Postgres connections per session. A point whose stack would not fit in the Postgres
  server's free connections (max_connections) is left out with a note naming the setting.
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
from collections.abc import Callable, Iterator
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
    server_connections,
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
    budgets: dict[str, float]
    """Minutes each curve may take (the sessions curve's includes the idle stack): a point
    that would not fit in what is left is not measured (a note says so), and waits end there."""


FULL = Sizes(
    [50, 200, 1000],
    4,
    [10, 100, 1000],
    10,
    [1, 10, 50],
    10,
    [10_000, 100_000],
    60,
    {"fanout": 8, "queue": 10, "sessions": 9, "ledger": 8},
)
"""The issue's sizes, in 35 minutes of budgets (README, Scale)."""
SMALL = Sizes(
    [5, 10],
    1,
    [2, 4],
    4,
    [1, 2],
    2,
    [200, 400],
    5,
    {"fanout": 4, "queue": 4, "sessions": 5, "ledger": 2},
)


class OverBudget(Exception):
    """A point would not fit in (or did not finish within) its curve's time budget."""


class Budget:
    """A curve's time budget: progress lines with the time spent and left, and the deadline
    every wait of the curve is bounded by."""

    def __init__(self, curve: str, minutes: float) -> None:
        self.curve = curve
        self.seconds = 60 * minutes
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def log(self, message: str) -> None:
        _log(f"{self.curve} [{self.elapsed():.0f}/{self.seconds:.0f} s] {message}")

    def timeout(self, proportional: float) -> float:
        """A wait's timeout: `proportional` (seconds, in proportion to the point's size), cut
        to what is left of the budget (at least a few seconds, to finish cleanly)."""
        return max(5.0, min(proportional, self.left()))

    def check(self, point: str, estimate: float) -> None:
        """Raise OverBudget when `point`, estimated at `estimate` seconds, would not fit."""
        if estimate > self.left():
            raise OverBudget(
                f"{point}: not measured: estimated {estimate:.0f} s, {self.left():.0f} s left "
                f"of the curve's {self.seconds / 60:.0f}-minute budget"
            )


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
                ratio = "-" if ours is None or base is None else "n/a" if base == 0 else ""
                ratio = ratio or f"{ours / base:.2f}x"
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


def fanout(
    sizes: Sizes, redis_db: int, work: Path, budget: Budget, systems: list[str] | None = None
) -> Curve:
    workers = sizes.fanout_workers
    curve = Curve(
        "fanout",
        f"fan-out: one run of N independent steps, {workers} worker(s) x 4",
        "steps",
        ["in-process", "stock", "ours"],
        ["wall per step (ms)", "per step vs first point (x)", "CPU per step (ms)", "wall (s)"],
        "stock",
    )
    # Ours first: when the budget runs short, stock's largest point is the one left out.
    kinds = {"ours": "alphaswarm", "in-process": "in-process", "stock": "stock"}
    kinds = {system: kind for system, kind in kinds.items() if system in (systems or kinds)}
    yaml_text = (REPO / "dagster.yaml").read_text()
    with stack_env("fanout", yaml_text, redis_db) as _env, dg.DagsterInstance.get() as instance:
        for system, kind in kinds.items():
            celery = kind in ("stock", "alphaswarm")
            with executor.workers(kind, work, workers) if celery else nullcontext():
                warm, _ = executor.execute(instance, "fan", kind, sizes.fanout[0])  # warm-up
                per_step = warm / sizes.fanout[0]
                for size in sizes.fanout:
                    try:
                        budget.check(f"{size} steps, {system}", per_step * size)
                    except OverBudget as exc:
                        curve.notes.append(str(exc))
                        budget.log(str(exc))
                        break
                    cpu = cpu_seconds(tree(os.getpid()))  # this process (the run) + workers
                    wall, _ = executor.execute(instance, "fan", kind, size)
                    cpu = cpu_seconds(tree(os.getpid())) - cpu
                    per_step = wall / size
                    curve.put(size, system, "CPU per step (ms)", 1000 * cpu / size)
                    budget.log(f"{size} steps, {system}: {wall:.2f} s")
                    curve.put(size, system, "wall (s)", wall)
                    curve.put(size, system, "wall per step (ms)", 1000 * wall / size)
                    first = curve.values[(sizes.fanout[0], system, "wall per step (ms)")]
                    ratio = 1000 * wall / size / first
                    curve.put(size, system, "per step vs first point (x)", ratio)
    curve.sizes.sort(key=int)
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


def queued_runs(sizes: Sizes, redis_db: int, budget: Budget) -> Curve:
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
            try:
                # warm-up (code server, forkserver): (runs, seconds to drain) of each burst
                drained = [(1, _burst(client, instance, 1, budget.timeout(180))[2])]
                for size in sizes.queue:
                    if system == "stock" and size > sizes.queue_stock:
                        continue
                    point = f"{size} runs, {system}"
                    budget.check(point, _drain_estimate(drained, size))
                    created, started, ended = _burst(
                        client, instance, size, budget.timeout(60 + 2 * size)
                    )
                    drained.append((size, ended))
                    budget.log(f"{point}: launched in {started:.1f} s, drained {ended:.1f} s")
                    curve.put(size, system, "queue rate (runs/s)", size / created)
                    curve.put(size, system, "launch rate (runs/s)", size / started)
                    curve.put(size, system, "time to drain (s)", ended)
            except OverBudget as exc:  # a larger point would not fit either
                curve.notes.append(str(exc))
                budget.log(str(exc))
            finally:
                client.close()
    if sizes.queue_stock < max(sizes.queue):
        curve.notes.append(
            f"stock is run up to {sizes.queue_stock} runs only: it launches one fresh process "
            "per run, 10 at a time, every 5 s (about 0.12 runs/s here): 100 runs would take "
            "over 10 minutes, more than the curve's budget."
        )
    curve.notes.append(
        "The sensor returns the N run requests in one tick; the sensor daemon then creates and "
        "queues them one by one. Queue rate: N / seconds from the first run created to the "
        "last; launch rate: N / seconds from the first run created to the last run's start "
        "(RUN_START); time to drain: to the last run's end."
    )
    return curve


def _drain_estimate(drained: list[tuple[int, float]], size: int) -> float:
    """Seconds `size` runs would take to drain, extrapolated from the last two bursts
    (fixed cost + a cost per run); 0 (no estimate) after the warm-up alone."""
    if len(drained) < 2:
        return 0.0
    (n0, t0), (n1, t1) = drained[-2:]
    per_run = max(0.0, (t1 - t0) / (n1 - n0))
    return t1 + per_run * (size - n1)


FINISHED_STATUSES = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


def _burst(
    client: redis.Redis, instance: dg.DagsterInstance, size: int, timeout: float
) -> tuple[float, float, float]:
    """Queue `size` runs at once; wait (up to `timeout` s) until all finished. Seconds from
    the first run created to the last run created, started, and ended.

    The wait polls one count of the batch's finished runs (a query whose cost does not
    depend on how often it is asked), and reads the runs' records once, at the end."""
    batch = uuid.uuid4().hex[:10]
    client.set(BURST_KEY, f"{batch}:{size}")
    finished = dg.RunsFilter(tags={BATCH_TAG: batch}, statuses=FINISHED_STATUSES)
    began = time.monotonic()
    try:
        wait_for(
            lambda: instance.get_runs_count(filters=finished) >= size,
            timeout,
            f"{size} queued runs to finish",
            interval=0.5,
        )
    except AssertionError as exc:
        done = instance.get_runs_count(filters=finished)
        created = instance.get_runs_count(filters=dg.RunsFilter(tags={BATCH_TAG: batch}))
        raise OverBudget(
            f"{size} runs: not measured: {created} created and {done} finished after "
            f"{time.monotonic() - began:.0f} s ({exc})"
        ) from exc
    records = instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: batch}))
    failed = [r.dagster_run.run_id for r in records if not r.dagster_run.is_success]
    if failed:
        raise RuntimeError(f"{len(failed)} of {size} queued runs failed, e.g. {failed[0]}")
    first = min(r.create_timestamp.timestamp() for r in records)
    created = max(r.create_timestamp.timestamp() for r in records) - first
    started = max(r.start_time or 0.0 for r in records) - first
    ended = max(r.end_time or 0.0 for r in records) - first
    return max(created, 1e-3), started, ended


# -- sessions and the idle stack -------------------------------------------------------------


CONNECTIONS_PER_SESSION = 2.0
"""Postgres connections a session is assumed to open before a point has measured it."""
STACK_CONNECTIONS = 30
"""Postgres connections a stack holds besides one per paper worker pool process (the daemon,
its code server and loops: about 22 measured, with margin)."""


def sessions_and_idle(sizes: Sizes, redis_db: int, budget: Budget) -> tuple[Curve, Curve]:
    sessions = Curve(
        "sessions",
        f"paper sessions: N at once, {TICKS_PER_SECOND} ticks/s in total",
        "sessions",
        ["stock", "ours"],
        [
            "USS per session (MiB)",
            "tick latency p50 (ms)",
            "tick latency p99 (ms)",
            "Postgres connections per session",
        ],
        "stock",
        notes=[
            "USS per session: of the sessions' run processes (the run coordinators; each the "
            "process that wrote its run's RUN_START) with their children, over N (target: <= "
            "30 MiB); the daemon's own tree is in the idle stack's table. Tick "
            f"latency: ticks with an order (1 in {ORDER_EVERY}), append -> ledger write. "
            "Postgres connections per session: connections to the stack's database while the "
            "sessions run, minus the idle stack's, over N.",
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
    # Ours first: stock's 50 sessions (a fresh process each) may use up the budget.
    for system, (daemon_argv, instance_yaml) in reversed(_stacks(stock_instance_yaml()).items()):
        counts = _fitting(sessions, system, sizes.sessions)
        if not counts:
            continue
        largest = max(counts)
        config = yaml.safe_load(instance_yaml)
        queue = config["run_coordinator"]["config"]
        queue["max_concurrent_runs"] = max(queue["max_concurrent_runs"], largest + 1)
        for limit in queue["tag_concurrency_limits"]:
            if limit["value"] == "paper":
                limit["limit"] = max(limit["limit"], largest + 1)
        slots = largest + 1  # one pool process per session (and one spare)
        with stack_env(f"sessions-{system}", yaml.safe_dump(config), redis_db) as env:
            # one pool process per session: slow to fork under load
            worker = WorkerProcess.start(
                "paper", f"bench-paper-{system}", env, "-c", str(slots), ready_timeout=300
            )
            try:
                with stack_daemon([*daemon_argv, "-w", "workspace.yaml"], env) as d:
                    held, by_name = _idle(idle, system, d.pid, env, sizes.idle_seconds, budget)
                    connections.append(f"{system}: {by_name}")
                    _sessions(sessions, system, env, counts, sizes.tick_seconds, budget, held)
            finally:
                worker.stop()
    idle.notes.append(
        "Postgres connections to the stack's database, by application_name: "
        + "; ".join(connections)
    )
    return sessions, idle


def _stack_connections(sessions: int) -> int:
    """Postgres connections a stack for `sessions` sessions needs: its paper worker's pool
    (a connection per process), the daemon's, and the sessions' own (estimated)."""
    return sessions + 1 + STACK_CONNECTIONS + math.ceil(CONNECTIONS_PER_SESSION * sessions)


def _fitting(curve: Curve, system: str, counts: list[int]) -> list[int]:
    """The session counts whose stack fits in the Postgres server's free connections; a
    note, naming the setting, for each that does not (instead of "too many clients" half
    way through the curve)."""
    server = server_connections()
    fitting = [n for n in counts if _stack_connections(n) <= server.free]
    for n in counts:
        if n not in fitting:
            message = (
                f"{n} sessions, {system}: not measured: needs about {_stack_connections(n)} "
                f"Postgres connections ({n + 1} paper worker pool processes, "
                f"{STACK_CONNECTIONS} for the daemon, {CONNECTIONS_PER_SESSION:.0f} per session); "
                f"the server has max_connections = {server.max_connections} "
                f"({server.reserved} reserved, {server.in_use} in use by the machine's other "
                "work): raise max_connections (postgresql.conf, needs a restart)"
            )
            curve.notes.append(message)
            _log(message)
    return fitting


def _ready(daemon_pid: int) -> None:
    """Until the daemon's sensor and run queue loops have sent heartbeats."""
    with dg.DagsterInstance.get() as instance:
        wait_for(
            lambda: {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= set(instance.get_daemon_heartbeats()),
            180,
            f"daemon {daemon_pid} heartbeats",
            interval=0.5,
        )


def _idle(
    curve: Curve, system: str, daemon_pid: int, env: dict[str, str], seconds: float, budget: Budget
) -> tuple[int, str]:
    """Measure the idle stack; the Postgres connections it holds: how many, by application."""
    _ready(daemon_pid)
    time.sleep(min(seconds, 15.0))  # past start-up work (first sensor ticks, code loads)
    pids = tree(daemon_pid)
    before, began = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)  # the measurement window
    used = cpu_seconds(tree(daemon_pid)) - before
    share = 100 * used / (time.monotonic() - began)
    connections = postgres_connections(env["ALPHASWARM_POSTGRES_URL"])
    budget.log(f"idle {system}: {share:.1f}% of a core, {sum(connections.values())} connections")
    curve.put("idle", system, "daemon CPU (% of a core)", share)
    curve.put("idle", system, "Postgres connections", sum(connections.values()))
    curve.put("idle", system, "daemon tree USS (MiB)", uss_bytes(tree(daemon_pid)) / MIB)
    by_name = ", ".join(f"{name or '(unnamed)'} {n}" for name, n in connections.items())
    return sum(connections.values()), by_name


def _sessions(
    curve: Curve,
    system: str,
    env: dict[str, str],
    counts: list[int],
    tick_seconds: float,
    budget: Budget,
    held: int,
) -> None:
    """Each point of the curve on one stack; `held`: the idle stack's Postgres connections."""
    client = redis.Redis.from_url(env["ALPHASWARM_REDIS_URL"])
    engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"], poolclass=sa.NullPool)
    postgres_url = env["ALPHASWARM_POSTGRES_URL"]
    per_session = CONNECTIONS_PER_SESSION
    per_point = 3.0 + tick_seconds  # seconds per session of a point, before one is measured
    try:
        with dg.DagsterInstance.get() as instance:
            try:
                with _running(client, engine, instance, 1, budget) as (ids, pids):  # warm-up
                    _tick(client, engine, ids, 1.0, pids, budget, postgres_url)
            except AssertionError as exc:  # not up (or done) within the budget
                curve.notes.append(f"{system}: no session measured: warm-up: {exc}")
                budget.log(f"{system}: no session measured: warm-up: {exc}")
                return
            for size in counts:
                point = f"{size} sessions, {system}"
                try:
                    _check_connections(point, size, max(per_session, 1.0))
                    # start-up, ticks, stop: as long a session as the point before's
                    budget.check(point, per_point * size)
                    began = time.monotonic()
                    with _running(client, engine, instance, size, budget) as (ids, pids):
                        latencies, uss, most = _tick(
                            client, engine, ids, tick_seconds, pids, budget, postgres_url
                        )
                except (AssertionError, OverBudget) as exc:  # did not fit, or not in time
                    curve.notes.append(f"{point}: not measured: {exc}")
                    budget.log(f"{point}: not measured: {exc}")
                    break  # a larger point would not either
                per_session = max(most - held, 0) / size
                per_point = (time.monotonic() - began) / size
                uss_per_session = uss / size / MIB
                p50, p99 = (1000 * _quantile(latencies, q) for q in (0.5, 0.99))
                budget.log(
                    f"{point}: {uss_per_session:.1f} MiB/session, p99 {p99:.1f} ms, "
                    f"{per_session:.2f} Postgres connections/session ({most} in all)"
                )
                curve.put(size, system, "USS per session (MiB)", uss_per_session)
                curve.put(size, system, "tick latency p50 (ms)", p50)
                curve.put(size, system, "tick latency p99 (ms)", p99)
                curve.put(size, system, "Postgres connections per session", per_session)
    finally:
        client.close()
        engine.dispose()


def _check_connections(point: str, size: int, per_session: float) -> None:
    """Raise OverBudget, naming the setting, when `size` sessions at `per_session` Postgres
    connections each would not fit in the server's max_connections (rather than fail with
    "too many clients" half way)."""
    server = server_connections()
    need = math.ceil(per_session * size)
    if need > server.free:
        raise OverBudget(
            f"{point} need about {need} more Postgres connections ({per_session:.1f} per "
            f"session); the server has max_connections = {server.max_connections} "
            f"({server.reserved} reserved, {server.in_use} in use, shared with the machine's "
            "other work): raise max_connections (postgresql.conf, needs a restart)"
        )


@contextmanager
def _running(
    client: redis.Redis, engine: sa.Engine, instance: dg.DagsterInstance, count: int, budget: Budget
) -> Iterator[tuple[list[str], list[int]]]:
    """`count` paper sessions started through the request stream, running (their ledger row
    says so): their ids and their run processes (the pid of each run's RUN_START event);
    stopped and their runs finished afterwards."""
    ids = [f"scale-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    requests = [f"req-{session_id}" for session_id in ids]
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
        wait_for(running, budget.timeout(60 + 3 * count), f"{count} sessions running", 0.5)
        runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_ID_TAG: requests}))
        yield ids, [_run_pid(instance, run.run_id) for run in runs]
    finally:
        for session_id in ids:
            client.set(session_stop_key(session_id), "benchmark done", ex=600)
        unfinished = dg.RunsFilter(
            tags={REQUEST_ID_TAG: requests},
            statuses=[s for s in dg.DagsterRunStatus if s not in FINISHED_STATUSES],
        )
        wait_for(
            lambda: instance.get_runs_count(filters=unfinished) == 0,
            60 + 4 * count,  # stopping: not cut by the budget (50 stock sessions: over 100 s)
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
    client: redis.Redis,
    engine: sa.Engine,
    ids: list[str],
    seconds: float,
    pids: list[int],
    budget: Budget,
    postgres_url: str,
) -> tuple[list[float], float, int]:
    """Append TICKS_PER_SECOND ticks/s over `ids` for `seconds`. The latencies (s) of the
    ticks with an order (append -> handled in the ledger), and the USS of the run processes
    `pids` with their children (median of samples at a quarter, half and three quarters of
    the time), and the most Postgres connections to the stack's database in those samples."""
    sent: dict[tuple[str, str], float] = {}
    samples: list[int] = []
    most = 0
    total = int(TICKS_PER_SECOND * seconds)
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / TICKS_PER_SECOND - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the producer's schedule
        if i in (total // 4, total // 2, 3 * total // 4):
            samples.append(uss_bytes(p for pid in pids for p in tree(pid)))
            most = max(most, sum(postgres_connections(postgres_url).values()))
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

    rows = wait_for(handled, budget.timeout(120), f"{len(sent)} ticks handled", interval=0.5)
    latencies = [at.timestamp() - sent[(sid, t)] for sid, t, at in rows if (sid, t) in sent]
    return latencies, statistics.median(samples), most


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# -- ledger backlog --------------------------------------------------------------------------


def ledger(sizes: Sizes, budget: Budget) -> Curve:
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
    spent: list[tuple[int, float]] = []  # (runs, seconds the point took: build, reads, drain)

    def check(runs: int) -> None:
        began = budget.elapsed()
        if spent:  # in proportion: building, reading and mirroring are linear in the runs
            last_runs, last_s = spent[-1]
            budget.check(f"{runs} runs", last_s * runs / last_runs)
        budget.log(f"{runs} runs: building the backlog")
        spent.append((runs, -began))

    try:
        for drain in ledger_mirror.drains(sizes.ledger, check=check, log=budget.log):
            runs, began = spent[-1]
            spent[-1] = (runs, budget.elapsed() + began)
            budget.log(
                f"{drain.runs} runs: read {drain.read_s:.1f} s, mirror {drain.mirror_s:.1f} s: "
                f"{drain.mirror_rate:.0f} runs/s, {drain.ratio:.2f}x the read"
            )
            size = drain.runs
            curve.put(size, "bare read", "runs/s", drain.read_rate)
            curve.put(size, "ours", "runs/s", drain.mirror_rate)
            curve.put(size, "bare read", "seconds per 1000 runs", 1000 / drain.read_rate)
            curve.put(size, "ours", "seconds per 1000 runs", 1000 / drain.mirror_rate)
    except OverBudget as exc:
        curve.notes.append(str(exc))
        budget.log(str(exc))
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


def _curve_names(text: str) -> list[str]:
    """`--only`'s value: curve names, comma-separated."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CURVES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown curve {', '.join(unknown) or repr(text)}: choose from {', '.join(CURVES)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke check")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale")
    parser.add_argument("--redis-db", type=int, default=12, help="uses this DB and the next")
    parser.add_argument(
        "--only",
        type=_curve_names,
        nargs="+",
        action="extend",
        metavar="CURVE",
        help=f"only these curves ({', '.join(CURVES)}): --only queue ledger, --only queue,ledger",
    )
    parser.add_argument(
        "--fanout-system",
        choices=FANOUT_SYSTEMS,
        action="append",
        help="only these systems in the fan-out curve (e.g. ours before/after a change)",
    )
    args = parser.parse_args(argv)
    only = {name for names in args.only or [list(CURVES)] for name in names}
    sizes = SMALL if args.small else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))  # worker logs
    measures: dict[str, Callable[[Budget], list[Curve]]] = {
        "fanout": lambda b: [fanout(sizes, args.redis_db, work, b, args.fanout_system)],
        "queue": lambda b: [queued_runs(sizes, args.redis_db, b)],
        "sessions": lambda b: list(sessions_and_idle(sizes, args.redis_db, b)),
        "ledger": lambda b: [ledger(sizes, b)],
    }
    chosen = [name for name in CURVES if name in only]
    total = sum(sizes.budgets[name] for name in chosen)
    _log(f"curves {', '.join(chosen)}: budgets add up to {total:.0f} min")
    started = time.monotonic()
    curves: list[Curve] = []
    text = ""
    for name in chosen:
        budget = Budget(name, sizes.budgets[name])
        budget.log("start")
        measured = measures[name](budget)
        minutes = budget.elapsed() / 60
        for curve in measured:
            curve.notes.append(
                f"{name} curve measured in {minutes:.1f} min (budget {sizes.budgets[name]:.0f})."
            )
        budget.log(f"done in {minutes:.1f} min")
        curves += measured
        # written after each curve: a failure later keeps what was measured
        text = write(args.out, curves, args.small, (time.monotonic() - started) / 60)
    print(text)
    _log(f"all curves done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
