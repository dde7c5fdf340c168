"""Dagster instance storage chosen by the environment contract.

`dagster.yaml` names this class instead of a fixed backend, so the same file serves the
production path (ALPHASWARM_POSTGRES_URL set: dagster-postgres) and the embedded default
(SQLite under ALPHASWARM_STORAGE_DIR). Dagster's CLI reads `dagster.yaml` from the working
directory when DAGSTER_HOME is unset, so a Postgres-only file would break every env-less
command run from the repo root. Workers rehydrate the same class from the instance ref and
resolve it against their own environment, which follows the same contract.
"""

from __future__ import annotations

from typing import Any

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from filelock import FileLock

from alphaswarm_orch.settings import Settings, sqlalchemy_url


class EnvironmentStorage(DagsterStorage, ConfigurableClass):
    """Postgres when ALPHASWARM_POSTGRES_URL is set, else SQLite under the storage dir."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> DagsterStorage:
        settings = Settings.from_env()
        if settings.postgres_url:
            return DagsterPostgresStorage(
                sqlalchemy_url(settings.postgres_url), inst_data=inst_data
            )
        base = settings.dagster_home / "storage"
        base.mkdir(parents=True, exist_ok=True)
        # Processes starting at once on a fresh dir would race to create the tables.
        with FileLock(str(base / ".create.lock")):
            return DagsterSqliteStorage.from_local(str(base), inst_data=inst_data)
