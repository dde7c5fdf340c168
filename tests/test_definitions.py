"""The code location loads, every job resolves, and every op is on a light queue."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from alphaswarm_orch.definitions import build_definitions, defs
from alphaswarm_orch.execution.executor import alphaswarm_celery_executor
from alphaswarm_orch.queues import LIGHT_QUEUES, QueueError, queue_tags
from alphaswarm_orch.routing import check_routing, step_queues
from alphaswarm_orch.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate_with_no_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    env["ALPHASWARM_STORAGE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_loading_the_definitions_warns_at_most_once_about_beta_apis() -> None:
    """Every warning shown, as a fresh process loading the code location sees them."""
    code = (
        "import warnings; warnings.simplefilter('always'); "
        "from alphaswarm_orch.definitions import defs; defs().get_repository_def()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("BetaWarning") <= 1, result.stderr


def test_every_job_resolves_and_routes_to_light_queues() -> None:
    loaded = defs()
    jobs = loaded.resolve_all_job_defs()
    assert "smoke_route_job" in {job.name for job in jobs}
    for job in jobs:
        for op, queue in step_queues(job).items():
            assert queue in LIGHT_QUEUES, f"{job.name}:{op} -> {queue}"


def test_executor_is_chosen_by_the_broker(tmp_path: Path) -> None:
    embedded = build_definitions(Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)}))
    embedded_executor = embedded.resolve_job_def("smoke_route_job").executor_def
    assert embedded_executor is dg.multi_or_in_process_executor
    celery = build_definitions(
        Settings.from_env(
            {"ALPHASWARM_STORAGE_DIR": str(tmp_path), "ALPHASWARM_BROKER_URL": "redis://r:6379/0"}
        )
    )
    assert celery.resolve_job_def("smoke_route_job").executor_def is alphaswarm_celery_executor


def _defs_with_op_on(queue: str) -> dg.Definitions:
    @dg.op(name="price_model", tags={"dagster-celery/queue": queue})
    def price_model() -> None: ...

    @dg.job(name="pricing_job")
    def pricing_job() -> None:
        price_model()

    return dg.Definitions(jobs=[pricing_job])


@pytest.mark.parametrize("queue", ["training", "gpu-burst"])
def test_op_on_heavy_or_unknown_queue_fails_the_load_naming_op_and_queue(queue: str) -> None:
    with pytest.raises(QueueError) as excinfo:
        check_routing(_defs_with_op_on(queue))
    message = str(excinfo.value)
    assert f"'{queue}'" in message and "'price_model'" in message and "'pricing_job'" in message


def test_asset_on_heavy_queue_fails_the_load() -> None:
    @dg.asset(op_tags={"dagster-celery/queue": "factors"})
    def factor_scores() -> None: ...

    loaded = dg.Definitions(
        assets=[factor_scores], jobs=[dg.define_asset_job("factors_job", selection="*")]
    )
    with pytest.raises(QueueError, match=r"'factors'.*'factor_scores'"):
        check_routing(loaded)


def test_tags_on_an_enclosing_graph_route_its_ops() -> None:
    @dg.op
    def inner() -> None: ...

    @dg.graph
    def nested() -> None:
        inner()

    @dg.job(name="outer_job")
    def outer_job() -> None:
        nested.tag({"dagster-celery/queue": "paper"})()

    @dg.job(name="bad_outer_job")
    def bad_outer_job() -> None:
        nested.tag({"dagster-celery/queue": "training"})()

    assert step_queues(outer_job) == {"nested.inner": "paper"}
    with pytest.raises(QueueError, match=r"'training'.*'nested\.inner'"):
        check_routing(dg.Definitions(jobs=[outer_job, bad_outer_job]))


def test_queue_tags_helper_is_checked_at_definition_time() -> None:
    with pytest.raises(QueueError, match="heavy executor queue"):
        dg.op(tags=queue_tags("rag"))(lambda: None)
