"""What `alphaswarm-orch dev` starts for a given environment (fast: nothing is started)."""

from pathlib import Path

from alphaswarm_orch.cli.dev import is_quiet, plan
from alphaswarm_orch.settings import Settings


def _names(env: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    services, missing = plan(Settings.from_env(env), "127.0.0.1", 3999, Path("ws.yaml"))
    return {s.name: s.argv for s in services}, missing


def test_embedded_default_runs_ui_and_daemon_and_says_what_does_not_run() -> None:
    services, missing = _names({"ALPHASWARM_STORAGE_DIR": "/tmp/x"})
    assert list(services) == ["ui", "daemon"]
    assert services["ui"][-4:] == ["-h", "127.0.0.1", "-p", "3999"]
    assert services["daemon"][-3:] == ["daemon", "-w", "ws.yaml"]
    assert [m.split(":")[0] for m in missing] == ["Celery workers", "requests and sessions"]


def test_broker_adds_workers_for_every_light_queue_hft_alone() -> None:
    services, missing = _names({"ALPHASWARM_BROKER_URL": "redis://127.0.0.1:6379/5"})
    assert list(services) == ["ui", "daemon", "worker", "worker-hft"]
    queues = {
        name: argv[argv.index("--queues") + 1]
        for name, argv in services.items()
        if "--queues" in argv
    }
    assert queues == {"worker": "default,paper,terraform,ingestion,workflows", "worker-hft": "hft"}
    assert missing == []


def test_only_dagster_lines_below_warning_are_quiet() -> None:
    colored = (
        "\x1b[32m2026-12-01 16:01:55 +0000\x1b[0m - dagster.daemon - \x1b[34mINFO\x1b[0m - tick"
    )
    assert is_quiet(colored)
    assert is_quiet("2026-12-01 16:01:55 +0000 - dagster - DEBUG - job - RUN_START - x")
    assert not is_quiet("2026-12-01 16:01:55 +0000 - dagster.daemon - WARNING - no cursor")
    assert not is_quiet("Traceback (most recent call last):")
    assert not is_quiet("[2026-12-01 16:01:55,123: INFO/MainProcess] celery@dev ready.")
