"""Refusals (kill switch and the like) recorded in the ledger by whoever refused the work."""

from __future__ import annotations

from datetime import UTC, datetime

from alphaswarm_orch.broker.kill_switch import KillSwitch, KillSwitchEngaged
from alphaswarm_orch.ledger.db import ledger_engine, ledger_errors
from alphaswarm_orch.ledger.schema import ledger_refusals
from alphaswarm_orch.settings import Settings


def record_refusal(
    settings: Settings,
    *,
    source: str,
    reason: str,
    queue: str | None = None,
    run_id: str | None = None,
    request_id: str | None = None,
) -> None:
    """Write one `ledger_refusals` row: `source` (e.g. the sensor's name) refused work.

    Raises LedgerUnavailable when the ledger cannot be written, so a refusal is never
    silently lost: the caller's tick fails and is retried.
    """
    if not source.strip():
        raise ValueError("record_refusal needs a source (e.g. the sensor or op name)")
    if not reason.strip():
        raise ValueError(f"record_refusal from {source!r} needs a reason")
    engine = ledger_engine(settings)
    with ledger_errors(settings.ledger_url), engine.begin() as conn:
        conn.execute(
            ledger_refusals.insert().values(
                at=datetime.now(UTC),
                source=source,
                reason=reason,
                queue=queue,
                run_id=run_id,
                request_id=request_id,
            )
        )


def refuse_step(
    switch: KillSwitch,
    settings: Settings,
    *,
    source: str,
    where: str,
    queue: str | None,
    run_id: str | None = None,
    request_id: str | None = None,
) -> None:
    """`switch.check`, and record the refusal in the ledger before raising.

    For op bodies: it works under any executor (in-process, multiprocess, Celery), so a
    step refuses to start while the switch is set whoever runs it.
    """
    try:
        switch.check(where, queue)
    except KillSwitchEngaged as exc:
        record_refusal(
            settings,
            source=source,
            reason=str(exc),
            queue=queue,
            run_id=run_id,
            request_id=request_id,
        )
        raise
