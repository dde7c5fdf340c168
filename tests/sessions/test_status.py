"""Truthful session state on the real Redis and Postgres: the CLI and the metrics counts.

A session stored as running whose lease lapsed is reported lost; a handed-off one waits for
a slot; the lag is the stream's pending plus undelivered ticks.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from alphaswarm_orch.broker.keys import session_fence_key, session_lease_key, tick_stream
from alphaswarm_orch.cli.main import main
from alphaswarm_orch.sessions.lease import SessionLease
from alphaswarm_orch.sessions.loop import GROUP
from alphaswarm_orch.sessions.simulator import PaperSimulator
from alphaswarm_orch.sessions.status import counts_by_queue, list_sessions
from alphaswarm_orch.sessions.ticks import Tick, append_tick
from tests.sessions.conftest import paper_start


@pytest.fixture
def sessions(redis_client: redis.Redis, ledger: sa.Engine):
    """Three paper sessions: one owned and running with 3 ticks waiting, one whose owner
    vanished (lease gone), one handed off; and one HFT session stopped."""
    ids = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("live", "gone", "moving", "done")}
    for name, sid in ids.items():
        lease = SessionLease(redis_client, sid, f"worker-{name}@host pid 1")
        assert lease.try_acquire()
        family = "hft" if name == "done" else "paper"
        start = paper_start(sid)
        simulator = PaperSimulator(ledger, family, start)
        simulator.take_over(lease.fence, lease.worker, f"run-{name}")
        if name == "moving":
            simulator.close("handing_off", "worker stopping")
        if name == "done":
            simulator.close("stopped", "end of day")
        if name != "live":
            redis_client.delete(session_lease_key(sid))  # released, or expired with its owner
    stream = tick_stream(ids["live"])
    redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for i in range(3):
        append_tick(redis_client, ids["live"], Tick(f"t{i}", "BTC-USD", 100.0))
    redis_client.xreadgroup(GROUP, "session", {stream: ">"}, count=1)  # 1 pending, 2 new
    yield ids
    for sid in ids.values():
        redis_client.delete(tick_stream(sid), session_lease_key(sid), session_fence_key(sid))


def test_states_are_truthful_and_lag_counts_pending_and_undelivered(
    redis_client: redis.Redis, ledger: sa.Engine, sessions: dict[str, str]
) -> None:
    views = {v.session_id: v for v in list_sessions(ledger, redis_client)}
    assert {name: views[sid].status for name, sid in sessions.items()} == {
        "live": "running",
        "gone": "lost",
        "moving": "handing_off",
        "done": "stopped",
    }
    live = views[sessions["live"]]
    assert (live.pending, live.undelivered, live.lag) == (1, 2, 3)
    assert live.owner is not None and live.owner.worker == "worker-live@host pid 1"
    assert views[sessions["moving"]].handoffs == 1

    counts = counts_by_queue(ledger, redis_client, ["paper", "hft"])
    assert counts["paper"].by_state == {"running": 1, "resumed": 0, "handing_off": 1, "lost": 1}
    assert counts["paper"].waiting == 2 and counts["paper"].handoffs == 1
    assert counts["hft"].by_state == {"running": 0, "resumed": 0, "handing_off": 0, "lost": 0}


def test_cli_lists_every_session_and_shows_one(
    sessions: dict[str, str], orch_env: dict[str, str], ledger: sa.Engine
) -> None:
    env = {k: v for k, v in orch_env.items() if k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    runner = CliRunner()
    listed = runner.invoke(main, ["sessions", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    records = {r["session"]: r for r in map(json.loads, listed.output.splitlines())}
    assert set(records) == set(sessions.values())
    assert records[sessions["gone"]]["state"] == "lost"
    assert records[sessions["live"]]["worker"] == "worker-live@host pid 1"
    assert records[sessions["live"]]["lag"] == 3

    table = runner.invoke(main, ["sessions", "list", "--family", "paper", "--active"], env=env)
    assert table.exit_code == 0, table.output
    assert sessions["done"] not in table.output
    assert "waiting for a worker slot" in table.output

    shown = runner.invoke(main, ["sessions", "show", sessions["moving"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "handing_off" in shown.output and "worker stopping" in shown.output

    missing = runner.invoke(main, ["sessions", "show", "nope\x1b[2J"], env=env)
    assert missing.exit_code == 1
    assert "no session 'nope\\x1b[2J'" in missing.output
