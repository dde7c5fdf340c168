"""Ingestion (`ingestion` queue): Airbyte connection syncs and dlt connector pulls as assets.

Needs the `ingestion` extra (airbyte-api, dlt, dagster-dlt, duckdb).
"""

import os

import dagster as dg

from alphaswarm_orch.settings import Settings

# dlt reports anonymous usage over the network by default; this code location never phones home.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

from dagster_dlt import DagsterDltResource

from alphaswarm_orch.defs.ingestion.assets import (
    airbyte_sync_assets,
    market_data_pull_assets,
    reference_data_pull_assets,
    sample_pull_assets,
)
from alphaswarm_orch.defs.ingestion.checks import freshness_checks
from alphaswarm_orch.defs.ingestion.config import (
    IngestionConfig,
    config_path,
    load_ingestion_config,
)
from alphaswarm_orch.defs.ingestion.resources import (
    AIRBYTE_CLIENT_ID,
    AIRBYTE_CLIENT_SECRET,
    AIRBYTE_TOKEN,
    AIRBYTE_URL,
    MARKET_DATA_API_KEY,
    MARKET_DATA_URL,
    REFERENCE_DB_URL,
    AirbyteResource,
    MarketDataApi,
    PullStorage,
    ReferenceDatabase,
)
from alphaswarm_orch.defs.ingestion.schedules import (
    FRESHNESS_CRON,
    asset_job,
    cron_schedule,
    freshness_job,
)


def airbyte_resource(config: IngestionConfig) -> AirbyteResource:
    """The Airbyte resource with secrets bound to the environment (read at launch, not load)."""
    if config.airbyte.auth == "bearer":
        credentials = {"bearer_token": dg.EnvVar(AIRBYTE_TOKEN)}
    else:
        credentials = {
            "client_id": dg.EnvVar(AIRBYTE_CLIENT_ID),
            "client_secret": dg.EnvVar(AIRBYTE_CLIENT_SECRET),
        }
    return AirbyteResource(
        server_url=dg.EnvVar(AIRBYTE_URL), **credentials, **config.airbyte.tunables
    )


def build_defs(settings: Settings, config: IngestionConfig | None = None) -> dg.Definitions:
    config = config or load_ingestion_config(config_path(settings))
    storage = PullStorage(settings)
    owners = config.owners

    sample = sample_pull_assets(storage, owners)
    market = market_data_pull_assets(storage, owners, config.market_data_lookback_days)
    reference = reference_data_pull_assets(storage, config.reference_tables, owners)
    syncs = [(c, airbyte_sync_assets(c, owners)) for c in config.airbyte_connections]

    sample_job = asset_job(
        "ingestion_sample_job",
        sample,
        "Load the sample market data shipped with the package into the ingestion store.",
    )
    airbyte_vars = (
        (AIRBYTE_URL, AIRBYTE_TOKEN)
        if config.airbyte.auth == "bearer"
        else (AIRBYTE_URL, AIRBYTE_CLIENT_ID, AIRBYTE_CLIENT_SECRET)
    )
    scheduled = [
        (
            asset_job("ingestion_pull_market_data_job", market, "Pull market data."),
            market,
            config.market_data,
            ((MARKET_DATA_URL,), (MARKET_DATA_API_KEY,)),
        ),
        (
            asset_job("ingestion_pull_reference_data_job", reference, "Pull reference tables."),
            reference,
            config.reference_data,
            ((REFERENCE_DB_URL,), ()),
        ),
    ] + [
        (
            asset_job(f"ingestion_sync_{c.name}_job", assets, f"Sync Airbyte connection {c.name}."),
            assets,
            c.cadence,
            (airbyte_vars, ()),
        )
        for c, assets in syncs
    ]
    checks = freshness_checks(
        {key: cadence.max_age_hours for _j, assets, cadence, _v in scheduled for key in assets.keys}
    )
    check_job = freshness_job(checks)

    resources: dict[str, object] = {
        "dlt": DagsterDltResource(),
        "market_data_api": MarketDataApi(
            base_url=dg.EnvVar(MARKET_DATA_URL), api_key=dg.EnvVar(MARKET_DATA_API_KEY)
        ),
        "reference_database": ReferenceDatabase(url=dg.EnvVar(REFERENCE_DB_URL)),
    }
    if syncs:
        resources["airbyte"] = airbyte_resource(config)
    return dg.Definitions(
        assets=[sample, market, reference, *(assets for _c, assets in syncs)],
        asset_checks=[checks],
        jobs=[sample_job, check_job, *(job for job, _a, _c, _v in scheduled)],
        schedules=[
            *(
                cron_schedule(job, cadence.cron, *variables)
                for job, _a, cadence, variables in scheduled
            ),
            cron_schedule(check_job, FRESHNESS_CRON),
        ],
        resources=resources,
    )
