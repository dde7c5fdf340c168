"""Fixtures shared by the Airbyte tests: the fake Airbyte (checked against the vendored
OpenAPI document) and one connection of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from alphaswarm_orch.defs.ingestion.config import AirbyteConnection, Cadence
from tests.ingestion.fake_airbyte import FakeAirbyte, running_fake


@pytest.fixture
def fake() -> Iterator[FakeAirbyte]:
    with running_fake() as server:
        yield server
        assert server.violations == [], "fake Airbyte saw contract violations"


@pytest.fixture
def connection() -> AirbyteConnection:
    return AirbyteConnection(
        name="vendor_prices",
        connection_id=str(uuid.uuid4()),
        streams=("prices", "corporate_actions"),
        cadence=Cadence(cron="0 6 * * 1-5", max_age_hours=26),
    )
