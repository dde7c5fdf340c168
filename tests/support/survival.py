"""Sessions under worker operations, on real workers, runs, Redis and Postgres.

Shared by the scenario tests (tests/sessions/test_survival.py) and the benchmark
(benchmarks/session_survival.py). A scenario starts session runs (`dagster job execute`, the
run process, whose step goes to Celery) while only the "first" worker of each queue is up,
so every session runs there; then starts a spare worker per queue, ticks every session at a
steady rate (one order per tick), disrupts the first worker and watches the sessions go on.
At the end it stops the sessions through their stop key and checks every one of them.

With `start_daemon()` the sessions can instead be queued runs that `alphaswarm-orch daemon`
launches (`launch(family, queued=True)`, as the request sensors do), and `roll_out()` restarts
that daemon the way a container teardown does (tests/support/rollout.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg
import redis
import sqlalchemy as sa
import yaml

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.sessions.ticks import OrderIntent, Tick, append_tick
from alphaswarm_orch.tags import REQUEST_ID_TAG
from tests.support import rollout
from tests.support.ops import kill_tree
from tests.support.processes import free_port
from tests.support.runs import REPO, execute_job_argv, wait_for
from tests.support.workers import WorkerProcess

DEFINITIONS = "alphaswarm_orch.definitions"
TICKS_PER_SECOND = 20.0
"""Per session, as in production."""

RUN_TIMEOUT = 180.0
STARTING_CASH = 1_000_000.0

StartWorker = Callable[..., WorkerProcess]


@dataclass
class Session:
    family: str
    session_id: str
    run: subprocess.Popen | None
    """The run process (`dagster job execute`); None for a run the daemon launched."""
    appended: list[tuple[str, float]] = field(default_factory=list)
    """(tick id, time.time() at append), in order."""
    run_id: str | None = None
    """The run's id, for a run the daemon launched."""


