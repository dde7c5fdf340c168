"""Paper-trading sessions: `paper_request_sensor` launches `paper_session_job` runs."""

import dagster as dg

from alphaswarm_orch.sessions.jobs import build_session_job
from alphaswarm_orch.sessions.sensors import build_request_sensor
from alphaswarm_orch.settings import Settings

paper_session_job = build_session_job("paper")
paper_request_sensor = build_request_sensor("paper", paper_session_job)


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(jobs=[paper_session_job], sensors=[paper_request_sensor])
