"""The README's first command on the embedded default: multiprocess vs in-process steps.

    python -m benchmarks.embedded_run            # 3 alternating rounds of each
    python -m benchmarks.embedded_run --small    # 1 round of each

Each round runs `alphaswarm-orch run ingestion_sample_job` (with `--multiprocess` for the
old behaviour) in a fresh storage dir whose instance was created beforehand, so both pay
the same start-up. It reports, from the run's own event log, the time from launching the
command to RUN_START and to the first STEP_START, and the whole command's wall time.
Rounds alternate, so load on the machine hits both alike; compare the ratios of medians.
Needs nothing but the package (no Redis or Postgres: the ALPHASWARM_* service variables
are removed for the runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"multiprocess (before)": ["--multiprocess"], "in process (now)": []}
SERVICE_VARIABLES = (
    "ALPHASWARM_BROKER_URL",
    "ALPHASWARM_RESULT_BACKEND",
    "ALPHASWARM_POSTGRES_URL",
    "ALPHASWARM_LEDGER_URL",
    "ALPHASWARM_REDIS_URL",
    "DAGSTER_HOME",
)


def _env(storage: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["ALPHASWARM_STORAGE_DIR"] = str(storage)
    return env


def _one_run(extra: list[str]) -> dict[str, float]:
    import dagster as dg

    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "storage"
        env = _env(storage)
        # Create the instance first, so the figures compare execution, not first-time setup.
        subprocess.run(
            [sys.executable, "-m", "alphaswarm_orch.cli", "ledger", "tail"],
            env=env,
            check=True,
            capture_output=True,
        )
        argv = [sys.executable, "-m", "alphaswarm_orch.cli", "run", "ingestion_sample_job"]
        started = time.time()
        subprocess.run([*argv, *extra], env=env, check=True, capture_output=True)
        wall = time.time() - started
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update({**env, "DAGSTER_HOME": str(storage / "dagster_home")})
        try:
            with dg.DagsterInstance.get() as instance:
                (record,) = instance.get_run_records()
                events = instance.all_logs(record.dagster_run.run_id)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    first = {}
    for event in events:
        if event.dagster_event is not None:
            first.setdefault(event.dagster_event.event_type.name, event.timestamp)
    return {
        "to RUN_START": first["RUN_START"] - started,
        "to first STEP_START": first["STEP_START"] - started,
        "whole command": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="1 round of each")
    args = parser.parse_args()
    rounds = 1 if args.small else args.rounds

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, extra in MODES.items():
            results[mode].append(_one_run(extra))

    before, now = (results[mode] for mode in MODES)
    print(f"embedded `alphaswarm-orch run ingestion_sample_job`, {rounds} round(s), medians (s)")
    print(f"| measure | {' | '.join(MODES)} | ratio |")
    print("| --- | --- | --- | --- |")
    for measure in before[0]:
        old = statistics.median(r[measure] for r in before)
        new = statistics.median(r[measure] for r in now)
        print(f"| {measure} | {old:.2f} | {new:.2f} | {old / new:.2f}x |")


if __name__ == "__main__":
    main()