class Cluster:
    """Workers, session runs and a tick producer for one scenario."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        start_worker: StartWorker,
        code_dir: Path = REPO,
        instance: dg.DagsterInstance | None = None,
    ) -> None:
        self.env = {**env, "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex[:8]}"}
        if code_dir != REPO:  # an older checkout of the code ("before" in the benchmark)
            self.env["PYTHONPATH"] = str(code_dir)
        self.tmp = tmp
        self.code_dir = code_dir
        self.start_worker = start_worker
        self.client = redis.Redis.from_url(env["ALPHASWARM_BROKER_URL"])
        self.engine = sa.create_engine(env["ALPHASWARM_POSTGRES_URL"])
        self.sessions: list[Session] = []
        self._producing = threading.Event()
        self._producer: threading.Thread | None = None
        self._instance_ready = False
        self.instance = instance
        """Needed for queued runs (launched by the daemon): their status and run workers."""
        self.daemon: subprocess.Popen | None = None
        self.daemon_logs: list[str] = []
        self.rollouts = 0

    # -- workers and runs -------------------------------------------------------------------

    def worker(self, queue: str, role: str) -> WorkerProcess:
        """A worker of `queue` (paper: 2 slots) with its own metrics port (`.metrics_port`)."""
        extra = ("--concurrency", "2") if queue == "paper" else ()
        name = f"{role}-{queue}-{uuid.uuid4().hex[:6]}"
        port = free_port()
        env = {**self.env, "ALPHASWARM_METRICS_PORT": str(port)}
        worker = self.start_worker(queue, name, *extra, env=env)
        worker.metrics_port = port  # type: ignore[attr-defined]
        return worker

    def prepare_instance(self) -> None:
        """Create the Dagster instance's tables once: run processes started together on an
        empty database would race to create them (`type "runs" already exists`)."""
        subprocess.run(
            [sys.executable, "-m", "dagster", "instance", "migrate"],
            cwd=self.code_dir,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
        self._instance_ready = True

    def start_daemon(self) -> None:
        """`alphaswarm-orch daemon` for the package's definitions (launches queued runs)."""
        self.daemon = rollout.start_daemon(self.env, self.daemon_logs, DEFINITIONS, self.code_dir)

    def roll_out(self, timeout: float = RUN_TIMEOUT, expect_resume: bool = True) -> None:
        """Restart the daemon as a container teardown does, killing the run workers of the
        queued sessions; returns once a new run worker of each re-attached to its step
        (without `expect_resume`, at once: for a daemon that does not resume runs)."""
        assert self.daemon is not None and self.instance is not None
        self.rollouts += 1
        run_ids = [s.run_id for s in self.sessions if s.run_id is not None]
        if not expect_resume:
            workers = [rollout.run_worker(self.instance, r) for r in run_ids]
            rollout.container_stop(self.daemon, workers, rollout.MODES[(self.rollouts - 1) % 3])
            self.daemon = rollout.start_daemon(
                self.env, self.daemon_logs, DEFINITIONS, self.code_dir
            )
            return
        self.daemon = rollout.roll_out(
            self.daemon,
            self.env,
            self.instance,
            run_ids,
            self.rollouts,
            self.daemon_logs,
            DEFINITIONS,
            timeout,
        )

    def run_finished(self, session: Session) -> bool:
        """A queued session's run has ended (whatever its status)."""
        assert self.instance is not None and session.run_id is not None
        run = self.instance.get_run_by_id(session.run_id)
        return run is not None and run.is_finished

    def run_messages(self, session: Session) -> list[str]:
        """The event messages of a queued session's run."""
        assert self.instance is not None and session.run_id is not None
        return [
            record.dagster_event.message or ""
            for record in self.instance.all_logs(session.run_id)
            if record.dagster_event is not None
        ]

    def launch(self, family: str, queued: bool = False) -> Session:
        """A session run: executed in its own process, or (`queued`) put on the run queue for
        the daemon to launch, as the request sensors do."""
        if not self._instance_ready:
            self.prepare_instance()
        session_id = f"{family}-{uuid.uuid4().hex[:8]}"
        config = {
            "request_id": f"req-{session_id}",
            "actor": "scenario",
            "session_id": session_id,
            "symbols": ["BTC-USD"],
            "starting_cash": STARTING_CASH,
        }
        path = self.tmp / f"{session_id}.yaml"
        path.write_text(yaml.safe_dump({"ops": {f"{family}_session": {"config": config}}}))
        argv = execute_job_argv(f"{family}_session_job", "-c", str(path))
        argv += ["--tags", json.dumps({REQUEST_ID_TAG: f"req-{session_id}"})]
        if queued:
            run_id = str(uuid.uuid4())
            argv[argv.index("execute")] = "launch"
            subprocess.run(
                [*argv, "--run-id", run_id],
                cwd=self.code_dir,
                env=self.env,
                check=True,
                capture_output=True,
                timeout=RUN_TIMEOUT,
            )
            session = Session(family, session_id, None, run_id=run_id)
            self.sessions.append(session)
            return session
        log = open(self.tmp / f"{session_id}.log", "w")  # noqa: SIM115 - the run's lifetime
        run = subprocess.Popen(
            argv, cwd=self.code_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        session = Session(family, session_id, run)
        self.sessions.append(session)
        return session

    def run_log(self, session: Session) -> str:
        if session.run is None:  # the daemon's run workers write to the daemon's output
            return "".join(Path(log).read_text(errors="replace") for log in self.daemon_logs)
        return (self.tmp / f"{session.session_id}.log").read_text(errors="replace")

    def _wait_run(self, session: Session, timeout: float) -> str | None:
        """Wait for the session's run to end; its problem, if it did not end well."""
        if session.run is None:
            assert self.instance is not None and session.run_id is not None
            run_id = session.run_id
            try:
                run = wait_for(
                    lambda: (r := self.instance.get_run_by_id(run_id)) and r.is_finished and r,
                    timeout,
                    f"run {run_id} to finish",
                )
            except AssertionError as exc:
                return str(exc)
            if run.status == dg.DagsterRunStatus.SUCCESS:
                return None
            events = "\n".join(self.run_messages(session)[-30:])
            return f"run {run_id} {run.status.value}\n{events}"
        try:
            code = session.run.wait(timeout)
        except subprocess.TimeoutExpired:
            session.run.kill()
            code = session.run.wait()
        return None if code == 0 else f"run exited {code}\n{self.run_log(session)[-3000:]}"

    # -- ticks ------------------------------------------------------------------------------

    def start_ticks(self) -> None:
        self._producing.set()
        self._producer = threading.Thread(target=self._produce, daemon=True)
        self._producer.start()

    def stop_ticks(self) -> None:
        self._producing.clear()
        if self._producer is not None:
            self._producer.join(10)

    def _produce(self) -> None:
        period = 1.0 / TICKS_PER_SECOND
        n = 0
        next_at = time.monotonic()
        while self._producing.is_set():
            for session in self.sessions:
                order = OrderIntent("buy", 2) if n % 2 else OrderIntent("sell", 1)
                tick = Tick(f"t{n}", "BTC-USD", 100.0 + n % 13, (order,))
                append_tick(self.client, session.session_id, tick)
                session.appended.append((tick.tick_id, time.time()))
            n += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the producer's rate, not a wait for a condition

    # -- what the ledger says ---------------------------------------------------------------

    def handled(self, session: Session) -> list[tuple[str, datetime]]:
        with self.engine.connect() as conn:
            try:
                rows = conn.execute(
                    sa.text(
                        "SELECT tick_id, handled_at FROM paper_ticks WHERE session_id = :s "
                        "ORDER BY handled_at"
                    ),
                    {"s": session.session_id},
                ).all()
            except sa.exc.ProgrammingError:
                return []  # not created yet
        return [(r[0], r[1]) for r in rows]

    def row(self, session: Session) -> dict | None:
        with self.engine.connect() as conn:
            try:
                row = conn.execute(
                    sa.text("SELECT * FROM paper_sessions WHERE session_id = :s"),
                    {"s": session.session_id},
                ).first()
            except sa.exc.ProgrammingError:
                return None  # not created yet
        return dict(row._mapping) if row is not None else None

    def handled_count(self, session: Session) -> int:
        return len(self.handled(session))

    def owner_pid(self, session: Session) -> int:
        row = self.row(session)
        assert row is not None and row["worker"], row
        return int(row["worker"].rsplit(" pid ", 1)[1])

    def wait_on(self, session: Session, node_prefix: str, status: tuple[str, ...]) -> dict:
        def there() -> dict | None:
            row = self.row(session)
            if row is None or row["status"] not in status:
                return None
            return row if str(row.get("worker") or "").startswith(node_prefix) else None

        return wait_for(there, RUN_TIMEOUT, f"{session.session_id} {status} on {node_prefix}")

    def wait_first_ticks(self) -> None:
        for session in self.sessions:
            wait_for(
                lambda s=session: self.handled_count(s) >= 5,
                RUN_TIMEOUT,
                f"first ticks of {session.session_id}\n{self.run_log(session)[-3000:]}",
            )

    def wait_all_handled(self, timeout: float = RUN_TIMEOUT) -> None:
        for session in self.sessions:
            wait_for(
                lambda s=session: self.handled_count(s) == len(s.appended),
                timeout,
                f"every tick of {session.session_id} handled",
            )

    # -- the end ----------------------------------------------------------------------------

    def stop_sessions(self) -> list[str]:
        """Stop every session; the problems of runs that did not end well."""
        problems = []
        for session in self.sessions:
            self.client.set(session_stop_key(session.session_id), "end of scenario")
        for session in self.sessions:
            problem = self._wait_run(session, RUN_TIMEOUT)
            if problem is not None:
                problems.append(f"{session.session_id}: {problem}")
        return problems

    def check(self, session: Session) -> list[str]:
        """0 ticks lost, 0 duplicate fills, cash and position equal to the fills."""
        problems = []
        sid = session.session_id
        handled = [tick_id for tick_id, _ in self.handled(session)]
        appended = [tick_id for tick_id, _ in session.appended]
        if sorted(handled) != sorted(appended):
            missing = set(appended) - set(handled)
            problems.append(f"{sid}: {len(missing)} ticks not handled, e.g. {sorted(missing)[:5]}")
        with self.engine.connect() as conn:
            fills = conn.execute(
                sa.text(
                    "SELECT tick_id, side, qty, price, fee FROM paper_fills WHERE session_id = :s"
                ),
                {"s": sid},
            ).all()
            cash, position = conn.execute(
                sa.text(
                    "SELECT s.cash, coalesce(p.qty, 0) FROM paper_sessions s LEFT JOIN "
                    "paper_positions p ON p.session_id = s.session_id WHERE s.session_id = :s"
                ),
                {"s": sid},
            ).one()
        per_tick: dict[str, int] = {}
        for fill in fills:
            per_tick[fill.tick_id] = per_tick.get(fill.tick_id, 0) + 1
        doubled = [t for t, count in per_tick.items() if count > 1]
        if doubled or len(fills) != len(appended):
            problems.append(f"{sid}: {len(fills)} fills for {len(appended)} ticks: {doubled[:5]}")
        signed = [f.qty if f.side == "buy" else -f.qty for f in fills]
        expected_cash = STARTING_CASH - sum(
            s * f.price + f.fee for s, f in zip(signed, fills, strict=True)
        )
        if abs(cash - expected_cash) > 1e-6 * STARTING_CASH or abs(position - sum(signed)) > 1e-9:
            problems.append(
                f"{sid}: cash {cash} / position {position}, fills say {expected_cash} / "
                f"{sum(signed)}"
            )
        info = {g["name"]: g for g in self.client.xinfo_groups(tick_stream(sid))}
        group = info.get(b"alphaswarm-session") or info.get("alphaswarm-session")
        if group is None or group["pending"] or group.get("lag"):
            problems.append(f"{sid}: ticks left in the stream: {group}")
        return problems

    def gaps(self, session: Session, since: float) -> tuple[float, float | None]:
        """(longest gap between handled ticks after `since`, seconds from `since` to the
        first tick handled after that gap)."""
        times = [at.timestamp() for _, at in self.handled(session)]
        after = [t for t in times if t >= since - 1.0]
        longest, resumed = 0.0, None
        for before, now in itertools.pairwise(after):
            if now - before > longest:
                longest, resumed = now - before, now - since
        return longest, resumed

    def close(self) -> None:
        self.stop_ticks()
        for session in self.sessions:
            self.client.set(session_stop_key(session.session_id), "cleanup", ex=600)
            if session.run is None:
                continue
            if session.run.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    session.run.wait(60)
            if session.run.poll() is None:
                session.run.kill()
                session.run.wait()
        if self.daemon is not None:
            for session in self.sessions:
                if session.run_id is not None:
                    self._wait_run(session, 60)
            assert self.instance is not None
            workers = [rollout.run_worker(self.instance, s.run_id) for s in self.sessions]
            rollout.container_stop(self.daemon, workers, "sigkill")
            for log in self.daemon_logs:
                Path(log).unlink(missing_ok=True)
        self.client.close()
        self.engine.dispose()


# -- disruptions of the worker the sessions run on -------------------------------------------


def sigterm(worker: WorkerProcess, timeout: float = 120.0) -> float | None:
    """SIGTERM (a rollout or scale-in): seconds until the worker exited (None: it had not
    exited after `timeout` and was then killed, as the grace period's SIGKILL would)."""
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    return time.monotonic() - started if exited(worker, timeout) else None


def exited(worker: WorkerProcess, timeout: float) -> bool:
    """True if the worker exits within `timeout`; else it is killed with its pool (the
    grace period's SIGKILL) and False."""
    try:
        worker.process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(worker.process.pid)
        worker.process.wait()
        return False
    return True


def drain(worker: WorkerProcess, env: dict[str, str], timeout: float = 120.0) -> float | None:
    """`alphaswarm-orch worker drain` (the pods' preStop) for `worker`: seconds until the
    worker exited (None: the drain had not finished after `timeout`)."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "worker", "drain"]
    argv += ["--timeout", str(timeout)]
    port = str(worker.metrics_port)  # type: ignore[attr-defined]
    result = subprocess.run(
        argv,
        env={**env, "ALPHASWARM_METRICS_PORT": port},
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    if result.returncode != 0 or worker.process.poll() is None:
        kill_tree(worker.process.pid)
        worker.process.wait()
        return None
    return time.monotonic() - started


def sigkill(worker: WorkerProcess) -> float:
    """SIGKILL the worker and its pool at once (node loss)."""
    kill_tree(worker.process.pid)
    worker.process.wait()
    return 0.0


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
