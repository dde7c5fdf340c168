"""Environment -> one typed settings object.

The names are the environment contract shared with alphaswarm-core; the README's
Configuration table lists every one. With no broker configured the code
location runs on the embedded default (local executor, SQLite, duckdb) so a newcomer needs
nothing but the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from alphaswarm_orch.broker.keys import DEFAULT_KILL_SWITCH_KEY

BROKER_URL = "ALPHASWARM_BROKER_URL"
RESULT_BACKEND = "ALPHASWARM_RESULT_BACKEND"
POSTGRES_URL = "ALPHASWARM_POSTGRES_URL"
LEDGER_URL = "ALPHASWARM_LEDGER_URL"
STORAGE_DIR = "ALPHASWARM_STORAGE_DIR"
REDIS_URL = "ALPHASWARM_REDIS_URL"
KILL_SWITCH_KEY = "ALPHASWARM_KILL_SWITCH_KEY"
METRICS_PORT = "ALPHASWARM_METRICS_PORT"
SENSOR_LOOP_SECONDS = "ALPHASWARM_SENSOR_LOOP_SECONDS"
INGESTION_CONFIG = "ALPHASWARM_INGESTION_CONFIG"
VISIBILITY_TIMEOUT = "ALPHASWARM_VISIBILITY_TIMEOUT"
WORKFLOWS_DIR = "ALPHASWARM_WORKFLOWS_DIR"
TERRAFORM_ROOT = "ALPHASWARM_TERRAFORM_ROOT"
TERRAFORM_WORKSPACES = "ALPHASWARM_TERRAFORM_WORKSPACES"
WORKER_INCLUDE = "ALPHASWARM_WORKER_INCLUDE"
POSTGRES_POOL_SIZE = "ALPHASWARM_POSTGRES_POOL_SIZE"

RESOURCE_KEY = "alphaswarm_settings"
"""The Dagster resource key the code location binds its Settings to: ops and sensors take
them as a parameter of this name (`dg.ResourceParam[Settings]`) instead of re-reading."""

DEFAULT_STORAGE_DIR = "./.alphaswarm"
DEFAULT_METRICS_PORT = 9100
DEFAULT_SENSOR_LOOP_SECONDS = 1.0
SENSOR_LOOP_RANGE = (0.1, 30.0)
DEFAULT_POSTGRES_POOL_SIZE = 1
POSTGRES_POOL_RANGE = (0, 10)
# A step can run for hours (a paper session is one step), so Redis must not redeliver an
# unacknowledged message while its worker is still alive and working on it. The price: a
# message whose worker was SIGKILLed comes back only after this long.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 12 * 60 * 60

_REDIS_SCHEMES = ("redis", "rediss")
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
_SQL_SCHEMES = (*_POSTGRES_SCHEMES, "sqlite")


class SettingsError(ValueError):
    """A missing or malformed environment variable; the message names it."""


@dataclass(frozen=True)
class Settings:
    broker_url: str | None
    result_backend: str | None
    postgres_url: str | None
    ledger_url: str
    storage_dir: Path
    redis_url: str | None
    kill_switch_key: str
    metrics_port: int
    sensor_loop_seconds: float = DEFAULT_SENSOR_LOOP_SECONDS
    """Period of dagster-daemon's sensor loop under `alphaswarm-orch daemon` (Dagster: 5 s)."""
    ingestion_config: Path | None = None  # ALPHASWARM_INGESTION_CONFIG: the connections file
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    """Seconds before Redis hands an unacknowledged message to another worker."""
    workflows_dir: Path | None = None
    """The folder of workflow specs; None: the examples shipped in the package."""
    terraform_root: Path | None = None
    """Directory holding one sub-directory per terraform workspace."""
    terraform_workspaces: str = ""
    """The terraform allow-list as written (comma-separated workspace names)."""
    worker_include: tuple[str, ...] = ()
    """Extra task modules a worker imports (tests register small tasks)."""
    postgres_pool_size: int = DEFAULT_POSTGRES_POOL_SIZE
    """Idle Postgres connections each process keeps for the instance; 0: one per query."""

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: local executor, SQLite, duckdb."""
        return self.broker_url is None

    @property
    def io_dir(self) -> Path:
        """IO-manager base dir; must be shared by the run worker and every step worker."""
        return self.storage_dir / "io"

    @property
    def dagster_home(self) -> Path:
        """Instance dir used by `alphaswarm-orch run` when DAGSTER_HOME is unset."""
        return self.storage_dir / "dagster_home"

    def require_redis(self, what: str) -> str:
        if self.redis_url is None:
            raise SettingsError(
                f"{what} needs Redis: set {REDIS_URL} (or {BROKER_URL}), "
                "e.g. redis://127.0.0.1:6379/0"
            )
        return self.redis_url

    def require_broker(self, what: str) -> str:
        if self.broker_url is None:
            raise SettingsError(
                f"{what} needs a Celery broker: set {BROKER_URL}, e.g. redis://redis:6379/0"
            )
        return self.broker_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        broker = get(BROKER_URL)
        if broker is not None:
            _check_url(BROKER_URL, broker, _REDIS_SCHEMES, needs_host=True)
        backend = get(RESULT_BACKEND)
        if backend is not None:
            _check_url(RESULT_BACKEND, backend, _REDIS_SCHEMES, needs_host=True)
        elif broker is not None:
            backend = _with_redis_db(broker, 1)

        postgres = get(POSTGRES_URL)
        if postgres is not None:
            _check_url(POSTGRES_URL, postgres, _POSTGRES_SCHEMES, needs_host=True)

        storage_dir = expand_path(STORAGE_DIR, get(STORAGE_DIR) or DEFAULT_STORAGE_DIR)

        ledger = get(LEDGER_URL)
        if ledger is not None:
            _check_url(LEDGER_URL, ledger, _SQL_SCHEMES, needs_host=False)
            _check_sqlite_file(LEDGER_URL, ledger)
        else:
            ledger = postgres or f"sqlite:///{storage_dir / 'ledger.db'}"

        redis_url = get(REDIS_URL)
        if redis_url is not None:
            _check_url(REDIS_URL, redis_url, _REDIS_SCHEMES, needs_host=True)
        else:
            redis_url = broker

        port_raw = get(METRICS_PORT)
        metrics_port = DEFAULT_METRICS_PORT
        if port_raw is not None:
            if ascii_int_within(port_raw, 1, 65535) is None:
                raise SettingsError(
                    f"{METRICS_PORT}={port_raw!r} is not a TCP port: use a number 1-65535 "
                    f"(default {DEFAULT_METRICS_PORT})"
                )
            metrics_port = int(port_raw)

        loop_raw = get(SENSOR_LOOP_SECONDS)
        sensor_loop = DEFAULT_SENSOR_LOOP_SECONDS
        if loop_raw is not None:
            low, high = SENSOR_LOOP_RANGE
            try:
                sensor_loop = float(loop_raw) if loop_raw.isascii() else float("nan")
            except ValueError:
                sensor_loop = float("nan")
            if not low <= sensor_loop <= high:
                raise SettingsError(
                    f"{SENSOR_LOOP_SECONDS}={loop_raw!r} is not a sensor loop period: use "
                    f"seconds from {low:g} to {high:g} (default {DEFAULT_SENSOR_LOOP_SECONDS:g})"
                )

        timeout_raw = get(VISIBILITY_TIMEOUT)
        timeout = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
        if timeout_raw is not None:
            if ascii_int_within(timeout_raw, 1, None) is None:
                raise SettingsError(
                    f"{VISIBILITY_TIMEOUT}={timeout_raw!r} is not a number of seconds: set it "
                    f"above the longest task's run time (default "
                    f"{DEFAULT_VISIBILITY_TIMEOUT_SECONDS})"
                )
            timeout = int(timeout_raw)

        pool_raw = get(POSTGRES_POOL_SIZE)
        pool_size = DEFAULT_POSTGRES_POOL_SIZE
        if pool_raw is not None:
            low, high = POSTGRES_POOL_RANGE
            if ascii_int_within(pool_raw, low, high) is None:
                raise SettingsError(
                    f"{POSTGRES_POOL_SIZE}={pool_raw!r} is not a pool size: use a number of "
                    f"connections from {low} (a new connection per query) to {high} "
                    f"(default {DEFAULT_POSTGRES_POOL_SIZE})"
                )
            pool_size = int(pool_raw)

        workflows = get(WORKFLOWS_DIR)
        terraform_root = get(TERRAFORM_ROOT)
        include = get(WORKER_INCLUDE) or ""
        return cls(
            broker_url=broker,
            result_backend=backend,
            postgres_url=postgres,
            ledger_url=sqlalchemy_url(ledger),
            storage_dir=storage_dir,
            redis_url=redis_url,
            kill_switch_key=get(KILL_SWITCH_KEY) or DEFAULT_KILL_SWITCH_KEY,
            metrics_port=metrics_port,
            sensor_loop_seconds=sensor_loop,
            ingestion_config=Path(raw).expanduser() if (raw := get(INGESTION_CONFIG)) else None,
            visibility_timeout=timeout,
            workflows_dir=expand_path(WORKFLOWS_DIR, workflows) if workflows else None,
            terraform_root=Path(terraform_root) if terraform_root else None,
            terraform_workspaces=get(TERRAFORM_WORKSPACES) or "",
            worker_include=tuple(m.strip() for m in include.split(",") if m.strip()),
            postgres_pool_size=pool_size,
        )


def ascii_int_within(raw: str, low: int, high: int | None) -> int | None:
    """`raw` as an integer from `low` to `high` (None: no upper bound), written in ASCII
    digits only; None when it is not one (the caller names the variable in its error)."""
    if not is_ascii_digits(raw):
        return None
    value = int(raw)
    return value if low <= value and (high is None or value <= high) else None


def is_ascii_digits(raw: str) -> bool:
    """Only 0-9: `str.isdigit` also accepts other scripts' digits ('٩١٠٠', which `int` reads
    as 9100) and superscripts ('²', which `int` refuses with a bare error)."""
    return raw.isascii() and raw.isdigit()


def expand_path(name: str, raw: str) -> Path:
    """The absolute path variable `name` names, `~` expanded; a SettingsError naming both if
    `~` cannot be expanded (`~nosuchuser`, no home directory)."""
    try:
        return Path(raw).expanduser().absolute()
    except (RuntimeError, KeyError) as exc:
        raise SettingsError(
            f"{name}={raw!r}: cannot expand '~' ({exc}); use an absolute path"
        ) from exc


def sqlalchemy_url(url: str) -> str:
    """Pin Postgres URLs to psycopg2: SQLAlchemy 2.1 maps `postgresql://` to psycopg 3,
    which dagster-postgres 0.29 cannot use (it is written against psycopg2)."""
    scheme, _sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url


def _check_url(name: str, value: str, schemes: tuple[str, ...], *, needs_host: bool) -> None:
    example = f"{schemes[0]}://host:port/..."
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid URL ({exc}); expected {example}") from exc
    if parts.scheme not in schemes:
        raise SettingsError(
            f"{name} has scheme {parts.scheme or '(none)'!r}; expected one of "
            f"{', '.join(schemes)}, e.g. {example}"
        )
    if needs_host and not parts.hostname:
        raise SettingsError(f"{name} has no host; expected {example}")


def _check_sqlite_file(name: str, value: str) -> None:
    """An in-memory SQLite database is private to one connection and gone when it closes: a
    ledger there keeps nothing, so it is refused."""
    parts = urlsplit(value)
    if not parts.scheme.startswith("sqlite"):
        return
    database = parts.path[1:]  # sqlite:///<database>
    modes = parse_qs(parts.query).get("mode", [])
    if database in ("", ":memory:") or database.startswith("file::memory:") or "memory" in modes:
        raise SettingsError(
            f"{name}={value!r} is an in-memory SQLite database, which keeps nothing: use a "
            "file (sqlite:////abs/path/ledger.db) or a postgresql:// URL"
        )


def _with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redacted(url: str | None) -> str:
    """A URL with its password replaced, for logs and error messages."""
    if url is None:
        return "(unset)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
