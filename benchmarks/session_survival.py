"""Sessions across worker operations: the longest tick gap and the time to resume, per
scenario, with this code and with the code before sessions could move ("before").

    python -m benchmarks.session_survival [--small] [--before REV] [--only NAME] [--redis-db N]

Each scenario runs paper (and HFT) sessions ticking at 20 ticks/s, one order per tick, on
real workers (paper: 2 slots, hft: 1), run processes (`dagster job execute`, Celery
executor), Redis and a throw-away Postgres database: the sessions start on a "first" worker,
a spare worker joins, then the scenario disrupts the first worker. "before" runs the same
scenario with the package as of REV (default: the commit before this change) extracted with
`git archive`, workers and runs started from that tree. The longest gap is the longest time
between two handled ticks from the disruption on; "resume" is the time from the disruption
to the first tick handled after that gap (none: no tick within the observation window).

The daemon rollout row queues its paper sessions for `alphaswarm-orch daemon` (as the
request sensors do) and restarts the daemon three times as a container teardown does (the
daemon, its forkserver and the run workers killed; tests/support/rollout.py). Its "before" is
this code with the repo's dagster.yaml without run resumption (benchmarks/daemon_rollout.py
`before_instance_yaml`), since resumption is what changed for daemons.

Scenarios are rows of SCENARIOS: add one with a name, the queues it needs and a function
that disrupts the first workers or the daemon (and returns how long the workers took to exit,
if that applies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from benchmarks.daemon_rollout import before_instance_yaml
from tests.support import services
from tests.support.runs import REPO, wait_for
from tests.support.survival import Cluster, exited, sigkill
from tests.support.workers import WorkerProcess

BEFORE_REV = "2c6cbbf23d5f3b04ac82415a10ce7fa8748791cf"
"""main just before sessions could hand off, resume and fence (the old mechanism)."""

OBSERVE_SECONDS = 60.0
"""How long after a disruption a session may take to go on before it counts as dead."""

GRACE_SECONDS = 30.0
"""The benchmark's terminationGracePeriodSeconds (the pods' is 600): a worker still running
this long after SIGTERM is SIGKILLed, as the kubelet would."""


@dataclass(frozen=True)
class Scenario:
    name: str
    queues: tuple[str, ...]
    families: tuple[str, ...]
    disrupt: Callable[[Cluster, dict[str, WorkerProcess], bool], float | None]
    """Acts on the first worker of each queue (or the cluster's daemon; the flag says if this
    is the "before" run); returns the workers' exit time if measured."""
    daemon: bool = False
    """Sessions are queued runs of a daemon; "before" is this code without run resumption."""
    target: str = ""


def _sigterm_all(
    _cluster: Cluster, workers: dict[str, WorkerProcess], _before: bool
) -> float | None:
    """SIGTERM to every first worker at once (a rollout), then wait for each."""
    started = time.monotonic()
    for worker in workers.values():
        worker.process.send_signal(signal.SIGTERM)
    deadline = started + GRACE_SECONDS
    left = [exited(w, max(deadline - time.monotonic(), 0.1)) for w in workers.values()]
    return time.monotonic() - started if all(left) else None


def _sigkill_all(
    _cluster: Cluster, workers: dict[str, WorkerProcess], _before: bool
) -> float | None:
    for worker in workers.values():
        sigkill(worker)
    return None


DAEMON_ROLLOUTS = 3


def _roll_out_daemon(cluster: Cluster, _workers: dict[str, WorkerProcess], before: bool) -> None:
    """DAEMON_ROLLOUTS daemon rollouts, each once the sessions consumed new ticks after the
    previous one (after: and every run re-attached; before: and run monitoring acted on the
    runs, or OBSERVE_SECONDS passed)."""
    for _ in range(DAEMON_ROLLOUTS):
        if not before:
            cluster.roll_out()
        else:
            cluster.roll_out(expect_resume=False)
            wait_for_quietly(
                lambda: all(cluster.run_finished(s) for s in cluster.sessions), OBSERVE_SECONDS
            )
        targets = [(s, len(s.appended) + 20) for s in cluster.sessions]
        wait_for_quietly(
            lambda t=targets: all(cluster.handled_count(s) >= n for s, n in t), OBSERVE_SECONDS
        )
    return None


