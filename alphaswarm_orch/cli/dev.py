"""`alphaswarm-orch dev`: the whole stack on this machine in one command.

The Dagster UI (dagster-webserver), the daemon (`alphaswarm-orch daemon`: sensors, schedules,
run queue, runs forked from its forkserver) and, when a broker is configured, Celery workers
for every light queue. Storage follows the environment contract: SQLite under the storage
dir on the embedded default, Postgres/Redis when they are set.

It does not start a Redis of its own when none is configured: the request streams, the
kill switch and `alphaswarm-orch submit` from another shell must all reach the same Redis,
and only the environment (ALPHASWARM_REDIS_URL / ALPHASWARM_BROKER_URL) says which one that
is. A Redis started here on a port of our choosing would be invisible to that other shell.

Stopping (Ctrl-C, SIGTERM): each service runs in a process group of its own and is stopped
as a group. Processes that left their group are found too: run workers lead a session of
their own and are detached from the daemon's tree (parent 1), so every service starts with
a marker in its environment (DEV_STACK_VAR), which everything forked or spawned below it
inherits; those processes and their groups get the same signals. Whatever is still alive
after the grace period is killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
import dagster as dg

from alphaswarm_orch.cli.errors import user_errors
from alphaswarm_orch.instance import prepare_dagster_home
from alphaswarm_orch.queues import LIGHT_QUEUES
from alphaswarm_orch.settings import Settings, redacted

LOCATION_NAME = "alphaswarm_orch"
DEFINITIONS_MODULE = "alphaswarm_orch.definitions"
DEFAULT_GRACE_SECONDS = 20.0
_QUIET = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - \S+ - (DEBUG|INFO) - ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_quiet(line: str) -> bool:
    """A Dagster log line below WARNING (colored or not): sensor ticks every 0.5 s, each
    run's events. Hidden unless --verbose."""
    return _QUIET.match(_ANSI.sub("", line)) is not None


