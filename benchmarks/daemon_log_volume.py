"""Log lines an idle `alphaswarm-orch daemon` writes per minute, and which lines they are.

    ALPHASWARM_TEST_REDIS_DB=N python -m benchmarks.daemon_log_volume [--seconds 60]

Starts the daemon on the repo's workspace.yaml and dagster.yaml with a throw-away Postgres
instance database and empty Redis databases (as the tests do), no request and no worker: every
line it writes is routine. Once every sensor has ticked (the ledger mirror every 15 s), counts
the lines written over `--seconds` and prints them per minute, with the most frequent line
shapes (digits and ids masked) so the noisy ones can be named.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from tests.support import services
from tests.support.processes import background, read_log
from tests.support.runs import wait_for

REPO = Path(__file__).resolve().parents[1]
SENSORS = (
    "paper_request_sensor",
    "hft_request_sensor",
    "terraform_request_sensor",
    "ledger_mirror_sensor",
)
_VARYING = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:.,+-]+|[0-9a-f]{8,}|\d+(\.\d+)?")


def shape(line: str) -> str:
    """The line with timestamps, ids and numbers masked."""
    return _VARYING.sub("#", line.strip())[:140]


def ticked(instance: dg.DagsterInstance) -> set[str]:
    """The sensors with a tick so far."""
    return {
        state.instigator_name
        for state in instance.all_instigator_state()
        if state.instigator_data is not None
        and getattr(state.instigator_data, "last_tick_timestamp", None)
    }


def measure(seconds: float) -> tuple[int, collections.Counter[str]]:
    broker, backend = services.redis_urls()
    services.flush_redis(broker, backend)
    with tempfile.TemporaryDirectory() as tmp, services.temporary_database("as_bench") as pg:
        env = services.orchestration_env(Path(tmp), (broker, backend), pg)
        argv = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-w", "workspace.yaml"]
        with background(argv, env, cwd=str(REPO)) as daemon:
            os.environ.update(env)  # the instance's storage reads the environment
            with dg.DagsterInstance.get() as instance:
                wait_for(lambda: set(SENSORS) <= ticked(instance), 120, "every sensor to tick")
            before = len(read_log(daemon).splitlines())
            time.sleep(seconds)
            lines = read_log(daemon).splitlines()[before:]
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}):\n{read_log(daemon)}")
    services.flush_redis(broker, backend)
    return len(lines), collections.Counter(shape(line) for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    count, shapes = measure(args.seconds)
    print(f"{count * 60 / args.seconds:.0f} lines per minute ({count} in {args.seconds:g} s)")
    for text, n in shapes.most_common(12):
        print(f"{n:6d}  {text}")


if __name__ == "__main__":
    main()
