"""`alphaswarm-orch dev` end to end: the UI in headless Chromium, a paper session started by a
request, and nothing left running after SIGTERM.

The stack runs on the embedded default (SQLite instance and ledger, local executor) with
Redis for requests, as the README's `ALPHASWARM_REDIS_URL=... alphaswarm-orch dev` does.
Pages are rendered by Debian's `chromium` (`--dump-dom` after the UI's GraphQL queries ran).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from alphaswarm_orch.launch.launcher import RUN_WORKER_PID_TAG
from alphaswarm_orch.tags import REQUEST_ID_TAG
from tests.support import services
from tests.support.processes import free_port, read_log
from tests.support.runs import step_workers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.dev_stack]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
CHROMIUM_FLAGS += ["--virtual-time-budget=20000"]
"""--virtual-time-budget: let the UI's scripts and GraphQL queries run before the dump."""
TERMINAL = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def page_text(url: str) -> str:
    """The visible text of `url` as headless Chromium renders it."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does)"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def rendered(url: str, *texts: str) -> str:
    """Poll until the page shows every one of `texts` (the UI fills in as queries return)."""
    seen = ""

    def shows() -> bool:
        nonlocal seen
        seen = page_text(url)
        return all(t in seen for t in texts)

    try:
        wait_for(shows, 180, f"{url} to show {texts}", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; page text: {seen[:3000]}") from exc
    return seen


def processes_with(marker: str) -> dict[int, str]:
    """Live (non-zombie) processes whose environment contains `marker`: pid -> command."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker.encode() in environ and stat[stat.rfind(")") + 2] != "Z":
            found[int(entry)] = cmd
    return found


def test_dev_runs_the_stack_the_ui_shows_it_and_sigterm_stops_everything(tmp_path: Path) -> None:
    redis_url = services.redis_urls()[0]
    storage = tmp_path / ".alphaswarm"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    env.update(ALPHASWARM_STORAGE_DIR=str(storage), ALPHASWARM_REDIS_URL=redis_url)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dev = start_dev(env, tmp_path, port)
    session = f"dev-{uuid.uuid4().hex[:8]}"
    try:
        wait_for(lambda: _up(f"{base}/server_info"), 180, "the UI")
        banner = read_log(dev)
        assert "not running:   Celery workers: no ALPHASWARM_BROKER_URL" in banner
        assert "requests and sessions" not in banner  # Redis is configured

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("ingestion_sample_job")
        status = wait_for(
            lambda: (s := client.get_run_status(run_id)) in TERMINAL and s,
            300,
            "the run launched from the UI's API to finish",
            interval=1,
        )
        assert status == dg.DagsterRunStatus.SUCCESS

        submitted = subprocess.run(
            [
                "alphaswarm-orch",
                "submit",
                "paper",
                "start",
                "--session",
                session,
                "--symbols",
                "BTC-USD",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        request_id = submitted.stdout.split()[1]
        env_home = {**env, "DAGSTER_HOME": str(storage / "dagster_home")}
        session_run = wait_for(
            lambda: _started_run(env_home, request_id),
            180,
            "the paper session's run to start",
            interval=0.5,
        )

        rendered(f"{base}/asset-groups", "instruments", "daily_bars", "Materialized")
        rendered(
            f"{base}/locations/alphaswarm_orch/jobs",
            "ingestion_sample_job",
            "paper_session_job",
            "smoke_route_job",
        )
        rendered(
            f"{base}/locations/alphaswarm_orch/sensors",
            "paper_request_sensor",
            "ledger_mirror_sensor",
            "terraform_request_sensor",
        )
        rendered(f"{base}/runs/{run_id}", "ingestion_sample_job", "Success")
        rendered(
            f"{base}/runs/{session_run['run_id']}",
            "paper_session_job",
            "Launched by paper_request_sensor",
        )

        # Everything dev started, found independently of how dev finds it: the run worker
        # of the session has left the daemon's tree (parent 1, a session of its own).
        started = processes_with(f"ALPHASWARM_STORAGE_DIR={storage}")
        assert dev.pid in started
        assert int(session_run["worker_pid"]) in started, started
        assert any("forkserver" in cmd for cmd in started.values()), started
    except BaseException:
        print(read_log(dev)[-6000:])
        _kill_all(f"ALPHASWARM_STORAGE_DIR={storage}")
        raise
    stop_and_check(dev, f"ALPHASWARM_STORAGE_DIR={storage}")


def test_dev_on_redis_and_postgres_runs_steps_on_its_celery_workers(
    orch_env: dict[str, str], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    env = {**orch_env}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    marker = f"ALPHASWARM_STORAGE_DIR={env['ALPHASWARM_STORAGE_DIR']}"
    port = free_port()
    dev = start_dev(env, tmp_path, port)
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/server_info"), 180, "the UI")
        wait_for(lambda: read_log(dev).count(" ready.") >= 2, 180, "both Celery workers")
        assert "not running" not in read_log(dev)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("smoke_route_job")
        status = wait_for(
            lambda: (s := client.get_run_status(run_id)) in TERMINAL and s,
            300,
            "the run to finish",
            interval=1,
        )
        assert status == dg.DagsterRunStatus.SUCCESS
        assert set(step_workers(instance, run_id).values()) == {
            f"dev-default@{socket.gethostname()}"
        }
        workers = [cmd for cmd in processes_with(marker).values() if " worker --queues " in cmd]
        assert any("--queues hft" in cmd for cmd in workers), workers
    except BaseException:
        print(read_log(dev)[-6000:])
        _kill_all(marker)
        raise
    stop_and_check(dev, marker)


def start_dev(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen:
    """`alphaswarm-orch dev` in a session of its own, its output in a log file."""
    log = cwd / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            ["alphaswarm-orch", "dev", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev.log = str(log)  # type: ignore[attr-defined]
    return dev


def stop_and_check(dev: subprocess.Popen, marker: str) -> None:
    """SIGTERM to `dev` alone: it exits 0 and no process with `marker` remains."""
    dev.send_signal(signal.SIGTERM)
    try:
        assert dev.wait(90) == 0
        wait_for(lambda: not processes_with(marker), 30, "every process dev started to exit")
    finally:
        _kill_all(marker)
        print(read_log(dev)[-3000:])


def _started_run(env: dict[str, str], request_id: str) -> dict[str, str] | None:
    """The session run of `request_id` once it runs: its id and its run worker's pid."""
    code = (
        "import sys, dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        f"    runs = i.get_runs(dg.RunsFilter(tags={{{REQUEST_ID_TAG!r}: sys.argv[1]}}))\n"
        "    for r in runs:\n"
        "        pid = r.tags.get(sys.argv[2])\n"
        "        if r.status == dg.DagsterRunStatus.STARTED and pid:\n"
        "            print(r.run_id, pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, request_id, RUN_WORKER_PID_TAG],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    return {"run_id": out[0], "worker_pid": out[1]} if len(out) == 2 else None


def _kill_all(marker: str) -> None:
    """Test cleanup only: never leave a process of this test behind."""
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
