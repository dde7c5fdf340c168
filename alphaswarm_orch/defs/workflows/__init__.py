"""WorkflowRuntime: one job (and its schedule or trigger sensor) per spec in the workflows folder.

The folder is ALPHASWARM_WORKFLOWS_DIR, else the examples in `specs/`. It must be the same
for the run process and every `workflows` worker, since each loads the code location itself.
"""

import dagster as dg

from alphaswarm_orch.defs.workflows.jobs import build_job, build_schedule, build_trigger_sensor
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.workflows.spec import load_specs, workflows_dir


def build_defs(settings: Settings) -> dg.Definitions:
    specs = load_specs(workflows_dir(settings))
    jobs = {spec.name: build_job(spec, settings) for spec in specs}
    schedules = [
        build_schedule(spec, jobs[spec.name]) for spec in specs if spec.schedule is not None
    ]
    sensors = [
        build_trigger_sensor(spec, jobs[spec.name], jobs[spec.after])
        for spec in specs
        if spec.after is not None
    ]
    return dg.Definitions(jobs=list(jobs.values()), schedules=schedules, sensors=sensors)
