"""A paper session loop in its own process, to be killed or sent SIGTERM by the tests.

    python -m tests.sessions.session_process REDIS_URL LEDGER_URL SESSION_ID KILL_KEY [TTL_MS]

Prints the outcome as JSON on exit.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import redis
import sqlalchemy as sa

from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.sessions.loop import SessionLoop, sigterm_stops
from alphaswarm_orch.sessions.simulator import PaperSimulator
from tests.sessions.conftest import paper_start


def main(
    redis_url: str, ledger_url: str, session_id: str, kill_key: str, ttl_ms: str = "10000"
) -> None:
    client = redis.Redis.from_url(redis_url)
    simulator = PaperSimulator(sa.create_engine(ledger_url), "paper", paper_start(session_id))
    loop = SessionLoop(
        client,
        session_id,
        "paper",
        KillSwitch(client, kill_key),
        simulator.handle,
        on_acquire=lambda lease: simulator.take_over(lease.fence),
        fence_floor=simulator.stored_fence,
        lease_ttl_ms=int(ttl_ms),
    )
    print("ready", flush=True)
    with sigterm_stops(loop):
        outcome = loop.run()
    simulator.close("interrupted" if outcome.resumable else "stopped")
    print(json.dumps({**dataclasses.asdict(outcome), "resumable": outcome.resumable}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
