"""Workflow specs: YAML files in a folder, validated whole before any job is built.

A spec names a workflow, when it runs (a cron `schedule`, or `trigger: manual` for UI/CLI
launches) and its steps. A step is either a light step from the registry (`op:`) that runs on
a light queue here, or a `dispatch:` of a named task to a heavy executor queue, the one place
where heavy queue names are legal. Every problem is reported with the file, line and field, so
a bad spec fails the code location load with an error its author can act on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from alphaswarm_orch.queues import QueueError, check_heavy_queue, check_light_queue
from alphaswarm_orch.settings import WORKFLOWS_DIR, Settings, SettingsError
from alphaswarm_orch.workflows.steps import LIGHT_STEPS
from alphaswarm_orch.yamlspec import (
    Loc,
    SpecProblem,
    YamlDocument,
    YamlSpecError,
    error_message,
    load_document,
)

DEFAULT_WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "defs" / "workflows" / "specs"
WORKFLOWS_QUEUE = "workflows"
SPEC_SUFFIXES = (".yaml", ".yml")

# Names become parts of Dagster job and op names.
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=60)]

MAX_DISPATCH_TIMEOUT_SECONDS = 7 * 24 * 3600.0
"""Longest a dispatch step may wait for its task (a week): anything longer is a mistake."""
MAX_CHAIN = 500
"""Most steps one `depends_on` chain may hold: Dagster builds a job's graph recursively, and a
chain of ~1,200 steps exceeds Python's recursion limit there."""


class DispatchSpec(BaseModel):
    """`send_task(task, args, kwargs, queue=queue)`; the wait covers queueing and running."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1)
    queue: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout_seconds: float = 3600.0

    @field_validator("timeout_seconds")
    @classmethod
    def _bounded_timeout(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value <= MAX_DISPATCH_TIMEOUT_SECONDS):
            raise ValueError(
                f"timeout_seconds {value!r} is not a number of seconds above 0 and at most "
                f"{MAX_DISPATCH_TIMEOUT_SECONDS:g} (7 days)"
            )
        return value


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    description: str | None = None
    depends_on: list[Name] = []
    op: str | None = None
    params: dict[str, Any] = {}
    queue: str = WORKFLOWS_QUEUE
    dispatch: DispatchSpec | None = None


class AfterTrigger(BaseModel):
    """Run when the named workflow's job succeeds."""

    model_config = ConfigDict(extra="forbid")
    after: Name


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    description: str | None = None
    schedule: str | None = None
    trigger: Literal["manual"] | AfterTrigger | None = None
    steps: list[StepSpec] = Field(min_length=1)
    _locator: YamlDocument | None = PrivateAttr(default=None)

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger_shape(cls, value: Any) -> Any:
        """One clear message instead of one per member of the union."""
        if value is None or value == "manual":
            return value
        if (
            isinstance(value, dict)
            and set(value) == {"after"}
            and isinstance(value["after"], str)
            and re.fullmatch(NAME_PATTERN, value["after"])
        ):
            return value
        raise ValueError(
            f"trigger {value!r} is neither `manual` nor `{{after: <workflow name>}}` (run when "
            "that workflow's job succeeds)"
        )

    @property
    def source(self) -> Path | None:
        """The file this spec was loaded from."""
        return self._locator.path if self._locator else None

    @property
    def after(self) -> str | None:
        """The workflow whose success triggers this one, if any."""
        return self.trigger.after if isinstance(self.trigger, AfterTrigger) else None

    def problem(self, loc: Loc, message: str) -> SpecProblem:
        """A problem found after loading (across specs), located in this spec's file."""
        assert self._locator is not None, "only loaded specs are located"
        return self._locator.problem(loc, message)


class WorkflowSpecError(YamlSpecError):
    """One or more invalid workflow specs; each problem names its file, line and field."""

    what = "workflow spec"
    advice = "Fix the spec, or move it out of the workflows folder."


