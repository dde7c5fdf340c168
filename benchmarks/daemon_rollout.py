"""A long step across daemon rollouts: before run resumption vs now.

    python -m benchmarks.daemon_rollout [--restarts N] [--redis-db N]

One `default` worker, `alphaswarm-orch daemon`, a throw-away Postgres instance database, and
`held_job` (tests/execution/jobs.py): one step that appends a timestamp every 0.1 s until
released, as a session consumes ticks. While it runs, the daemon is rolled out N times the
way a container teardown does it (tests/support/rollout.py: SIGTERM or SIGKILL to the daemon
and its run worker, SIGKILL to every process left), and the next daemon is started.

- before: the repo's dagster.yaml with run monitoring as it was (no resumption, 30 s poll):
  monitoring fails the run and the step is interrupted; run retries (max 1) may re-execute
  it once (the issue measured that on a first rollout), a later rollout ends it for good.
- now: the repo's dagster.yaml: monitoring resumes the run with a new run worker, which
  re-attaches to the step on its worker.

The figure is the longest gap between two progress timestamps of the step (any execution of
it; "stopped" when, after some rollout, no execution of it started again within 180 s), with
how many times the step started and the run's final status. `compare()` returns the rows
and `table()` formats them for other benchmarks (benchmarks/session_survival.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import dagster as dg
import yaml

from benchmarks.stack import stack_env
from tests.support.rollout import Rollouts, run_rollouts
from tests.support.runs import REPO
from tests.support.workers import WorkerProcess

TARGET_GAP_SECONDS = 1.0


@dataclass
class Row:
    stack: str
    restarts: int
    stopped_at: int | None
    longest_gap: float | None
    step_starts: int
    run_status: str


def before_instance_yaml() -> str:
    """The repo's dagster.yaml with run monitoring as it was before resumption."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_monitoring"]["max_resume_run_attempts"] = 0
    config["run_monitoring"]["poll_interval_seconds"] = 30
    return yaml.safe_dump(config, sort_keys=False)


def run_stack(name: str, instance_yaml: str, redis_db: int, restarts: int) -> Row:
    with stack_env(f"rollout-{name}", instance_yaml, redis_db) as env:
        worker = WorkerProcess.start("default", f"bench-rollout-{name}", env)
        try:
            with dg.DagsterInstance.get() as instance:
                result = run_rollouts(env, instance, restarts=restarts, expect_resume=name == "now")
        finally:
            worker.stop()
    return _row(name, restarts, result)


def _row(name: str, restarts: int, result: Rollouts) -> Row:
    starts = sum(r.startswith("started held") for r in result.reports)
    return Row(
        name,
        restarts,
        result.stopped_at,
        None if result.stopped else result.longest_gap,
        starts,
        result.status.value if result.status else "?",
    )


def compare(restarts: int = 3, redis_db: int = 8) -> list[Row]:
    """Both stacks, one after the other (before, then now)."""
    return [
        run_stack("before", before_instance_yaml(), redis_db, restarts),
        run_stack("now", (REPO / "dagster.yaml").read_text(), redis_db, restarts),
    ]


def table(rows: list[Row]) -> str:
    by = {row.stack: row for row in rows}
    before, now = by["before"], by["now"]

    def gap(row: Row) -> str:
        return "stopped" if row.longest_gap is None else f"{row.longest_gap:.2f}"

    ratio = (
        f"{now.longest_gap / before.longest_gap:.3f}"
        if now.longest_gap and before.longest_gap
        else "-"
    )
    lines = [
        f"long step across {now.restarts} daemon rollouts (container teardown semantics)",
        "| measure | before | now | now/before |",
        "|---|---|---|---|",
        f"| longest step-progress gap (s) | {gap(before)} | {gap(now)} | {ratio} |",
        f"| step stopped for good at rollout | {before.stopped_at or '-'} "
        f"| {now.stopped_at or '-'} | |",
        f"| times the step started | {before.step_starts} | {now.step_starts} | |",
        f"| first run's final status | {before.run_status} | {now.run_status} | |",
        f"target: longest gap <= {TARGET_GAP_SECONDS:.0f} s",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--redis-db", type=int, default=8, help="uses this DB and the next")
    args = parser.parse_args()
    print(table(compare(args.restarts, args.redis_db)))


if __name__ == "__main__":
    main()
