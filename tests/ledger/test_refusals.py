"""record_refusal writes one row per refusal, on Postgres and on the embedded SQLite ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from alphaswarm_orch.ledger.db import LedgerUnavailable
from alphaswarm_orch.ledger.refusals import record_refusal
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.settings import Settings


def _rows(url: str) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(ledger_refusals).order_by(ledger_refusals.c.id)))
    finally:
        engine.dispose()


@pytest.mark.integration
def test_refusals_land_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"ALPHASWARM_POSTGRES_URL": postgres_url, "ALPHASWARM_STORAGE_DIR": str(tmp_path)}
    )
    record_refusal(settings, source="paper_request_sensor", reason="maintenance", queue="paper")
    record_refusal(
        settings, source="terraform_apply", reason="incident", run_id="r1", request_id="q1"
    )
    rows = _rows(settings.ledger_url)
    assert [(r.source, r.reason, r.queue, r.run_id, r.request_id) for r in rows] == [
        ("paper_request_sensor", "maintenance", "paper", None, None),
        ("terraform_apply", "incident", None, "r1", "q1"),
    ]
    assert all(r.at is not None for r in rows)


def test_refusals_land_on_embedded_sqlite(tmp_path: Path) -> None:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    record_refusal(settings, source="hft_request_sensor", reason="kill switch set")
    assert settings.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert [(r.source, r.reason) for r in _rows(settings.ledger_url)] == [
        ("hft_request_sensor", "kill switch set")
    ]


def test_refusal_needs_source_and_reason(tmp_path: Path) -> None:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    with pytest.raises(ValueError, match="needs a reason"):
        record_refusal(settings, source="paper_request_sensor", reason=" ")
    with pytest.raises(ValueError, match="needs a source"):
        record_refusal(settings, source="", reason="maintenance")
    assert not (tmp_path / "ledger.db").exists()


def test_unreachable_ledger_raises_naming_it(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/ledger"
    settings = Settings.from_env(
        {"ALPHASWARM_LEDGER_URL": url, "ALPHASWARM_STORAGE_DIR": str(tmp_path)}
    )
    with pytest.raises(LedgerUnavailable, match=r"127\.0\.0\.1:1/ledger is unavailable"):
        record_refusal(settings, source="paper_request_sensor", reason="maintenance")
