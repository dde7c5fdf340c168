"""HFT sessions on the single-threaded `hft` queue: `hft_request_sensor` -> `hft_session_job`."""

import dagster as dg

from alphaswarm_orch.sessions.jobs import build_session_job
from alphaswarm_orch.sessions.sensors import build_request_sensor
from alphaswarm_orch.settings import Settings

hft_session_job = build_session_job("hft")
hft_request_sensor = build_request_sensor("hft", hft_session_job)


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(jobs=[hft_session_job], sensors=[hft_request_sensor])
