"""The code location: every domain's definitions, the executor chosen once, IO on shared storage."""

import warnings

import dagster as dg

from alphaswarm_orch.compat.dagster import share_sensor_instances
from alphaswarm_orch.defs import hft, ingestion, ledger, paper, smoke, terraform, workflows
from alphaswarm_orch.execution import executor_for
from alphaswarm_orch.launch import prebuilt
from alphaswarm_orch.routing import check_routing
from alphaswarm_orch.settings import RESOURCE_KEY, Settings

DOMAINS = (smoke, workflows, terraform, ingestion, paper, hft, ledger)

# No sensor here sets `owners`, but Dagster re-creates each sensor with `owners=None` when it
# resolves the repository, and its beta check warns for the parameter's mere presence: once
# per resolution, three times per code load. Only that warning is ignored.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
    category=dg.BetaWarning,
)


def build_definitions(settings: Settings) -> dg.Definitions:
    domain_defs = dg.Definitions.merge(
        *(domain.build_defs(settings) for domain in DOMAINS),
        # The settings, read once per process, for the ops and sensors that need them.
        dg.Definitions(resources={RESOURCE_KEY: settings}),
    )
    check_routing(domain_defs)
    # Only apply these settings once: the executor and the IO manager every step shares.
    return dg.Definitions.merge(
        domain_defs,
        dg.Definitions(
            executor=executor_for(settings),
            resources={"io_manager": dg.FilesystemIOManager(base_dir=str(settings.io_dir))},
        ),
    )


def _resolve_jobs(definitions: dg.Definitions) -> None:
    definitions.get_repository_def().get_all_jobs()


# Built once in the run launcher's forkserver; a run worker reuses that copy while the
# environment and the files it was built from are unchanged (alphaswarm_orch/launch/prebuilt.py).
@dg.definitions
@prebuilt.reusable(warm=_resolve_jobs)
def defs() -> dg.Definitions:
    # The process that loads the code location evaluates its sensors: one instance for all
    # of their ticks, not one built per tick (alphaswarm_orch.compat.dagster).
    share_sensor_instances()
    return build_definitions(Settings.from_env())
