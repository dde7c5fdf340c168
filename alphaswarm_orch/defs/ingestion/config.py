"""connections.yaml -> typed ingestion config, validated when the code location loads.

Airbyte connections are declared here, never fetched from Airbyte at load time: the code
location must load with no network, and a connection that changes in Airbyte should not
silently change the asset graph.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from alphaswarm_orch.compat.dagster import is_valid_cron_string
from alphaswarm_orch.settings import INGESTION_CONFIG, Settings
from alphaswarm_orch.yamlspec import SpecProblem, YamlSpecError, load_document, quoted

CONNECTIONS_FILE = Path(__file__).with_name("connections.yaml")
"""The connections file shipped in the package, used when ALPHASWARM_INGESTION_CONFIG is unset."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class IngestionConfigError(YamlSpecError):
    """connections.yaml is malformed; each problem names the file, line and field."""

    what = "ingestion config"
    advice = 'Fix the connections file (README, "Ingestion").'


@dataclass(frozen=True)
class Cadence:
    """When a sync or pull runs and how stale its assets may get before the check warns."""

    cron: str
    max_age_hours: float


@dataclass(frozen=True)
class AirbyteConnection:
    name: str
    connection_id: str
    streams: tuple[str, ...]
    cadence: Cadence


@dataclass(frozen=True)
class SqlTable:
    name: str
    primary_key: tuple[str, ...]
    cursor: str | None = None
    """Column read incrementally (rows at or after the last loaded value); None: whole table."""


AIRBYTE_AUTH_MODES = ("client_credentials", "bearer")
RESERVED_NAMES = ("market_data", "reference_data", "sample")
"""Asset prefixes of the dlt pulls and the sample asset: no Airbyte connection may take one."""


@dataclass(frozen=True)
class AirbyteOptions:
    auth: str
    tunables: dict[str, Any]


@dataclass(frozen=True)
class IngestionConfig:
    owners: tuple[str, ...]
    airbyte: AirbyteOptions
    airbyte_connections: tuple[AirbyteConnection, ...]
    market_data: Cadence
    reference_data: Cadence
    reference_tables: tuple[SqlTable, ...]
    market_data_lookback_days: int = 3
    """Daily bars: days before the last loaded date read again on each pull (corrections)."""


def config_path(settings: Settings) -> Path:
    """ALPHASWARM_INGESTION_CONFIG (Settings.ingestion_config), else the shipped file."""
    path = settings.ingestion_config
    if path is None:
        return CONNECTIONS_FILE
    if not path.is_file():
        raise IngestionConfigError(
            [
                SpecProblem(
                    path,
                    None,
                    "",
                    f"{INGESTION_CONFIG}={str(path)!r} is not a file: point it at a connections "
                    f"file like {CONNECTIONS_FILE}, or unset it to use that one",
                )
            ]
        )
    return path


def load_ingestion_config(path: Path = CONNECTIONS_FILE) -> IngestionConfig:
    """Parse and validate `path`; raise IngestionConfigError naming every problem's line."""
    document = load_document(path, IngestionConfigError)
    if not isinstance(document.data, dict):
        raise IngestionConfigError(
            [
                document.problem(
                    (),
                    "a connections file is a mapping with owners, airbyte, airbyte_connections "
                    f"and pulls, got {quoted(document.data)}",
                )
            ]
        )
    problems = document.duplicate_keys()
    try:
        model = _ConnectionsFile.model_validate(document.data)
    except ValidationError as exc:
        raise IngestionConfigError(problems + document.validation_problems(exc)) from exc
    problems += [document.problem(loc, message) for loc, message in _name_problems(model)]
    if problems:
        raise IngestionConfigError(problems)
    market = model.pulls.market_data
    reference = model.pulls.reference_data
    return IngestionConfig(
        owners=tuple(model.owners),
        airbyte=AirbyteOptions(
            auth=model.airbyte.auth,
            tunables=model.airbyte.model_dump(exclude_unset=True, exclude={"auth"}),
        ),
        airbyte_connections=tuple(
            AirbyteConnection(
                name=c.name,
                connection_id=c.connection_id,
                streams=tuple(c.streams),
                cadence=c.cadence(),
            )
            for c in model.airbyte_connections
        ),
        market_data=market.cadence(),
        reference_data=reference.cadence(),
        reference_tables=tuple(
            SqlTable(name=name, primary_key=tuple(table.primary_key), cursor=table.cursor)
            for name, table in reference.tables.items()
        ),
        market_data_lookback_days=market.lookback_days,
    )


