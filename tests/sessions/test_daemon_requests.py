"""The real daemon: a request whose run Postgres could not store is dead-lettered, not lost.

Before the boundary, such a request (a NUL in `actor`) reached the daemon: run creation
failed after inserting an untagged run row, the retried tick submitted that row and moved the
cursor past the request: no run with its tags, no dead letter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pytest
import redis

from alphaswarm_orch.broker.keys import dead_letter_stream, request_stream
from alphaswarm_orch.tags import ACTOR_TAG, REQUEST_ID_TAG, SESSION_ID_TAG
from tests.support.processes import background, read_log
from tests.support.runs import REPO, wait_for

pytestmark = pytest.mark.integration


def start_payload(request_id: str, actor: str) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "type": "paper.start",
            "request_id": request_id,
            "actor": actor,
            "session_id": "s-daemon",
            "symbols": ["BTC-USD"],
        }
    )


def test_the_daemon_dead_letters_an_unstorable_request_and_launches_the_next(
    sensor_env: dict[str, str], instance: dg.DagsterInstance, redis_client: redis.Redis
) -> None:
    # Paper runs stay QUEUED (limit 0): this test is about run creation, not execution.
    config = Path(sensor_env["DAGSTER_HOME"]) / "dagster.yaml"
    text = config.read_text()
    paper_limit = "value: paper\n        limit: 20"
    assert paper_limit in text
    config.write_text(text.replace(paper_limit, "value: paper\n        limit: 0"))
    stream = request_stream("paper")
    bad = redis_client.xadd(stream, {"payload": start_payload("r-nul", "ops\x00team")}).decode()
    good = redis_client.xadd(stream, {"payload": start_payload("r-good", "ops")}).decode()

    argv = [sys.executable, "-m", "alphaswarm_orch.cli", "daemon", "-w", "workspace.yaml"]
    with background(argv, sensor_env, cwd=str(REPO)) as daemon:
        try:
            wait_for(
                lambda: any(
                    s.instigator_name == "paper_request_sensor"
                    and s.instigator_data is not None
                    and s.instigator_data.cursor == good
                    for s in instance.all_instigator_state()
                ),
                180,
                "paper_request_sensor's cursor to pass both requests",
                interval=0.5,
            )
        except AssertionError:
            print(read_log(daemon)[-6000:])
            raise
    # Sensor-loop chatter is at DEBUG (daemon/logs.py); what the daemon did stays at INFO.
    log = read_log(daemon)
    assert "Checking for new runs for sensor" not in log and " skipped: " not in log, log[-3000:]
    assert "Creating new run for paper_request_sensor" in log, log[-3000:]

    [letter] = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in redis_client.xrange(dead_letter_stream("paper"))
    ]
    assert letter["source_id"] == bad
    assert "actor: character \\x00 (control character) at position 3" in letter["reason"]
    runs = list(instance.get_runs(filters=dg.RunsFilter(job_name="paper_session_job")))
    assert [(r.tags.get(REQUEST_ID_TAG), r.tags.get(ACTOR_TAG)) for r in runs] == [
        ("r-good", "ops")
    ]
    assert runs[0].tags[SESSION_ID_TAG] == "s-daemon"
