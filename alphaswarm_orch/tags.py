"""Run tags this code location sets and the ledger reads. One place for their names."""

WORKLOAD_TAG = "alphaswarm/workload"
"""ingestion | workflow | paper | hft | terraform | other"""

ACTOR_TAG = "alphaswarm/actor"
REQUEST_ID_TAG = "alphaswarm/request_id"
SESSION_ID_TAG = "alphaswarm/session_id"

RUN_WORKER_PID_TAG = "alphaswarm/run_worker_pid"
RUN_WORKER_HOST_TAG = "alphaswarm/run_worker_host"
"""Set by the ForkserverRunLauncher on the runs it starts: the run worker process."""

WORKLOAD_KINDS = ("ingestion", "workflow", "paper", "hft", "terraform", "other")


def workload_tags(kind: str, **extra: str) -> dict[str, str]:
    """Job/run tags naming the workload kind (and actor/request id when known)."""
    if kind not in WORKLOAD_KINDS:
        raise ValueError(f"unknown workload kind {kind!r}: expected one of {WORKLOAD_KINDS}")
    return {WORKLOAD_TAG: kind, **{f"alphaswarm/{k}": v for k, v in extra.items()}}