def workflows_dir(settings: Settings) -> Path:
    """The folder of specs: ALPHASWARM_WORKFLOWS_DIR, else the examples shipped in the package."""
    path = settings.workflows_dir
    if path is None:
        return DEFAULT_WORKFLOWS_DIR
    if not path.is_dir():
        raise SettingsError(
            f"{WORKFLOWS_DIR}={str(path)!r} is not a directory: point it at a folder of workflow "
            f"spec files (*.yaml), or unset it to use {DEFAULT_WORKFLOWS_DIR}"
        )
    return path


def load_specs(directory: Path) -> list[WorkflowSpec]:
    """Load every spec in `directory` (sorted by file name); all problems are raised at once."""
    problems: list[SpecProblem] = []
    specs: list[WorkflowSpec] = []
    first_seen: dict[str, WorkflowSpec] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()):
        try:
            spec = load_spec(path)
        except WorkflowSpecError as exc:
            problems += exc.problems
            continue
        if spec.name in first_seen:
            problems.append(
                spec.problem(
                    ("name",),
                    f"duplicate workflow name {spec.name!r}: already defined in "
                    f"{first_seen[spec.name].source}. Workflow names must be unique.",
                )
            )
            continue
        first_seen[spec.name] = spec
        specs.append(spec)
    if not problems:  # an `after` naming a workflow in a broken file is not unknown
        problems = _trigger_problems(first_seen)
    if problems:
        raise WorkflowSpecError(problems)
    return specs


def _trigger_problems(specs: Mapping[str, WorkflowSpec]) -> list[SpecProblem]:
    problems: list[SpecProblem] = []
    for spec in specs.values():
        if spec.after is None:
            continue
        if spec.after not in specs:
            problems.append(
                spec.problem(
                    ("trigger", "after"),
                    f"unknown workflow {spec.after!r}: workflows are {', '.join(specs)}",
                )
            )
            continue
        chain = [spec.name]
        while (upstream := specs[chain[-1]].after) is not None and upstream in specs:
            if upstream in chain:
                if upstream == spec.name:
                    problems.append(
                        spec.problem(
                            ("trigger", "after"),
                            f"trigger cycle: {' -> '.join([*chain, upstream])} (each would "
                            "start the next forever)",
                        )
                    )
                break
            chain.append(upstream)
    return problems


def load_spec(path: Path) -> WorkflowSpec:
    """Parse and validate one spec file, raising WorkflowSpecError with every problem found."""
    located = load_document(path, WorkflowSpecError)
    data = located.data
    if not isinstance(data, dict):
        raise WorkflowSpecError(
            [located.problem((), "a workflow spec is a mapping with name, steps, schedule/trigger")]
        )
    problems = located.duplicate_keys()
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems += located.validation_problems(exc)
        raise WorkflowSpecError(problems) from exc
    problems += [located.problem(loc, message) for loc, message in _semantic_problems(spec)]
    if problems:
        raise WorkflowSpecError(problems)
    spec._locator = located
    return spec


def _semantic_problems(spec: WorkflowSpec) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if spec.schedule is not None and spec.trigger is not None:
        problems.append((("trigger",), "give either `schedule` (cron) or `trigger`, not both"))
    if spec.schedule is not None:
        try:
            dg.ScheduleDefinition(
                name="cron_check", job_name="cron_check", cron_schedule=spec.schedule
            )
        except dg.DagsterInvalidDefinitionError:
            problems.append(
                (
                    ("schedule",),
                    f"invalid cron schedule {spec.schedule!r}: use five valid fields, minute "
                    "(0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-6), "
                    "e.g. '0 2 * * *'",
                )
            )

    index: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.name in index:
            problems.append(
                (
                    ("steps", i, "name"),
                    f"duplicate step name {step.name!r} (also steps[{index[step.name]}])",
                )
            )
        else:
            index[step.name] = i
    for i, step in enumerate(spec.steps):
        problems += _step_problems(i, step)
        for j, dep in enumerate(step.depends_on):
            if dep not in index:
                problems.append(
                    (
                        ("steps", i, "depends_on", j),
                        f"unknown step {dep!r} in depends_on of {step.name!r}: "
                        f"steps are {', '.join(index)}",
                    )
                )
    if not problems:
        cycle = _find_cycle(spec)
        if cycle:
            problems.append(
                (
                    ("steps", index[cycle[0]], "depends_on"),
                    f"dependency cycle: {' -> '.join(cycle)}",
                )
            )
        else:
            head, length = _longest_chain(spec)
            if length > MAX_CHAIN:
                problems.append(
                    (
                        ("steps", index[head], "depends_on"),
                        f"a depends_on chain of {length} steps starts at {head!r}: at most "
                        f"{MAX_CHAIN} steps may depend on one another in a row; split the "
                        "workflow and start the next part with `trigger: {after: ...}`",
                    )
                )
    return problems