DEV_STACK_VAR = "ALPHASWARM_DEV_STACK"
"""Set in every service's environment to this stack's id: how its processes are found."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    what: str


def plan(
    settings: Settings, host: str, port: int, workspace: Path
) -> tuple[list[Service], list[str]]:
    """The services to start, and a line for each part of the stack that will not run."""
    cli = [sys.executable, "-m", "alphaswarm_orch.cli"]
    services = [
        Service(
            "ui",
            [
                sys.executable,
                "-m",
                "dagster_webserver",
                "-w",
                str(workspace),
                "-h",
                host,
                "-p",
                str(port),
            ],
            f"Dagster UI on http://{host}:{port}",
        ),
        Service(
            "daemon",
            [*cli, "daemon", "-w", str(workspace)],
            "sensors, schedules, run queue; runs fork from its forkserver",
        ),
    ]
    missing = []
    if settings.broker_url is not None:
        by_concurrency: dict[int, list[str]] = defaultdict(list)
        for queue in LIGHT_QUEUES.values():
            by_concurrency[queue.concurrency].append(queue.name)
        for concurrency, queues in sorted(by_concurrency.items(), reverse=True):
            names = ",".join(queues)
            services.append(
                Service(
                    f"worker-{queues[0]}" if len(queues) == 1 else "worker",
                    [*cli, "worker", "--queues", names, "--name", f"dev-{queues[0]}@%h"],
                    f"Celery worker for {names} (concurrency {concurrency}), "
                    f"broker {redacted(settings.broker_url)}",
                )
            )
    else:
        missing.append(
            "Celery workers: no ALPHASWARM_BROKER_URL, so runs execute their steps in their "
            "own processes (embedded default, local executor)"
        )
    if settings.redis_url is None:
        missing.append(
            "requests and sessions: no ALPHASWARM_REDIS_URL (or broker), so the paper/hft/"
            "terraform request sensors skip and `alphaswarm-orch submit` has nowhere to write; "
            "set ALPHASWARM_REDIS_URL=redis://127.0.0.1:6379/0 to have them"
        )
    return services, missing


@click.command(name="dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="UI listen address.")
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Seconds the services get to stop after SIGTERM before they are killed.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Relay every log line of the services (default: warnings, errors and tracebacks).",
)
def dev_command(host: str, port: int, grace: float, verbose: bool) -> None:
    """UI, daemon and (with a broker) Celery workers in one command; Ctrl-C stops them all."""
    with user_errors():
        settings = Settings.from_env()
    if importlib.util.find_spec("dagster_webserver") is None:
        raise click.UsageError(
            "alphaswarm-orch dev needs dagster-webserver, which the worker-only install leaves "
            "out: pip install -e '.[dagster]'"
        )
    env = {**os.environ, DEV_STACK_VAR: uuid.uuid4().hex}
    if not verbose:
        # Dagster's beta notices about our definitions, printed by every process loading them.
        env.setdefault("PYTHONWARNINGS", "ignore")
    if not env.get("DAGSTER_HOME"):
        if note := prepare_dagster_home(settings.dagster_home):
            click.echo(note, err=True)
        env["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    # Create the instance's storage once, before the services open it together.
    with dg.DagsterInstance.get():
        pass
    with tempfile.TemporaryDirectory(prefix="alphaswarm-dev-") as tmp:
        workspace = Path(tmp) / "workspace.yaml"
        workspace.write_text(
            f"load_from:\n  - python_module:\n      module_name: {DEFINITIONS_MODULE}\n"
            f"      location_name: {LOCATION_NAME}\n"
        )
        services, missing = plan(settings, host, port, workspace)
        storage = (
            f"Postgres {redacted(settings.postgres_url)}"
            if settings.postgres_url
            else f"SQLite under {settings.dagster_home}"
        )
        click.echo(f"alphaswarm-orch dev: instance {env['DAGSTER_HOME']} ({storage})")
        click.echo(f"  ledger: {redacted(settings.ledger_url)} (ledger_mirror_sensor)")
        stack = Stack(services, missing, env, grace, verbose=verbose)
        code = stack.run()
    sys.exit(code)


class Stack:
    """Starts the services, relays their output, stops all of them together."""

    def __init__(
        self,
        services: list[Service],
        missing: list[str],
        env: dict[str, str],
        grace: float,
        *,
        verbose: bool = False,
    ) -> None:
        self.services = services
        self.verbose = verbose
        self.missing = missing
        self.env = env
        self.grace = grace
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()
        self._relays: list[threading.Thread] = []

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, lambda *_: self.stopping.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for service in self.services:
                process = subprocess.Popen(
                    service.argv,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.processes[service.name] = process
                click.echo(f"  {service.name:14} pid {process.pid:<7} {service.what}")
                self._relay(service.name, process.stdout)
            for line in self.missing:
                click.echo(f"  not running:   {line}")
            click.echo("Ctrl-C (or SIGTERM) stops everything it started.")
            code = self._supervise()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _supervise(self) -> int:
        while not self.stopping.wait(0.2):
            for name, process in self.processes.items():
                if process.poll() is not None:
                    click.echo(
                        f"alphaswarm-orch dev: {name} exited with {process.returncode}; "
                        "stopping the rest",
                        err=True,
                    )
                    return 1
        return 0

    def _relay(self, name: str, stream: IO[bytes] | None) -> None:
        def pump() -> None:
            assert stream is not None
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                if self.verbose or not is_quiet(line):
                    click.echo(f"[{name}] {line}")

        thread = threading.Thread(target=pump, name=f"relay-{name}", daemon=True)
        thread.start()
        self._relays.append(thread)

    def stop(self) -> None:
        """SIGTERM every group and every process of the tree, then SIGKILL what is left."""
        marker = self.env[DEV_STACK_VAR]
        tree = descendants(p.pid for p in self.processes.values()) | marked(marker)
        groups = {group for pid in tree if (group := process_group(pid)) is not None}
        groups.discard(os.getpgrp())
        signal_all(groups, tree, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            self._reap()
            tree |= descendants(alive(tree)) | marked(marker)
            if not alive(tree):
                break
            time.sleep(0.2)
        remaining = alive(tree)
        signal_all(
            {g for pid in remaining if (g := process_group(pid)) is not None} - {os.getpgrp()},
            remaining,
            signal.SIGKILL,
        )
        for process in self.processes.values():
            process.wait()
        for thread in self._relays:
            thread.join(timeout=2)

    def _reap(self) -> None:
        for process in self.processes.values():
            process.poll()


Proc = tuple[int, int]
"""A process as (pid, start time in clock ticks): a pid reused later is not the same process."""


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, start time) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def descendants(roots: Iterable[int | Proc]) -> set[Proc]:
    """`roots` and every live process below them (from /proc)."""
    children: dict[int, list[Proc]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            children[stat[1]].append((int(entry), stat[3]))
    found: set[Proc] = set()
    todo = list(alive(roots))
    while todo:
        proc = todo.pop()
        if proc not in found:
            found.add(proc)
            todo.extend(children.get(proc[0], ()))
    return found


def marked(marker: str) -> set[Proc]:
    """Live processes whose environment has DEV_STACK_VAR=`marker`."""
    needle = f"{DEV_STACK_VAR}={marker}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            found |= alive([int(entry)])
    return found


def alive(procs: Iterable[int | Proc]) -> set[Proc]:
    """The processes among `procs` that still run (zombies count as gone)."""
    found = set()
    for proc in procs:
        pid, started = proc if isinstance(proc, tuple) else (proc, None)
        stat = _proc_stat(pid)
        if stat is not None and stat[0] != "Z" and started in (None, stat[3]):
            found.add((pid, stat[3]))
    return found


def process_group(proc: Proc) -> int | None:
    return stat[2] if (stat := _proc_stat(proc[0])) is not None else None


def signal_all(groups: Iterable[int], procs: Iterable[Proc], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for proc in alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc[0], sig)
