"""Ingestion assets: one Airbyte sync per declared connection, and the dlt connector pulls.

Every step is routed to the `ingestion` queue. Asset keys are `ingestion/<source>/<table>`.
"""

import dagster as dg

from alphaswarm_orch.defs.ingestion.config import AirbyteConnection
from alphaswarm_orch.defs.ingestion.resources import AirbyteResource
from alphaswarm_orch.queues import queue_tags

GROUP = "ingestion"
INGESTION_QUEUE = "ingestion"

_STOPPING = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


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

        def terminated() -> bool:
            # Under Celery, terminating a run does not interrupt a running step: watch for it.
            run = context.instance.get_run_by_id(context.run_id)
            return run is not None and run.status in _STOPPING

        job = airbyte.sync(connection.connection_id, log=context.log, terminated=terminated)
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key, metadata=job.metadata())

    return _sync
