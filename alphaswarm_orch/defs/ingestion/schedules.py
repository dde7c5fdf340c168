"""Jobs and schedules of the ingestion domain; crons come from connections.yaml.

Every schedule runs by default (a deployment that replaces Celery Beat ingests without anyone
turning schedules on). At each tick it checks that its source is configured where it is
evaluated (the variables its resources read at launch); if not, the tick is skipped with a
reason naming the missing variable, shown in the UI, instead of launching a run that fails.
"""

import os
from collections.abc import Mapping, Sequence

import dagster as dg

from alphaswarm_orch.compat.dagster import UnresolvedAssetJobDefinition
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


def missing_variables(
    required: Sequence[str], defined: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[str]:
    """`required` variables unset or empty, and `defined` ones unset (they may be empty)."""
    env = os.environ if env is None else env
    return [v for v in required if not (env.get(v) or "").strip()] + [
        v for v in defined if v not in env
    ]


def cron_schedule(
    job: UnresolvedAssetJobDefinition,
    cron: str,
    required: Sequence[str] = (),
    defined: Sequence[str] = (),
) -> dg.ScheduleDefinition:
    """`<job>_schedule`, in UTC like the market calendars in connections.yaml, RUNNING by
    default; a tick skips, naming the variable, while `required` (non-empty) or `defined`
    (may be empty) variables are missing."""
    name = f"{job.name}_schedule"
    tags = workload_tags("ingestion")

    def evaluate(context: dg.ScheduleEvaluationContext):
        missing = missing_variables(required, defined)
        if missing:
            return dg.SkipReason(
                f"{name}: not configured here: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set where the schedule is "
                "evaluated (the code server); set it there and on the ingestion workers "
                "(README, Ingestion)"
            )
        return dg.RunRequest(tags=tags)

    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        tags=tags,
        execution_fn=evaluate,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Runs {job.name} on `{cron}` (UTC)"
            + (f"; skips while {', '.join([*required, *defined])} is unset" if required else "")
        ),
    )


def freshness_job(checks: dg.AssetChecksDefinition) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "ingestion_check_freshness_job",
        selection=dg.AssetSelection.checks(checks),
        tags=workload_tags("ingestion"),
        description="Evaluate the freshness checks of every scheduled ingestion asset.",
    )
