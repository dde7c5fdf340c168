"""A code location whose Definitions a forkserver preloading this module builds once
(launch/prebuilt.py). Its op reports which process built them and from what, whether the
run worker uses the forkserver's instance, and what the forkserver's preloads set."""

import os
from pathlib import Path

import dagster as dg

from alphaswarm_orch.launch import prebuilt

INPUT = "ALPHASWARM_TEST_REUSABLE_INPUT"
"""A file the build reads (its text is in the op's report)."""
PRELOAD_SETS = "ALPHASWARM_TEST_PRELOAD_SETS"
"""Set by tests.launch.preload_sets at import, in a forkserver that preloads it."""


@dg.definitions
@prebuilt.reusable()
def defs() -> dg.Definitions:
    path = os.environ.get(INPUT)
    text = Path(path).read_text() if path and Path(path).is_file() else None
    built_in = os.getpid()

    @dg.op
    def report_build(context: dg.OpExecutionContext) -> None:
        from alphaswarm_orch.launch.worker import home_instance

        prebuilt_instance = home_instance.prebuilt[0] if home_instance.prebuilt else None
        context.log.info(
            f"built in {built_in} from {text!r}; run in {os.getpid()}; "
            f"forkserver's instance: {context.instance is prebuilt_instance}; "
            f"preload set {os.environ.get(PRELOAD_SETS)!r}"
        )

    @dg.job(executor_def=dg.in_process_executor)
    def reusable_job() -> None:
        report_build()

    return dg.Definitions(jobs=[reusable_job])
