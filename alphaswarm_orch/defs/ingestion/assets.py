"""Ingestion assets: one Airbyte sync per declared connection, and the dlt connector pulls.

Every step is routed to the `ingestion` queue. Asset keys are `ingestion/<source>/<table>`.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.extract.source import DltSource

from alphaswarm_orch.defs.ingestion.config import AirbyteConnection, SqlTable
from alphaswarm_orch.defs.ingestion.resources import (
    AirbyteResource,
    MarketDataApi,
    PullStorage,
    ReferenceDatabase,
)
from alphaswarm_orch.defs.ingestion.sources import (
    DEFAULT_LOOKBACK_DAYS,
    SPEC_ONLY_DATABASE,
    PullStats,
    file_pages,
    market_data_source,
    reference_data_source,
)
from alphaswarm_orch.guard import run_ended_check
from alphaswarm_orch.queues import queue_tags

GROUP = "ingestion"
INGESTION_QUEUE = "ingestion"


def airbyte_sync_assets(
    connection: AirbyteConnection, owners: tuple[str, ...]
) -> dg.AssetsDefinition:
    """One step per connection: a sync materializes all of the connection's streams at once."""
    specs = [
        dg.AssetSpec(
            key=[GROUP, connection.name, stream],
            description=f"Airbyte stream `{stream}` of connection `{connection.name}`.",
            group_name=GROUP,
            kinds={"airbyte"},
            owners=list(owners),
            metadata={"airbyte/connection_id": connection.connection_id},
        )
        for stream in connection.streams
    ]

    @dg.multi_asset(
        name=f"airbyte_sync_{connection.name}",
        specs=specs,
        op_tags=queue_tags(INGESTION_QUEUE),
        can_subset=False,
    )
    def _sync(context: dg.AssetExecutionContext, airbyte: AirbyteResource):
        """Run (or attach to) one Airbyte sync of the connection and wait for it."""

        # Under executors that do not interrupt a running step on termination: watch for it.
        terminated = run_ended_check(context.instance, context.run.run_id)
        job = airbyte.sync(connection.connection_id, log=context.log, terminated=terminated)
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key, metadata=job.metadata())

    return _sync


@dataclass
class _PullTranslator(DagsterDltTranslator):
    """Keys `ingestion/<source>/<table>`, one group, our owners; no phantom upstream keys."""

    owners: tuple[str, ...] = ()
    description: str | None = None
    """Per-table description template (`{table}`); default: the dlt resource's docstring."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        destination = data.destination.destination_name if data.destination else "dlt"
        table = data.resource.name
        return spec.replace_attributes(
            key=[GROUP, data.resource.source_name, table],
            deps=[],
            description=self.description.format(table=table)
            if self.description
            else spec.description,
            group_name=GROUP,
            owners=list(self.owners),
            kinds={"dlt", destination},
        )


def _pull(
    context: dg.AssetExecutionContext,
    dlt: DagsterDltResource,
    storage: PullStorage,
    source: DltSource,
    stats: PullStats | None = None,
) -> Iterator[dg.MaterializeResult]:
    """Run one pull and yield per-table results with column schema and row counts.

    A page that fails validation stops extraction before anything is loaded. Metadata adds
    `rows_fetched` (read from the source) next to `rows_written` (loaded into the table),
    the incremental start, and `duplicate_keys` (a warning) when one load repeated a key.
    """
    with storage.run_pipeline(source.name, context.run.run_id, context.log) as pipeline:
        results = dlt.run(context=context, dlt_source=source, dlt_pipeline=pipeline)
        for result in results.fetch_row_count():
            if stats is not None and isinstance(result, dg.MaterializeResult):
                result = _with_stats(context, result, stats)
            yield result


def _with_stats(
    context: dg.AssetExecutionContext, result: dg.MaterializeResult, stats: PullStats
) -> dg.MaterializeResult:
    table = result.asset_key.path[-1] if result.asset_key else ""
    metadata = dict(result.metadata or {})
    written = metadata.get("rows_loaded")
    extra: dict[str, object] = {
        "rows_fetched": stats.fetched.get(table, 0),
        "rows_written": written if written is not None else 0,
        "incremental_since": stats.since.get(table, "full read"),
    }
    duplicates = stats.duplicates.get(table, 0)
    if duplicates:
        message = (
            f"{duplicates} row(s) of {table} repeated a key already seen in this load; "
            "the table keeps one row per key"
        )
        context.log.warning(message)
        extra["duplicate_keys"] = duplicates
        extra["warning"] = message
    return result._replace(metadata={**metadata, **extra})


def sample_pull_assets(storage: PullStorage, owners: tuple[str, ...]) -> dg.AssetsDefinition:
    """The embedded default's main job: the sample shipped in the package, no network."""

    @dlt_assets(
        dlt_source=market_data_source(file_pages(), name="sample"),
        dlt_pipeline=storage.declared_pipeline("sample"),
        name="ingestion_sample_pull",
        dagster_dlt_translator=_PullTranslator(owners),
        op_tags=queue_tags(INGESTION_QUEUE),
    )
    def _assets(context: dg.AssetExecutionContext, dlt: DagsterDltResource):
        stats = PullStats()
        source = market_data_source(file_pages(), name="sample", stats=stats)
        yield from _pull(context, dlt, storage, source, stats)

    return _assets


def market_data_pull_assets(
    storage: PullStorage,
    owners: tuple[str, ...],
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> dg.AssetsDefinition:
    """Instruments and daily bars (incremental, `lookback_days` re-read) from the REST API."""

    def unread(endpoint: str, params: dict[str, str]) -> Iterator[tuple[str, object]]:
        raise RuntimeError("declaration-only source: the run reads through MarketDataApi")

    @dlt_assets(
        dlt_source=market_data_source(unread),
        dlt_pipeline=storage.declared_pipeline("market_data"),
        name="ingestion_market_data_pull",
        dagster_dlt_translator=_PullTranslator(owners),
        op_tags=queue_tags(INGESTION_QUEUE),
    )
    def _assets(
        context: dg.AssetExecutionContext, dlt: DagsterDltResource, market_data_api: MarketDataApi
    ):
        stats = PullStats()
        source = market_data_source(
            market_data_api.pages(), lookback_days=lookback_days, stats=stats
        )
        yield from _pull(context, dlt, storage, source, stats)

    return _assets


def reference_data_pull_assets(
    storage: PullStorage, tables: tuple[SqlTable, ...], owners: tuple[str, ...]
) -> dg.AssetsDefinition:
    """Reference tables copied from a SQL database."""

    @dlt_assets(
        dlt_source=reference_data_source(SPEC_ONLY_DATABASE, tables),
        dlt_pipeline=storage.declared_pipeline("reference_data"),
        name="ingestion_reference_data_pull",
        dagster_dlt_translator=_PullTranslator(
            owners,
            "Table `{table}` of the reference database: by its cursor column, merged on its "
            "primary key, else read whole and replaced.",
        ),
        op_tags=queue_tags(INGESTION_QUEUE),
    )
    def _assets(
        context: dg.AssetExecutionContext,
        dlt: DagsterDltResource,
        reference_database: ReferenceDatabase,
    ):
        yield from _pull(
            context, dlt, storage, reference_data_source(reference_database.url, tables)
        )

    return _assets
