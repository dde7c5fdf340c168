from pathlib import Path

import pytest

from alphaswarm_orch.settings import (
    VISIBILITY_TIMEOUT,
    WORKFLOWS_DIR,
    Settings,
    SettingsError,
    redacted,
    sqlalchemy_url,
)


def test_embedded_default_needs_nothing(tmp_path: Path) -> None:
    settings = Settings.from_env({"ALPHASWARM_STORAGE_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.broker_url is None and settings.redis_url is None
    assert settings.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert settings.io_dir == tmp_path / "io"
    assert settings.kill_switch_key == "alphaswarm:kill_switch"
    assert settings.metrics_port == 9100


def test_default_storage_dir_is_dot_alphaswarm() -> None:
    assert Settings.from_env({}).storage_dir == (Path.cwd() / ".alphaswarm")


def test_the_variables_read_beside_the_urls_are_typed_with_defaults(tmp_path: Path) -> None:
    defaults = Settings.from_env({})
    assert defaults.visibility_timeout == 12 * 60 * 60
    assert defaults.workflows_dir is None and defaults.terraform_root is None
    assert (defaults.terraform_workspaces, defaults.worker_include) == ("", ())
    assert defaults.postgres_pool_size == 1
    settings = Settings.from_env(
        {
            "ALPHASWARM_VISIBILITY_TIMEOUT": "600",
            "ALPHASWARM_WORKFLOWS_DIR": str(tmp_path),
            "ALPHASWARM_TERRAFORM_ROOT": "/srv/terraform",
            "ALPHASWARM_TERRAFORM_WORKSPACES": "network, data",
            "ALPHASWARM_WORKER_INCLUDE": " tests.a, ,tests.b ",
            "ALPHASWARM_POSTGRES_POOL_SIZE": "0",
        }
    )
    assert settings.visibility_timeout == 600
    assert settings.workflows_dir == tmp_path
    assert settings.terraform_root == Path("/srv/terraform")
    assert settings.terraform_workspaces == "network, data"
    assert settings.worker_include == ("tests.a", "tests.b")
    assert settings.postgres_pool_size == 0


def test_production_values_and_derivations() -> None:
    settings = Settings.from_env(
        {
            "ALPHASWARM_BROKER_URL": "redis://:s3cret@redis:6379/0",
            "ALPHASWARM_POSTGRES_URL": "postgresql://u:p@pg:5432/dagster",
            "ALPHASWARM_METRICS_PORT": "9200",
            "ALPHASWARM_KILL_SWITCH_KEY": "core:halt",
        }
    )
    assert not settings.embedded
    assert settings.result_backend == "redis://:s3cret@redis:6379/1"
    assert settings.redis_url == settings.broker_url
    # SQLAlchemy 2.1 would pick psycopg 3 for postgresql://; the ledger is pinned to psycopg2.
    assert settings.ledger_url == "postgresql+psycopg2://u:p@pg:5432/dagster"
    assert settings.metrics_port == 9200
    assert settings.kill_switch_key == "core:halt"


def test_ledger_url_overrides_postgres() -> None:
    settings = Settings.from_env(
        {
            "ALPHASWARM_POSTGRES_URL": "postgresql://pg/dagster",
            "ALPHASWARM_LEDGER_URL": "postgres://pg/ledger",
        }
    )
    assert settings.ledger_url == "postgresql+psycopg2://pg/ledger"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ALPHASWARM_BROKER_URL", "http://redis:6379/0", "scheme 'http'"),
        ("ALPHASWARM_BROKER_URL", "redis://:6379/0", "has no host"),
        ("ALPHASWARM_BROKER_URL", "redis://redis:port/0", "not a valid URL"),
        ("ALPHASWARM_RESULT_BACKEND", "rpc://", "scheme 'rpc'"),
        ("ALPHASWARM_POSTGRES_URL", "mysql://db/x", "scheme 'mysql'"),
        ("ALPHASWARM_LEDGER_URL", "oracle://db/x", "scheme 'oracle'"),
        ("ALPHASWARM_REDIS_URL", "localhost:6379", "scheme"),
        ("ALPHASWARM_METRICS_PORT", "ninety", "not a TCP port"),
        ("ALPHASWARM_METRICS_PORT", "70000", "not a TCP port"),
        ("ALPHASWARM_POSTGRES_POOL_SIZE", "11", "not a pool size"),
        ("ALPHASWARM_POSTGRES_POOL_SIZE", "-1", "not a pool size"),
        ("ALPHASWARM_POSTGRES_POOL_SIZE", "one", "not a pool size"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as excinfo:
        Settings.from_env({name: value})
    assert name in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # str.isdigit() accepts these; int() reads the first as 9100 and refuses the second
        # with a bare ValueError that names nothing.
        ("ALPHASWARM_METRICS_PORT", "\u0669\u0661\u0660\u0660", "not a TCP port"),
        ("ALPHASWARM_METRICS_PORT", "9\u00b2", "not a TCP port"),
        ("ALPHASWARM_SENSOR_LOOP_SECONDS", "\u0661", "not a sensor loop period"),
        ("ALPHASWARM_POSTGRES_POOL_SIZE", "\u0661", "not a pool size"),
        ("ALPHASWARM_STORAGE_DIR", "~nosuchuser-alphaswarm/data", "cannot expand '~'"),
        ("ALPHASWARM_LEDGER_URL", "sqlite://", "in-memory SQLite"),
        ("ALPHASWARM_LEDGER_URL", "sqlite:///:memory:", "in-memory SQLite"),
        ("ALPHASWARM_LEDGER_URL", "sqlite:///file::memory:?cache=shared", "in-memory SQLite"),
        ("ALPHASWARM_LEDGER_URL", "sqlite:///file:ledger?mode=memory&uri=true", "in-memory"),
    ],
)
def test_values_that_passed_or_crashed_fail_naming_variable_and_value(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as excinfo:
        Settings.from_env({name: value})
    assert f"{name}={value!r}" in str(excinfo.value)


def test_missing_broker_is_named_when_required() -> None:
    with pytest.raises(SettingsError, match="ALPHASWARM_BROKER_URL"):
        Settings.from_env({}).require_broker("the worker")
    with pytest.raises(SettingsError, match="ALPHASWARM_REDIS_URL"):
        Settings.from_env({}).require_redis("the kill switch")


def test_helpers() -> None:
    assert sqlalchemy_url("postgres://h/db") == "postgresql+psycopg2://h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    assert redacted("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted(None) == "(unset)"


def test_a_ledger_file_is_accepted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert Settings.from_env({"ALPHASWARM_LEDGER_URL": url}).ledger_url == url


@pytest.mark.parametrize("value", ["\u0669\u0660\u0660", "1\u00b2", "0", "-5", "12h"])
def test_visibility_timeout_names_the_variable_and_value(value: str) -> None:
    with pytest.raises(SettingsError, match="is not a number of seconds") as excinfo:
        Settings.from_env({VISIBILITY_TIMEOUT: value})
    assert f"{VISIBILITY_TIMEOUT}={value!r}" in str(excinfo.value)
    assert Settings.from_env({VISIBILITY_TIMEOUT: "600"}).visibility_timeout == 600


def test_workflows_dir_with_an_unknown_user_names_the_variable() -> None:
    value = "~nosuchuser-alphaswarm/specs"
    with pytest.raises(SettingsError, match="cannot expand '~'") as excinfo:
        Settings.from_env({WORKFLOWS_DIR: value})
    assert f"{WORKFLOWS_DIR}={value!r}" in str(excinfo.value)
