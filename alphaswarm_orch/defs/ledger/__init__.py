"""The ledger domain: the sensor that mirrors Dagster's event log into `workload_runs`."""

import dagster as dg

from alphaswarm_orch.defs.ledger.sensors import build_ledger_mirror_sensor
from alphaswarm_orch.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(sensors=[build_ledger_mirror_sensor(settings)])
