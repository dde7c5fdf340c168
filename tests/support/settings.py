"""The resources the code location binds for its ops and sensors, for tests that run a job or
a sensor on its own."""

from __future__ import annotations

from alphaswarm_orch.settings import RESOURCE_KEY, Settings


def settings_resources() -> dict[str, Settings]:
    """The code location's Settings resource, read from the environment as it is now."""
    return {RESOURCE_KEY: Settings.from_env()}
