"""What the launcher's forkserver imports once, so every run worker forked from it has it.

The code location, plus what a run worker otherwise imports after the fork (measured by
diffing `sys.modules` over a run: ~500 modules, ~1 s of the request -> first step path):
instance storage (dagster-postgres, psycopg2, SQLAlchemy's dialect), the instance's run
launcher and coordinator classes, the run machinery (`dagster api execute_run`'s body, the
daemon package run monitoring touches), Celery's Redis transport and result backend as the
executor's first submission loads them, and the libraries assets import lazily. Importing is
all this does: no connection, no thread. (`forkserver_ready`, last on the forkserver's list,
then builds the Definitions.)
"""

# ruff: noqa: F401
import multiprocessing.popen_fork
import multiprocessing.popen_forkserver

import dagster_postgres
import dlt.sources.helpers.requests
import fsspec.implementations.local
import pendulum.locales.en.locale
import pluggy
import psycopg2.extras
import rich.traceback
import sqlalchemy.dialects.postgresql.psycopg2
import structlog
import upath.implementations.local

import alphaswarm_orch.daemon.coordinator
import alphaswarm_orch.definitions
import alphaswarm_orch.instance
import alphaswarm_orch.launch.launcher
import alphaswarm_orch.launch.worker
from alphaswarm_orch.compat import celery as _celery_internals
from alphaswarm_orch.compat import dagster as _dagster_internals
from alphaswarm_orch.execution import ThreadedComputeLogManager

_dagster_internals.import_run_worker_modules()
_celery_internals.import_run_worker_modules()