def _step_problems(i: int, step: StepSpec) -> list[tuple[Loc, str]]:
    at: Loc = ("steps", i)
    where = f"step {step.name!r}"
    if (step.op is None) == (step.dispatch is None):
        return [
            (
                at,
                f"{where} needs exactly one of `op` (a light step: {', '.join(LIGHT_STEPS)}) "
                "or `dispatch` (a task on an executor queue)",
            )
        ]
    problems: list[tuple[Loc, str]] = []
    if step.dispatch is not None:
        for key in ("queue", "params"):
            if key in step.model_fields_set:
                problems.append(
                    (
                        (*at, key),
                        f"{where} is a dispatch: it runs on the {WORKFLOWS_QUEUE!r} queue and "
                        f"takes no `{key}`; put the target in dispatch.queue and the task's "
                        "inputs in dispatch.args/kwargs",
                    )
                )
        try:
            check_heavy_queue(step.dispatch.queue, where=where)
        except QueueError as exc:
            problems.append(((*at, "dispatch", "queue"), str(exc)))
        for key in ("args", "kwargs"):
            try:
                json.dumps(getattr(step.dispatch, key))
            except (TypeError, ValueError) as exc:
                problems.append(
                    ((*at, "dispatch", key), f"must be JSON data (quote dates as strings): {exc}")
                )
        return problems
    light = LIGHT_STEPS.get(step.op or "")
    if light is None:
        problems.append(
            (
                (*at, "op"),
                f"unknown light step {step.op!r} in {where}: available {', '.join(LIGHT_STEPS)}",
            )
        )
    else:
        try:
            light.params.model_validate(step.params)
        except ValidationError as exc:
            problems += [((*at, "params", *err["loc"]), error_message(err)) for err in exc.errors()]
    try:
        check_light_queue(step.queue, where=where)
    except QueueError as exc:
        problems.append(((*at, "queue"), str(exc)))
    return problems


def _find_cycle(spec: WorkflowSpec) -> list[str]:
    """A dependency cycle as [a, b, ..., a], or [] if there is none.

    Depth-first with an explicit stack: a chain of thousands of steps is a deep search, and
    must not be a deep Python recursion.
    """
    deps = {step.name: step.depends_on for step in spec.steps}
    state: dict[str, str] = {}
    for root in deps:
        if root in state:
            continue
        state[root] = "active"
        path = [root]
        pending = [iter(deps[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(dep) == "active":
                return [*path[path.index(dep) :], dep]
            elif dep not in state:
                state[dep] = "active"
                path.append(dep)
                pending.append(iter(deps[dep]))
    return []


def _longest_chain(spec: WorkflowSpec) -> tuple[str, int]:
    """The step that starts the longest `depends_on` chain and its length (an acyclic spec).

    Kahn's order, dependencies first, so each step's chain is known from its dependencies'."""
    deps = {step.name: set(step.depends_on) for step in spec.steps}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    for name, names in deps.items():
        for dep in names:
            dependents[dep].append(name)
    waiting = {name: len(names) for name, names in deps.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    length: dict[str, int] = {}
    while ready:
        name = ready.pop()
        length[name] = 1 + max((length[dep] for dep in deps[name]), default=0)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    head = max(deps, key=lambda name: length[name])
    return head, length[head]
