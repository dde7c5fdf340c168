"""Operator commands (`kill-switch on|status|off`, `submit`): lazy CLI vs every command loaded.

    python -m benchmarks.operator_commands            # 7 rounds
    python -m benchmarks.operator_commands --small    # 3 rounds

Each command runs as an operator runs it: a fresh interpreter, `python -m alphaswarm_orch.cli
...`, talking to Redis. The baseline is the CLI as it was before commands loaded lazily: the
entry point imported every command module (run, health, worker, submit, kill-switch, ledger,
daemon, so Dagster, Celery and the ledger's SQLAlchemy/Alembic) before parsing the command
line; it is reproduced by importing those modules first, then running the same command. The
floor is a bare `python -c pass`. Wall time is from start to exit; CPU is user + system of the
child. Rounds alternate, so load on the machine hits both alike; compare the medians' ratio.

Needs Redis (ALPHASWARM_REDIS_URL, default redis://127.0.0.1:6379/15). It sets and clears a
kill-switch key of its own (not the real switch) and appends paper start requests to
`alphaswarm:requests:paper` of that database, deleting them afterwards: point it at a
database no sensor reads.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import redis

from alphaswarm_orch.broker.keys import request_stream
from alphaswarm_orch.cli.main import LAZY_COMMANDS

DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
EAGER = "; ".join(f"import {target.split(':')[0]}" for target in LAZY_COMMANDS.values())
"""What the entry point imported before it parsed a command line, when it loaded every command."""
LAZY_CLI = "from alphaswarm_orch.cli.main import main; main(prog_name='alphaswarm-orch')"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one child process, which must succeed, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.small else args.rounds

    url = os.environ.get("ALPHASWARM_REDIS_URL", DEFAULT_REDIS)
    key = f"bench:kill:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ALPHASWARM_REDIS_URL": url, "ALPHASWARM_KILL_SWITCH_KEY": key}
    commands: list[tuple[str, Callable[[int], list[str]]]] = [
        ("kill-switch on", lambda _: ["kill-switch", "on", "--reason", "benchmark"]),
        ("kill-switch status", lambda _: ["kill-switch", "status"]),
        ("kill-switch off", lambda _: ["kill-switch", "off"]),
        (
            "submit paper start",
            lambda n: ["submit", "paper", "start", "--session", f"bench-{n}", "--symbols", "X"],
        ),
    ]
    floor: list[tuple[float, float]] = []
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    appended: list[str] = []
    stream = request_stream("paper")
    with redis.Redis.from_url(url) as client:
        stream_existed = bool(client.exists(stream))
    try:
        for n in range(rounds):
            floor.append(timed([sys.executable, "-c", "pass"], env)[:2])
            for name, argv in commands:
                code = f"import sys; sys.argv[1:] = {argv(n)!r}; {LAZY_CLI}"
                for path, script in (("all commands loaded", f"{EAGER}; {code}"), ("lazy", code)):
                    wall, cpu, output = timed([sys.executable, "-c", script], env)
                    results.setdefault((name, path), []).append((wall, cpu))
                    if " appended as " in output:
                        appended.append(output.split(" appended as ")[1].strip())
    finally:
        client = redis.Redis.from_url(url)
        client.delete(key)
        if appended:
            client.xdel(stream, *appended)
        if not stream_existed and client.xlen(stream) == 0:
            client.delete(stream)
        client.close()

    def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{cpu_model()}, {os.cpu_count()} cores, load average {load}")
    print(f"Python {platform.python_version()}, {rounds} rounds, {when}")
    print()
    print("| command | all commands loaded: wall / CPU s | lazy: wall / CPU s | ratio wall / CPU |")
    print("| --- | --- | --- | --- |")
    for name, _argv in commands:
        old_wall, old_cpu = medians(results[(name, "all commands loaded")])
        new_wall, new_cpu = medians(results[(name, "lazy")])
        print(
            f"| `{name}` | {old_wall:.2f} / {old_cpu:.2f} | {new_wall:.2f} / {new_cpu:.2f} "
            f"| {old_wall / new_wall:.1f}x / {old_cpu / new_cpu:.1f}x |"
        )
    floor_wall, floor_cpu = medians(floor)
    print(f"| `python -c pass` (floor) | | {floor_wall:.2f} / {floor_cpu:.2f} | |")


if __name__ == "__main__":
    main()
