"""CPU of an idle daemon's process tree, stock dagster-daemon vs `alphaswarm-orch daemon`.

    python -m benchmarks.daemon_idle [--seconds 60] [--warm 20] [--redis-db N] [--stack ...]

The same measure as `benchmarks.scale`'s idle stack (utime + stime + waited-for children of
the daemon and its descendants, /proc/<pid>/stat, sampled before and after the window), on
its own, without the sessions curve around it, with each process's share: the daemon, its
code server(s) (a code server started during the window is marked new, one that exited gone)
and the run launcher's forkserver. Each stack: the repo's workspace.yaml, a throw-away
Postgres instance database and empty Redis databases, no worker and no request. Stock is
request_latency's stock instance (Dagster's launcher and loops).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.request_latency import stock_instance_yaml
from benchmarks.scale import OUR_DAEMON, STOCK_DAEMON, _ready
from benchmarks.stack import daemon as stack_daemon
from benchmarks.stack import stack_env, tree
from tests.support.runs import REPO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float | None:
    """utime + stime + cutime + cstime of `pid` in seconds, None once it exited."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def _command(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace")[:90]


def measure(system: str, seconds: float, warm: float, redis_db: int) -> tuple[float, list[str]]:
    """% of a core the idle daemon tree of `system` used over `seconds`, and per process."""
    argv = {"stock": STOCK_DAEMON, "ours": OUR_DAEMON}[system]
    instance_yaml = (
        stock_instance_yaml() if system == "stock" else (REPO / "dagster.yaml").read_text()
    )
    with (
        stack_env(f"idle-{system}", instance_yaml, redis_db) as env,
        stack_daemon([*argv, "-w", "workspace.yaml"], env) as process,
    ):
        _ready(process.pid)
        time.sleep(warm)  # past start-up work (first ticks, code loads)
        commands = {pid: _command(pid) for pid in tree(process.pid)}
        before = {pid: _cpu(pid) for pid in commands}
        began = time.monotonic()
        time.sleep(seconds)
        for pid in tree(process.pid):
            commands.setdefault(pid, _command(pid))
        after = {pid: _cpu(pid) for pid in commands}
        elapsed = time.monotonic() - began
    used, lines = 0.0, []
    for pid, command in commands.items():
        start, end = before.get(pid), after.get(pid)
        note = "new " if start is None else "gone " if end is None else ""
        # A process gone by the end: its CPU is in its parent's cutime once waited for.
        share = (end or 0.0) - (start or 0.0) if end is not None else 0.0
        used += share
        lines.append(f"  {100 * share / elapsed:5.1f}%  {note}{command}")
    return 100 * used / elapsed, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warm", type=float, default=20.0)
    parser.add_argument("--redis-db", type=int, default=12, help="uses this DB and the next")
    parser.add_argument("--stack", choices=("stock", "ours"), action="append")
    args = parser.parse_args(argv)
    shares = {}
    for system in args.stack or ("stock", "ours"):
        share, lines = measure(system, args.seconds, args.warm, args.redis_db)
        shares[system] = share
        print(f"{system}: {share:.1f}% of a core over {args.seconds:.0f} s", flush=True)
        print("\n".join(lines), flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nidle daemon tree, % of a core over {args.seconds:.0f} s (load average {load}):")
    print(" | ".join(f"{system} {share:.1f}" for system, share in shares.items()))
    if "stock" in shares and "ours" in shares and shares["stock"]:
        print(f"ours / stock: {shares['ours'] / shares['stock']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
