"""The daemon's routine sensor-loop lines at DEBUG.

dagster-daemon's sensor daemon logs at INFO, for every sensor on every tick, that it is
checking the sensor and that the sensor skipped (no request, or the skip reason): with a
sub-second sensor loop that is most of an idle daemon's output. Dagster has no setting for
it (`--log-level` is one level for every daemon), so a filter on the sensor daemon's logger
demotes exactly those lines to DEBUG: `--log-level debug` still shows them, and every other
line (runs created and launched, errors) stays as it is. A tick's skip reason stays on the
sensor's tick history in the UI.
"""

from __future__ import annotations

import logging
import re

from alphaswarm_orch.daemon.wakeup import WakingSensorDaemon

SENSOR_DAEMON_LOGGERS = (
    "dagster.daemon.SensorDaemon",
    f"dagster.daemon.{WakingSensorDaemon.__name__}",  # a daemon logs under its class name
)
ROUTINE = re.compile(
    r"Checking for new runs for sensor: |Sensor \S+ skipped: |No run requests returned for "
)
"""The sensor daemon's per-tick lines (dagster/_daemon/sensor.py)."""


class RoutineAtDebug(logging.Filter):
    """Demote routine lines to DEBUG; drop them unless the logger shows DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not ROUTINE.match(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_routine_sensor_lines() -> None:
    for name in SENSOR_DAEMON_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RoutineAtDebug) for f in logger.filters):
            logger.addFilter(RoutineAtDebug())
