"""Sessions survive worker operations by themselves, on real workers, runs, Redis, Postgres.

Two paper sessions and one HFT session run on the "first" worker of their queue while a
spare worker waits. SIGTERM (a rollout or scale-in) and `worker drain` (preStop) hand them
over, SIGKILL (node loss) has them resumed, one after the other on one cluster, and
freezing the processes of two paper sessions (so that their runs re-submit the steps while
the old ones still live) shows the old steps cannot write once the new ones own the
sessions. Every time: 0 ticks lost, 0 duplicate fills, cash and positions equal to the
fills, and the sessions keep consuming with nobody re-executing anything. Two paper sessions
launched by the daemon keep consuming across three daemon rollouts that kill the daemon's
processes, their steps never started again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from alphaswarm_orch.ledger.db import migrate
from tests.support.ops import sample, scrape
from tests.support.runs import wait_for
from tests.support.survival import (
    RUN_TIMEOUT,
    Cluster,
    Session,
    drain,
    freeze,
    sigkill,
    sigterm,
    thaw,
)

pytestmark = [pytest.mark.integration, pytest.mark.scenario, pytest.mark.timeout(900)]

FAMILIES = ("paper", "paper", "hft")
DISRUPTIONS = {
    "sigterm": lambda worker, _env: sigterm(worker),
    "drain": drain,  # the preStop hook
    "sigkill": lambda worker, _env: sigkill(worker),
}


def keeps_consuming(cluster: Cluster, session: Session, ticks: int = 20) -> None:
    """Ticks appended from now on are handled: the session goes on by itself."""
    target = len(session.appended) + ticks
    wait_for(
        lambda: cluster.handled_count(session) >= target,
        RUN_TIMEOUT,
        f"{session.session_id} consuming after the disruption",
    )


def finish(cluster: Cluster) -> list[str]:
    cluster.stop_ticks()
    cluster.wait_all_handled()
    problems = cluster.stop_sessions()
    for session in cluster.sessions:
        problems += cluster.check(session)
    return problems


def test_sessions_continue_on_a_spare_worker_through_sigterm_drain_and_sigkill(
    orch_env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    """One cluster lives through the three disruptions in turn, each time with a new spare
    worker waiting: SIGTERM and drain hand the sessions over, SIGKILL has them resumed."""
    migrate(orch_env["ALPHASWARM_POSTGRES_URL"])  # lets the test read the tables at once
    cluster = Cluster(orch_env, tmp_path, start_worker)
    try:
        owners = {queue: cluster.worker(queue, "first") for queue in ("paper", "hft")}
        sessions = [cluster.launch(family) for family in FAMILIES]
        for session in sessions:
            cluster.wait_on(session, owners[session.family].node, ("running",))
        cluster.start_ticks()
        cluster.wait_first_ticks()

        for disruption in ("sigterm", "drain", "sigkill"):
            spare = {queue: cluster.worker(queue, f"after-{disruption}") for queue in owners}
            exits = {q: DISRUPTIONS[disruption](w, cluster.env) for q, w in owners.items()}
            if disruption != "sigkill":  # the sessions let the worker go at once
                assert None not in exits.values(), f"{disruption}: a worker kept its sessions"
            for session in sessions:
                cluster.wait_on(session, spare[session.family].node, ("resumed",))
                keeps_consuming(cluster, session)
            owners = spare
        assert finish(cluster) == []
        for session in sessions:
            row = cluster.row(session)
            assert row is not None and row["status"] == "stopped"
            # Two hand-offs (SIGTERM, drain), one loss (SIGKILL), each ended by a resume.
            assert (row["handoffs"], row["losses"], row["resumes"]) == (2, 1, 3), row
        # Every paper/hft worker reports the queue's sessions (read from the ledger and leases).
        for queue, count in (("paper", 2), ("hft", 1)):
            samples = scrape(owners[queue].metrics_port)
            expected = {"handoffs": 2 * count, "losses": count, "resumes": 3 * count}
            for kind, total in expected.items():
                metric = f"alphaswarm_session_{kind}_total"
                assert sample(samples, metric, queue_name=queue) == total, metric
            assert sample(samples, "alphaswarm_sessions", queue_name=queue) == 0  # all stopped
    finally:
        cluster.close()


def test_overlapping_steps_of_one_session_never_both_write(
    orch_env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    migrate(orch_env["ALPHASWARM_POSTGRES_URL"])
    cluster = Cluster(orch_env, tmp_path, start_worker)
    try:
        first = cluster.worker("paper", "first")
        sessions = [cluster.launch("paper") for _ in range(2)]
        for session in sessions:
            cluster.wait_on(session, first.node, ("running",))
        cluster.start_ticks()
        cluster.wait_first_ticks()
        spare = cluster.worker("paper", "spare")
        old = {s.session_id: (cluster.owner_pid(s), cluster.row(s)["fence"]) for s in sessions}

        # Frozen, not dead: the runs find the steps silent and submit them again, and the old
        # steps are still there, mid-loop, when they wake up.
        for pid, _fence in old.values():
            freeze(pid)
        try:
            for session in sessions:
                cluster.wait_on(session, spare.node, ("resumed",))
        finally:
            for pid, _fence in old.values():
                thaw(pid)
        for session in sessions:
            _pid, fence = old[session.session_id]
            wait_for(
                lambda s=session, f=fence: superseded(cluster, s, f),
                RUN_TIMEOUT,
                f"the old step of {session.session_id} refused and stopped",
            )
            keeps_consuming(cluster, session)
        assert finish(cluster) == []
        for session in sessions:
            _pid, fence = old[session.session_id]
            assert writes_after_take_over(cluster, session, fence) == 0
    finally:
        cluster.close()


def superseded(cluster: Cluster, session: Session, fence: int) -> bool:
    with cluster.engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM paper_session_events WHERE session_id = :s "
                    "AND event = 'superseded' AND fence = :f"
                ),
                {"s": session.session_id, "f": fence},
            ).scalar()
        )


def writes_after_take_over(cluster: Cluster, session: Session, fence: int) -> int:
    """Ticks the old owner (`fence`) recorded after the new owner took the session over."""
    with cluster.engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM paper_ticks t WHERE t.session_id = :s AND t.fence = :f "
                "AND t.handled_at > (SELECT min(at) FROM paper_session_events e WHERE "
                "e.session_id = :s AND e.event = 'resumed' AND e.fence > :f)"
            ),
            {"s": session.session_id, "f": fence},
        ).scalar()


def test_sessions_keep_consuming_across_three_daemon_rollouts(
    orch_env: dict[str, str], start_worker, tmp_path: Path, instance
) -> None:
    """Three daemon rollouts in the sessions' life, each killing the daemon, its forkserver
    and the run workers (container teardown): the session steps go on on their worker, a new
    run worker of each run re-attaches, and no step is started again."""
    migrate(orch_env["ALPHASWARM_POSTGRES_URL"])
    cluster = Cluster(orch_env, tmp_path, start_worker, instance=instance)
    try:
        worker = cluster.worker("paper", "first")
        cluster.start_daemon()
        sessions = [cluster.launch("paper", queued=True) for _ in range(2)]
        for session in sessions:
            cluster.wait_on(session, worker.node, ("running",))
        cluster.start_ticks()
        cluster.wait_first_ticks()
        fences = {s.session_id: cluster.row(s)["fence"] for s in sessions}

        for _ in range(3):
            cluster.roll_out()
            for session in sessions:
                keeps_consuming(cluster, session)
        assert finish(cluster) == []
        for session in sessions:
            row = cluster.row(session)
            assert row is not None and row["status"] == "stopped"
            # One owner all along: never handed off, lost or resumed, the same fence.
            assert (row["handoffs"], row["losses"], row["resumes"]) == (0, 0, 0), row
            assert row["fence"] == fences[session.session_id], row
            messages = cluster.run_messages(session)
            assert sum(m.startswith("Submitted celery task") for m in messages) == 1, messages
            assert sum(m == "Launching a new run worker to resume run" for m in messages) == 3
            assert sum(m.startswith("Re-attached to step") for m in messages) == 3, messages
    finally:
        cluster.close()