def wait_for_quietly(condition: Callable[[], object], timeout: float) -> bool:
    try:
        wait_for(condition, timeout, "the sessions to settle", interval=0.2)
    except AssertionError:
        return False
    return True


SCENARIOS = [
    Scenario(
        "graceful handoff (SIGTERM, spare worker)",
        ("paper", "hft"),
        ("paper", "paper", "hft"),
        _sigterm_all,
        target="longest gap p50 <= 2 s",
    ),
    Scenario(
        "worker loss (SIGKILL, spare worker)",
        ("paper", "hft"),
        ("paper", "paper", "hft"),
        _sigkill_all,
        target="longest gap <= 20 s",
    ),
    Scenario(
        f"daemon rollout x{DAEMON_ROLLOUTS} (daemon, forkserver, run workers killed)",
        ("paper",),
        ("paper", "paper"),
        _roll_out_daemon,
        daemon=True,
        target="longest gap <= 1 s",
    ),
]


@dataclass
class Measured:
    gaps: list[float]
    resumes: list[float | None]
    exit_seconds: float | None
    problems: list[str]
    dead: bool = False
    """A session did not go on within OBSERVE_SECONDS."""


def run_scenario(
    scenario: Scenario, code_dir: Path, redis_db: int, small: bool, before: bool = False
) -> Measured:
    broker = f"redis://{services.REDIS_HOST}:6379/{redis_db}"
    backend = f"redis://{services.REDIS_HOST}:6379/{redis_db + 1}"
    services.flush_redis(broker, backend)
    tmp = Path(tempfile.mkdtemp(prefix="session-survival-"))
    workers: list[WorkerProcess] = []
    with services.temporary_database("as_bench") as postgres:
        home = tmp / "dagster_home"
        home.mkdir()
        if scenario.daemon and before:
            (home / "dagster.yaml").write_text(before_instance_yaml())
        else:
            shutil.copy(code_dir / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "ALPHASWARM_BROKER_URL": broker,
            "ALPHASWARM_RESULT_BACKEND": backend,
            "ALPHASWARM_POSTGRES_URL": postgres,
            "ALPHASWARM_STORAGE_DIR": str(tmp / "storage"),
            "DAGSTER_HOME": str(home),
        }

        def start(queue: str, name: str, *extra: str, env: dict[str, str]) -> WorkerProcess:
            worker = WorkerProcess.start(queue, name, env, *extra, cwd=str(code_dir))
            workers.append(worker)
            return worker

        saved = dict(os.environ)  # the Dagster instance the daemon's runs are read from
        os.environ.update({k: env[k] for k in env if k.startswith(("ALPHASWARM_", "DAGSTER_"))})
        instance = dg.DagsterInstance.get() if scenario.daemon else None
        cluster = Cluster(env, tmp, start, code_dir=code_dir, instance=instance)
        try:
            return _measure(cluster, scenario, small, before)
        except AssertionError as exc:  # e.g. the sessions never started: say so, go on
            return Measured([], [], None, [f"not measured: {exc}"])
        finally:
            cluster.close()
            if instance is not None:
                instance.dispose()
            os.environ.clear()
            os.environ.update(saved)
            for worker in workers:
                if worker.process.poll() is None:
                    sigkill(worker)
            services.flush_redis(broker, backend)
            shutil.rmtree(tmp, ignore_errors=True)


