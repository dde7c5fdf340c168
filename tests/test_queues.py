from pathlib import Path

import pytest
import yaml

from alphaswarm_orch.queues import (
    HEAVY_QUEUES,
    LIGHT_QUEUES,
    QUEUE_TAG,
    SESSION_QUEUES,
    QueueError,
    check_heavy_queue,
    parse_queue_list,
    queue_tags,
    worker_concurrency,
)
from alphaswarm_orch.tags import WORKLOAD_TAG


def test_table_has_the_light_and_heavy_queues() -> None:
    assert list(LIGHT_QUEUES) == ["default", "paper", "terraform", "ingestion", "workflows", "hft"]
    assert {q for q, spec in LIGHT_QUEUES.items() if spec.scale_to_zero} == {
        "default",
        "terraform",
        "workflows",
    }
    assert {q: spec.concurrency for q, spec in LIGHT_QUEUES.items()}["hft"] == 1
    assert all(spec.concurrency == 4 for q, spec in LIGHT_QUEUES.items() if q != "hft")
    assert HEAVY_QUEUES == {"backtest", "training", "ml", "agents", "factors", "rag"}
    assert not set(LIGHT_QUEUES) & HEAVY_QUEUES


def test_queue_tags_routes_light_queues() -> None:
    assert queue_tags("paper") == {QUEUE_TAG: "paper"}


@pytest.mark.parametrize(
    ("queue", "message"),
    [("backtest", "heavy executor queue"), ("gpu", "unknown queue 'gpu'")],
)
def test_queue_tags_refuses_heavy_and_unknown(queue: str, message: str) -> None:
    with pytest.raises(QueueError, match=message):
        queue_tags(queue)


def test_dispatch_targets_must_be_heavy() -> None:
    assert check_heavy_queue("ml") == "ml"
    with pytest.raises(QueueError, match="light queue"):
        check_heavy_queue("default")
    with pytest.raises(QueueError, match="unknown queue"):
        check_heavy_queue("nope")


def test_parse_queue_list_accepts_commas_and_repeats() -> None:
    assert parse_queue_list(["default,workflows", "paper", "default"]) == [
        "default",
        "workflows",
        "paper",
    ]
    assert parse_queue_list("hft") == ["hft"]
    with pytest.raises(QueueError, match="no queue given"):
        parse_queue_list(" , ")
    with pytest.raises(QueueError, match="'rag'"):
        parse_queue_list("default,rag")


def test_worker_concurrency_from_table_and_hft_pinned_to_one() -> None:
    assert worker_concurrency(["default", "workflows"]) == 4
    assert worker_concurrency(["default", "hft"]) == 1
    assert worker_concurrency(["paper"], 8) == 8
    with pytest.raises(QueueError, match="concurrency 1"):
        worker_concurrency(["hft"], 2)
    with pytest.raises(QueueError, match="at least 1"):
        worker_concurrency(["default"], 0)


def test_run_coordinator_limits_for_sessions_are_the_pools_slots() -> None:
    """dagster.yaml admits as many paper/hft runs as their pools run at their largest
    (concurrency x max replicas): a run beyond that waits QUEUED in the run queue, visible,
    instead of STARTED with no step."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    limits = {
        entry["value"]: entry["limit"]
        for entry in config["run_coordinator"]["config"]["tag_concurrency_limits"]
        if entry["key"] == WORKLOAD_TAG
    }
    assert {q: limits[q] for q in SESSION_QUEUES} == {
        q: LIGHT_QUEUES[q].slots for q in SESSION_QUEUES
    }
    assert LIGHT_QUEUES["hft"].slots == LIGHT_QUEUES["hft"].max_replicas  # one per hft worker


def test_readme_queue_table_is_the_code_table() -> None:
    """The README's Queues table lists the light queues with the table's scale-to-zero and
    concurrency (its `drives` column is prose for readers)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Queues", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    table = {
        cells[0].strip(): (cells[2].strip().startswith("yes"), int(cells[3])) for cells in rows[2:]
    }
    assert table == {q: (spec.scale_to_zero, spec.concurrency) for q, spec in LIGHT_QUEUES.items()}
