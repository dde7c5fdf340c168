"""Load-time check that every step of every job is routed to a light queue."""

from __future__ import annotations

import dagster as dg

from alphaswarm_orch.queues import DEFAULT_QUEUE, QUEUE_TAG, QueueError, check_light_queue


def step_queues(job: dg.JobDefinition) -> dict[str, str]:
    """Map each op (by handle) of `job` to the queue its step will be sent to."""
    queues: dict[str, str] = {}
    for handle in job.graph.iterate_node_handles():
        node = job.graph.get_node(handle)
        if isinstance(node.definition, dg.GraphDefinition):
            continue
        tags: dict[str, str] = {}
        ancestor = handle.parent
        while ancestor is not None:  # an enclosing graph's tags apply to its ops
            tags = {**job.graph.get_node(ancestor).tags, **tags}
            ancestor = ancestor.parent
        tags.update(node.tags)
        queues[str(handle)] = tags.get(QUEUE_TAG, DEFAULT_QUEUE)
    return queues


def check_routing(defs: dg.Definitions) -> None:
    """Raise QueueError naming the job, op and queue of the first step routed off the table."""
    problems: list[str] = []
    for job in defs.resolve_all_job_defs():
        for op, queue in step_queues(job).items():
            try:
                check_light_queue(queue, where=f"job {job.name!r}, op {op!r}")
            except QueueError as exc:
                problems.append(str(exc))
    if problems:
        raise QueueError("; ".join(problems))
