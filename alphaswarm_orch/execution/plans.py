"""The one-step execution plan a worker runs, derived from a cached plan of the whole job.

`create_execution_plan(job, run_config, step_keys_to_execute=[key], known_state=...)` builds
every step of the job and then subsets it to one: its cost grows with the job (5 / 15 / 122 ms
CPU per step at 50 / 200 / 1,000 ops), so a fan-out of N steps paid O(N^2) in the workers.
What does not change between the steps of a run is the job's steps under its run config;
that plan (built with no known state) is kept per pool process, for the last few
(job, run config) pairs. Each step then takes it as Dagster's own build would after its
first pass: fresh copies of the step maps, the known state's dynamic mappings resolved into
them (`ExecutionPlan.resolve`, the same call the build makes for `known_state`), the step's
known state (retry attempts, dynamic mappings, output versions) attached, and
`build_subset_plan` for the one step, as the full build ends. Dynamic outputs, retries and
re-executions therefore take the same path as without the cache (tests/compat checks the
result equals `create_execution_plan`'s). The cached plan is never mutated.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from alphaswarm_orch.compat.dagster import ExecutionPlan, KnownExecutionState, ResolvedRunConfig

CACHED_PLANS = 4
"""Whole-job plans a pool process keeps (least recently used dropped): a few runs' worth."""


@dataclass(frozen=True)
class _JobPlan:
    job_def: dg.JobDefinition
    run_config: ResolvedRunConfig
    plan: ExecutionPlan


class PlanCache:
    """Whole-job plans by (job key, run config), bounded; `step_plan` derives one step's."""

    def __init__(self, size: int = CACHED_PLANS) -> None:
        self._size = size
        self._plans: OrderedDict[tuple[str, str], _JobPlan] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._plans)

    def step_plan(
        self,
        job_key: str,
        job_def: dg.JobDefinition,
        run_config: Mapping[str, Any],
        step_key: str,
        known_state: KnownExecutionState | None,
    ) -> ExecutionPlan:
        """What `create_execution_plan(job_def, run_config, [step_key], known_state)` gives."""
        cached = self._whole(job_key, job_def, run_config)
        known_state = known_state or KnownExecutionState()
        base = cached.plan
        plan = base._replace(
            step_dict=dict(base.step_dict),
            step_dict_by_key=dict(base.step_dict_by_key),
            executable_map=dict(base.executable_map),
            resolvable_map=dict(base.resolvable_map),
            known_state=known_state,
        )
        if known_state.dynamic_mappings:
            plan.resolve(known_state.dynamic_mappings)
        return plan.build_subset_plan([step_key], cached.job_def, cached.run_config)

    def _whole(
        self, job_key: str, job_def: dg.JobDefinition, run_config: Mapping[str, Any]
    ) -> _JobPlan:
        key = (job_key, json.dumps(run_config, sort_keys=True, default=repr))
        with self._lock:
            if key in self._plans:
                self._plans.move_to_end(key)
                return self._plans[key]
        resolved = ResolvedRunConfig.build(job_def, run_config)
        entry = _JobPlan(job_def, resolved, ExecutionPlan.build(job_def, resolved))
        with self._lock:
            self._plans[key] = entry
            self._plans.move_to_end(key)
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return entry
