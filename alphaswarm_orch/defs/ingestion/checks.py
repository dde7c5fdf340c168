"""Freshness checks: warn when an ingested asset's last materialization is older than allowed.

Hand-written rather than `dg.build_last_update_freshness_checks` so the check step carries the
ingestion queue tag like every other step of this domain (that builder takes no op tags).
"""

import time
from collections.abc import Iterator, Mapping

import dagster as dg

from alphaswarm_orch.queues import queue_tags

CHECK_NAME = "fresh"


def freshness_checks(max_age_hours: Mapping[dg.AssetKey, float]) -> dg.AssetChecksDefinition:
    """One `fresh` check per asset, all evaluated in one step on the ingestion queue."""
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            description=f"Last materialization at most {hours:g} h old.",
        )
        for key, hours in max_age_hours.items()
    ]

    @dg.multi_asset_check(
        specs=specs,
        name="ingestion_freshness_checks",
        op_tags=queue_tags("ingestion"),
        can_subset=True,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        now = time.time()
        for check_key in context.selected_asset_check_keys:
            key = check_key.asset_key
            limit = max_age_hours[key]
            event = context.instance.get_latest_materialization_event(key)
            age_hours = None if event is None else (now - event.timestamp) / 3600
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=age_hours is not None and age_hours <= limit,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "age_hours": round(age_hours, 2) if age_hours is not None else "never",
                    "max_age_hours": limit,
                },
            )

    return _check
