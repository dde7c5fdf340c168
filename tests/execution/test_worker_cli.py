"""`alphaswarm-orch worker`: refuses off-table queues, pins hft to concurrency 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from celery import Celery

from tests.support.runs import wait_for

WORKER = [sys.executable, "-m", "alphaswarm_orch.cli", "worker"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queues", "default,backtest"], "'backtest' is a heavy executor queue"),
        (["--queues", "gpu"], "unknown queue 'gpu'"),
        (["--queues", "hft", "--concurrency", "2"], "concurrency 1"),
        ([], "--queues is required"),
    ],
)
def test_worker_refuses_with_a_clear_message_and_exit_2(
    args: list[str], message: str, orch_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [*WORKER, *args], env=orch_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_worker_without_broker_names_the_variable(orch_env: dict[str, str]) -> None:
    env = {k: v for k, v in orch_env.items() if k != "ALPHASWARM_BROKER_URL"}
    result = subprocess.run(
        [*WORKER, "--queues", "default"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "ALPHASWARM_BROKER_URL" in result.stderr


def _pool(orch_env: dict[str, str], node: str) -> dict:
    app = Celery(broker=orch_env["ALPHASWARM_BROKER_URL"])
    try:
        stats = wait_for(
            lambda: app.control.inspect(destination=[node], timeout=2).stats(),
            30,
            f"stats from {node}",
        )
        queues = app.control.inspect(destination=[node], timeout=2).active_queues()
    finally:
        app.close()
    return {
        "max_concurrency": stats[node]["pool"]["max-concurrency"],
        "prefetch": stats[node]["prefetch_count"],
        "queues": sorted(q["name"] for q in queues[node]),
    }


@pytest.mark.integration
def test_hft_worker_runs_with_concurrency_one(orch_env: dict[str, str], start_worker) -> None:
    worker = start_worker("hft,paper", "w-hft")
    assert _pool(orch_env, worker.node) == {
        "max_concurrency": 1,
        "prefetch": 1,
        "queues": ["hft", "paper"],
    }


@pytest.mark.integration
def test_light_worker_takes_more_than_four_queues(orch_env: dict[str, str], start_worker) -> None:
    worker = start_worker("default,terraform,ingestion,workflows,paper", "w-many")
    pool = _pool(orch_env, worker.node)
    assert pool["queues"] == ["default", "ingestion", "paper", "terraform", "workflows"]
    assert pool["max_concurrency"] == 4
    assert pool["prefetch"] == 4  # Celery reports prefetch_multiplier (1) x concurrency
