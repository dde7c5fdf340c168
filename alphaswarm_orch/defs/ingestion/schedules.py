"""Jobs and schedules of the ingestion domain; crons come from connections.yaml."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from alphaswarm_orch.tags import workload_tags

FRESHNESS_CRON = "*/30 * * * *"


def asset_job(
    name: str, assets: dg.AssetsDefinition, description: str
) -> UnresolvedAssetJobDefinition:
    """A job for `assets` (and their checks), tagged as ingestion work."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(assets),
        tags=workload_tags("ingestion"),
        description=description,
    )


def cron_schedule(job: UnresolvedAssetJobDefinition, cron: str) -> dg.ScheduleDefinition:
    """`<job>_schedule`, in UTC like the market calendars in connections.yaml."""
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        tags=workload_tags("ingestion"),
    )


def freshness_job(checks: dg.AssetChecksDefinition) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "ingestion_check_freshness_job",
        selection=dg.AssetSelection.checks(checks),
        tags=workload_tags("ingestion"),
        description="Evaluate the freshness checks of every scheduled ingestion asset.",
    )
