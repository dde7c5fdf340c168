"""Per-tick stop check of the session loop: fail-closed switch read vs a bare MGET.

    python -m benchmarks.kill_switch_check            # 6 rounds of 2,000 checks each
    python -m benchmarks.kill_switch_check --small    # 3 rounds of 500

Needs Redis (ALPHASWARM_REDIS_URL, default redis://127.0.0.1:6379/15; the keys it writes
are removed). Each check is what the loop sends after a tick: one pipeline with the XACK and
the stop checks. The baseline reads the kill-switch keys and the stop key with one MGET
(which misses a switch of any type but string); the session loop's check sends a TYPE per
switch key and reads values only when a key exists. Rounds alternate, so load on the
machine hits both alike; the ratio of medians is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import redis

from alphaswarm_orch.broker.keys import session_stop_key, tick_stream
from alphaswarm_orch.broker.kill_switch import KillSwitch
from alphaswarm_orch.sessions.loop import GROUP, SessionLoop

DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--checks", type=int, default=2000, help="checks per round")
    parser.add_argument("--small", action="store_true", help="3 rounds of 500")
    args = parser.parse_args()
    rounds, checks = (3, 500) if args.small else (args.rounds, args.checks)

    client = redis.Redis.from_url(os.environ.get("ALPHASWARM_REDIS_URL", DEFAULT_REDIS))
    session_id = f"bench-{uuid.uuid4().hex[:8]}"
    switch = KillSwitch(client, f"bench:kill:{session_id}")
    loop = SessionLoop(client, session_id, "paper", switch, lambda _tick: None)
    stream = tick_stream(session_id)
    mget_keys = [*switch.keys_for("paper"), session_stop_key(session_id)]

    def bare_mget() -> object:
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, "0-1")
        pipe.mget(mget_keys)
        return pipe.execute()

    def fail_closed() -> object:
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, "0-1")
        return loop._check_stop(pipe)

    timings: dict[str, list[float]] = {"bare MGET": [], "fail-closed check": []}
    try:
        for _ in range(rounds):
            for name, check in (("bare MGET", bare_mget), ("fail-closed check", fail_closed)):
                begin = time.perf_counter()
                for _ in range(checks):
                    check()
                timings[name].append((time.perf_counter() - begin) / checks * 1e6)
    finally:
        client.delete(stream, *mget_keys)
        client.close()
    print(f"{'stop check':<20}{'median us':>11}   per round")
    for name, values in timings.items():
        rounded = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:<20}{statistics.median(values):>11.1f}   {rounded}")
    ratio = statistics.median(timings["fail-closed check"]) / statistics.median(
        timings["bare MGET"]
    )
    print(f"ratio fail-closed/bare {ratio:.2f}x")


if __name__ == "__main__":
    main()