def _measure(cluster: Cluster, scenario: Scenario, small: bool, before: bool) -> Measured:
    first = {queue: cluster.worker(queue, "first") for queue in scenario.queues}
    families = scenario.families[:1] if small else scenario.families
    if scenario.daemon:
        cluster.start_daemon()
    sessions = [cluster.launch(family, queued=scenario.daemon) for family in families]
    cluster.start_ticks()
    cluster.wait_first_ticks()
    if not scenario.daemon:  # a daemon rollout leaves the workers alone
        for queue in scenario.queues:
            cluster.worker(queue, "spare")
    since = time.time()
    exit_seconds = scenario.disrupt(cluster, first, before)
    problems: list[str] = []
    deadline = time.monotonic() + OBSERVE_SECONDS  # one window for all the sessions
    for session in sessions:
        target = len(session.appended) + 20
        try:
            wait_for(
                lambda s=session, t=target: cluster.handled_count(s) >= t,
                max(deadline - time.monotonic(), 0.0),
                f"{session.session_id} going on",
            )
        except AssertionError as exc:
            problems.append(str(exc))
    cluster.stop_ticks()
    dead = bool(problems)
    if not dead:
        cluster.wait_all_handled()
    measured = [cluster.gaps(session, since) for session in sessions]
    problems += cluster.stop_sessions() if not dead else []
    if not dead:
        for session in sessions:
            problems += cluster.check(session)
    return Measured(
        gaps=[gap for gap, _ in measured],
        resumes=[resume if not dead else None for _, resume in measured],
        exit_seconds=exit_seconds,
        problems=problems,
        dead=dead,
    )


def _before_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "alphaswarm_orch", "dagster.yaml"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _seconds(values: list[float | None]) -> str:
    if not values:
        return "-"
    if any(v is None for v in values):
        return "never"
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"  # type: ignore[type-var]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="one session per scenario")
    parser.add_argument("--before", default=BEFORE_REV, help="the old code's git revision")
    parser.add_argument("--only", default=None, help="run the scenarios whose name has this")
    parser.add_argument("--redis-db", type=int, default=12, help="uses this DB and the next")
    args = parser.parse_args(argv)
    scenarios = [s for s in SCENARIOS if args.only is None or args.only in s.name]
    before_dir = _before_tree(args.before, Path(tempfile.mkdtemp(prefix="before-")))
    rows = []
    try:
        for scenario in scenarios:
            results = {}
            stacks = (("before", REPO if scenario.daemon else before_dir), ("after", REPO))
            for label, code_dir in stacks:
                print(f"{scenario.name}: {label} ...", file=sys.stderr, flush=True)
                results[label] = run_scenario(
                    scenario, code_dir, args.redis_db, args.small, before=label == "before"
                )
                for problem in results[label].problems:
                    print(f"  {label}: {problem.splitlines()[0]}", file=sys.stderr)
            rows.append((scenario, results))
    finally:
        shutil.rmtree(before_dir, ignore_errors=True)

    print(
        "| scenario | before: longest gap p50 (s) | before: resume (s) | before: worker exit "
        "| after: longest gap p50 (s) | after: resume (s) | after: worker exit | all checks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scenario, results in rows:
        cells = []
        for label in ("before", "after"):
            m = results[label]
            if not m.gaps:
                cells += ["not measured", "-", "-"]
                continue
            gap = _seconds(m.gaps) if not m.dead else f">= {OBSERVE_SECONDS:.0f} (dead)"
            if m.exit_seconds is not None:
                exit_ = f"{m.exit_seconds:.1f} s"
            elif scenario.daemon:
                exit_ = "- (workers untouched)"
            elif "SIGKILL" in scenario.name:
                exit_ = "SIGKILL"
            else:
                exit_ = f"SIGKILL at {GRACE_SECONDS:.0f} s"
            cells += [gap, _seconds(m.resumes), exit_]
        ok = "pass" if not results["after"].problems else "FAIL"
        print(f"| {scenario.name} | " + " | ".join(cells) + f" | {ok} |")
    print()
    for scenario, _results in rows:
        print(f"target, {scenario.name}: {scenario.target}")
    return 0 if all(not r["after"].problems for _, r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
