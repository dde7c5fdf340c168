"""`ledger_mirror_sensor`: keeps `workload_runs` caught up with Dagster's event log."""

import dagster as dg

from alphaswarm_orch.ledger.mirror import LedgerMirror, MirrorUnsupported
from alphaswarm_orch.settings import Settings

TICK_BUDGET_SECONDS = 20.0
"""Bounded work per tick (Dagster times sensor evaluations out at 60 s): a large backlog
drains over several ticks."""


def build_ledger_mirror_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="ledger_mirror_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Mirrors Dagster's event log into the workload_runs audit ledger.",
    )
    def ledger_mirror_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        """The real cursor lives in the ledger database (committed with the rows); the
        sensor cursor only shows it. A ledger outage fails the tick and the next tick retries."""
        try:
            mirror = LedgerMirror(
                settings,
                context.instance,
                asset_graph=context.repository_def.asset_graph if context.repository_def else None,
            )
        except MirrorUnsupported as exc:
            return dg.SkipReason(str(exc))
        results = mirror.sync(max_seconds=TICK_BUDGET_SECONDS)
        last = results[-1]
        events = sum(r.events for r in results)
        # An idle tick (nothing new, caught up) is routine: DEBUG, as the daemon's own lines.
        log = context.log.info if events or not last.drained else context.log.debug
        log(
            f"ledger mirror: {events} events, "
            f"{sum(r.runs for r in results)} run rows, "
            f"{sum(r.quarantined for r in results)} quarantined, cursor {last.cursor}, "
            f"{'caught up' if last.drained else f'lag {last.lag_seconds:.1f}s'}"
        )
        return dg.SensorResult(run_requests=[], cursor=str(last.cursor))

    return ledger_mirror_sensor
