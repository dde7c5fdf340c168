"""The slim worker's install set: what `pip install .` installs (the Dockerfile's worker
target) has no webserver/UI package, and a worker limited to that set runs smoke_route_job.

No image or second venv is built (minutes, with the ingestion stack in the core): the worker
runs here with every module of a distribution outside that install set made unimportable
(slim_worker/sitecustomize.py, inherited by its prefork children)."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.runs import execute_job, step_outcomes, step_workers

REPO = Path(__file__).resolve().parents[2]
SLIM_SITE = Path(__file__).parent / "slim_worker"
UI_DISTRIBUTIONS = {"dagster-webserver", "dagster-graphql", "starlette", "uvicorn", "graphene"}
VENV_BASELINE = {"pip", "setuptools"}
"""What `python -m venv` puts in every venv, the image's included."""

pytestmark = pytest.mark.integration


def install_set(distribution: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of `distribution` and everything it requires, as installed here."""
    seen: dict[str, set[str]] = {}
    pending = [(distribution, set(extras))]
    while pending:
        name, wanted = pending.pop()
        key = canonicalize_name(name)
        if key in seen and wanted <= seen[key]:
            continue
        seen.setdefault(key, set()).update(wanted)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in (wanted or {""})]
            if requirement.marker and not any(
                requirement.marker.evaluate(env) for env in environments
            ):
                continue
            pending.append((requirement.name, set(requirement.extras)))
    return set(seen)


def blocked_modules(allowed: set[str]) -> set[str]:
    """Top-level modules installed here that no distribution in `allowed` provides."""
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in distributions} & allowed
    }


def worker_install_set() -> set[str]:
    return install_set("alphaswarm_orch") | VENV_BASELINE


def test_worker_install_set_has_no_webserver_or_ui_package() -> None:
    worker = worker_install_set()
    assert {"dagster", "dagster-celery", "celery", "prometheus-client"} <= worker
    assert not worker & UI_DISTRIBUTIONS
    # The `dagster` image's extra brings them in: the check is not vacuous.
    assert {"dagster-webserver"} <= install_set("alphaswarm_orch", ("dagster",))


def test_a_worker_limited_to_its_install_set_runs_smoke_route_job(
    orch_env: dict[str, str], start_worker, instance: dg.DagsterInstance
) -> None:
    blocked = blocked_modules(worker_install_set())
    assert {"dagster_webserver", "dagster_graphql"} <= blocked
    slim_env = {
        **orch_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SLIM_SITE), orch_env.get("PYTHONPATH")])),
        "ALPHASWARM_SLIM_BLOCKED": ",".join(sorted(blocked)),
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import dagster_webserver"],
        env=slim_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "not in the worker image" in probe.stderr

    worker = start_worker("default,workflows", "w-slim", env=slim_env)
    execute_job(orch_env, "smoke_route_job")
    [run] = instance.get_runs()
    assert step_outcomes(instance, run.run_id) == {
        "smoke_lookup": "SUCCESS",
        "smoke_orchestrate": "SUCCESS",
        "smoke_callback": "SUCCESS",
    }
    assert set(step_workers(instance, run.run_id).values()) == {worker.node}
    assert "not in the worker image" not in worker.log()