def _name_problems(model: _ConnectionsFile) -> list[tuple[tuple[str | int, ...], str]]:
    """Connection names must be unique and leave the pulls' asset prefixes alone."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    first: dict[str, int] = {}
    for i, connection in enumerate(model.airbyte_connections):
        at = ("airbyte_connections", i, "name")
        if connection.name in RESERVED_NAMES:
            problems.append(
                (
                    at,
                    f"airbyte connection name(s) {connection.name} collide with the dlt pulls' "
                    f"asset prefixes ({', '.join(RESERVED_NAMES)}); choose another name",
                )
            )
        if connection.name in first:
            problems.append(
                (
                    at,
                    "airbyte connection names must be unique; repeated: "
                    f"{connection.name} (also airbyte_connections[{first[connection.name]}])",
                )
            )
        first.setdefault(connection.name, i)
    return problems


def _checked(test: Callable[[Any], bool], problem: str) -> BeforeValidator:
    """Refuse a value failing `test` with `<value> <problem>`, before pydantic coerces it."""

    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"{value!r} {problem}")
        return value

    return BeforeValidator(check)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_list(value: Any) -> Any:
    """A single string stands for a list of one."""
    return [value] if isinstance(value, str) else value


_NAME_RULE = (
    "is not a valid name; use lowercase letters, digits and '_' (it becomes part of asset keys "
    "and job names)"
)
Name = Annotated[str, _checked(lambda v: isinstance(v, str) and bool(_NAME.match(v)), _NAME_RULE)]
Text = Annotated[
    str, _checked(lambda v: isinstance(v, str) and bool(v), "is not a non-empty string")
]
Strings = Annotated[list[Text], BeforeValidator(_as_list)]
Names = Annotated[list[Name], BeforeValidator(_as_list), Field(min_length=1)]
Positive = Annotated[
    float, _checked(lambda v: _number(v) and v > 0, "is not a valid float above 0")
]
Flag = Annotated[bool, _checked(lambda v: isinstance(v, bool), "is not a valid bool (true/false)")]
Cron = Annotated[
    str,
    _checked(
        lambda v: isinstance(v, str) and is_valid_cron_string(v),
        "is not a valid cron expression, e.g. '0 6 * * 1-5'",
    ),
]
Hours = Annotated[
    float, _checked(lambda v: _number(v) and v > 0, "must be a positive number of hours")
]


def _connection_id(value: Any) -> str:
    try:
        uuid.UUID(str(value))
    except ValueError as exc:
        raise ValueError(
            f"{str(value)!r} is not a UUID; copy it from the connection's URL in the Airbyte UI "
            "(.../connections/<uuid>)"
        ) from exc
    return str(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Cadence(_Model):
    cron: Cron
    max_age_hours: Hours

    def cadence(self) -> Cadence:
        return Cadence(cron=self.cron, max_age_hours=self.max_age_hours)


class _AirbyteConnection(_Cadence):
    name: Name
    connection_id: Annotated[str, BeforeValidator(_connection_id)]
    streams: Names


class _AirbyteOptions(_Model):
    """AirbyteResource fields connections.yaml may set (secrets and the URL come from the env)."""

    auth: Annotated[
        str,
        _checked(
            lambda v: v in AIRBYTE_AUTH_MODES, f"is not one of {', '.join(AIRBYTE_AUTH_MODES)}"
        ),
    ] = "client_credentials"
    token_url: Text | None = None
    request_timeout_seconds: Positive | None = None
    poll_interval_seconds: Positive | None = None
    sync_deadline_seconds: Positive | None = None
    retry_max_elapsed_seconds: Positive | None = None
    cancel_on_deadline: Flag | None = None
    cancel_on_termination: Flag | None = None
    cancel_on_error: Flag | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_settings(cls, value: Any) -> Any:
        """One message naming the unknown key and the settings allowed."""
        unknown = (
            [key for key in value if key not in cls.model_fields] if isinstance(value, dict) else []
        )
        if unknown:
            raise ValueError(
                f"unknown setting {unknown[0]!r}; allowed: {', '.join(cls.model_fields)}"
            )
        return value


class _SqlTable(_Model):
    primary_key: Annotated[list[Text], BeforeValidator(_as_list), Field(min_length=1)]
    cursor: Annotated[
        str | None,
        _checked(lambda v: v is None or (isinstance(v, str) and bool(v)), "is not a column name"),
    ] = None
    """Column read incrementally (rows at or after the last loaded value); None: whole table."""


class _MarketData(_Cadence):
    lookback_days: Annotated[
        int,
        _checked(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "must be a whole number of days >= 0",
        ),
    ] = 3


class _ReferenceData(_Cadence):
    tables: dict[Name, _SqlTable]


class _Pulls(_Model):
    market_data: _MarketData
    reference_data: _ReferenceData


class _ConnectionsFile(_Model):
    owners: Strings = []
    airbyte: Annotated[_AirbyteOptions, BeforeValidator(lambda v: {} if v is None else v)] = (
        _AirbyteOptions()
    )
    airbyte_connections: Annotated[
        list[_AirbyteConnection], BeforeValidator(lambda v: [] if v is None else v)
    ] = []
    pulls: _Pulls
