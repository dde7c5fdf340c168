"""What a request launches must be launchable, decided before the sensor's cursor passes it.

Dagster's sensor daemon stores the cursor with the tick and reserves the runs first; a run
it then fails to create is retried from the stored tick, and the retry moves the cursor on.
So anything that would make run creation fail (an invalid run config, a tag Postgres cannot
store) is refused here, and the request dead-lettered, instead of reaching the daemon.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg

from alphaswarm_orch.requests.reader import ReadBatch
from alphaswarm_orch.text import TAG_MAX_LENGTH, sanitize, unsafe_reason

REASON_DETAIL_LENGTH = 500


def launched_job(context: dg.SensorEvaluationContext, job: dg.JobDefinition) -> dg.JobDefinition:
    """`job` as the code location launches it (resources bound, so their config, environment
    variables included, is checked as run creation checks it), when the sensor knows it."""
    repository = context.repository_def
    if repository is not None and repository.has_job(job.name):
        return repository.get_job(job.name)
    return job


def run_request_problem(job: dg.JobDefinition, run_request: dg.RunRequest) -> str | None:
    """Why Dagster could not create `run_request`'s run of `job` (a dead-letter reason), or None."""
    for name, value in {**run_request.tags, "run_key": run_request.run_key or ""}.items():
        # The same rule the tags were built with; checked again on the final request.
        reason = unsafe_reason(value)
        if reason is not None:
            return f"tag {name}: {reason}"
        if len(value) > TAG_MAX_LENGTH:
            return f"tag {name} is {len(value)} characters; the ledger stores {TAG_MAX_LENGTH}"
    problem = _config_string_problem(run_request.run_config, "run config")
    if problem is not None:
        return problem
    try:
        dg.validate_run_config(job, run_request.run_config)
    except Exception as exc:  # any refusal here would be a refusal at run creation
        detail = sanitize(f"{type(exc).__name__}: {exc}", REASON_DETAIL_LENGTH)
        return f"the run config is not valid for {job.name}: {detail}"
    return None


def _config_string_problem(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        reason = unsafe_reason(value)
        return None if reason is None else f"{path}: {reason}"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _config_string_problem(key, f"{path} key") or _config_string_problem(
                item, f"{path}.{sanitize(str(key), 64)}"
            )
            if problem is not None:
                return problem
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _config_string_problem(item, f"{path}.{index}")
            if problem is not None:
                return problem
    return None


def log_batch(log: logging.Logger, family: str, batch: ReadBatch) -> None:
    """Log what a sensor dead-lettered, and the entry it stopped before (reasons are sanitised)."""
    for letter in batch.dead_letters:
        log.warning(f"dead-lettered {family} request {letter.stream_id}: {letter.reason}")
    if batch.unresolved is not None:
        log.warning(
            f"{family} request {batch.unresolved.stream_id} is not resolved yet "
            f"({batch.unresolved.error}); the cursor stays before it and the next tick retries it"
        )
