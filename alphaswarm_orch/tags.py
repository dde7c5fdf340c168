"""Run tags this code location sets and the ledger reads. One place for their names."""

from alphaswarm_orch.text import TAG_MAX_LENGTH, unsafe_reason

WORKLOAD_TAG = "alphaswarm/workload"
"""ingestion | workflow | paper | hft | terraform | other"""

ACTOR_TAG = "alphaswarm/actor"
REQUEST_ID_TAG = "alphaswarm/request_id"
SESSION_ID_TAG = "alphaswarm/session_id"
CLI_INVOCATION_TAG = "alphaswarm/cli_invocation"
"""Set by `alphaswarm-orch run` to find the run it started."""

RUN_WORKER_PID_TAG = "alphaswarm/run_worker_pid"
RUN_WORKER_HOST_TAG = "alphaswarm/run_worker_host"
"""Set by the ForkserverRunLauncher on the runs it starts: the run worker process."""

WORKLOAD_KINDS = ("ingestion", "workflow", "paper", "hft", "terraform", "other")


def workload_tags(kind: str, **extra: str) -> dict[str, str]:
    """Job/run tags naming the workload kind (and actor/request id when known).

    Every value must already be valid: no NUL, control or bidi character (`text.unsafe_reason`)
    and at most `TAG_MAX_LENGTH` characters, what the ledger stores; otherwise ValueError
    naming the tag. Tags are never built from values that were not checked.
    """
    if kind not in WORKLOAD_KINDS:
        raise ValueError(f"unknown workload kind {kind!r}: expected one of {WORKLOAD_KINDS}")
    tags = {WORKLOAD_TAG: kind, **{f"alphaswarm/{k}": v for k, v in extra.items()}}
    for name, value in tags.items():
        if not isinstance(value, str):
            raise ValueError(f"tag {name} must be a string, got {type(value).__name__}")
        reason = unsafe_reason(value)
        if reason is not None:
            raise ValueError(f"tag {name}: {reason}")
        if len(value) > TAG_MAX_LENGTH:
            raise ValueError(
                f"tag {name} is {len(value)} characters; the ledger stores {TAG_MAX_LENGTH}"
            )
    return tags
