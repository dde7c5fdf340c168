"""The run coordinator: Dagster's QueuedRunCoordinator that wakes the dequeue loop.

A run a sensor of the daemon queues is dequeued at once (`wakeup.DEQUEUE`), not on the next
dequeue interval; the limits (`max_concurrent_runs`, `tag_concurrency_limits`) are applied by
the same dequeue loop as before. A run queued elsewhere (the webserver's launchpad) is
dequeued on the interval.
"""

from __future__ import annotations

import dagster as dg

from alphaswarm_orch.daemon.wakeup import DEQUEUE


class WakingQueuedRunCoordinator(dg.QueuedRunCoordinator):
    """QueuedRunCoordinator, same config; wakes this process's dequeue loop per queued run."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = super().submit_run(context)
        DEQUEUE.set()
        return run
