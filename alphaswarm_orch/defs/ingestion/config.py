"""connections.yaml -> typed ingestion config, validated when the code location loads.

Airbyte connections are declared here, never fetched from Airbyte at load time: the code
location must load with no network, and a connection that changes in Airbyte should not
silently change the asset graph.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dagster._utils.schedules import is_valid_cron_string

from alphaswarm_orch.settings import INGESTION_CONFIG, Settings

CONNECTIONS_FILE = Path(__file__).with_name("connections.yaml")
"""The connections file shipped in the package, used when ALPHASWARM_INGESTION_CONFIG is unset."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class IngestionConfigError(ValueError):
    """connections.yaml is malformed; the message names the entry and the field."""


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
AIRBYTE_TUNABLES = {
    "token_url": str,
    "request_timeout_seconds": float,
    "poll_interval_seconds": float,
    "sync_deadline_seconds": float,
    "retry_max_elapsed_seconds": float,
    "cancel_on_deadline": bool,
    "cancel_on_termination": bool,
    "cancel_on_error": bool,
}
"""AirbyteResource fields connections.yaml may set (secrets and the URL come from the env)."""


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
            f"{INGESTION_CONFIG}={str(path)!r} is not a file: point it at a connections file "
            f"like {CONNECTIONS_FILE}, or unset it to use that one"
        )
    return path


def load_ingestion_config(path: Path = CONNECTIONS_FILE) -> IngestionConfig:
    """Parse and validate `path`; raise IngestionConfigError naming what is wrong."""
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
        lines = _Lines(path, yaml.compose(text))
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise IngestionConfigError(f"cannot read ingestion config {at}: {exc}") from exc
    where = lines.at()
    doc = _mapping(raw, where)
    owners = tuple(_strings(doc.get("owners", []), f"{lines.at('owners')}: owners"))
    connections = tuple(
        _connection(item, f"{lines.at('airbyte_connections', i)}: airbyte_connections[{i}]")
        for i, item in enumerate(_list(doc.get("airbyte_connections") or [], where))
    )
    names = [c.name for c in connections]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IngestionConfigError(
            f"{where}: airbyte connection names must be unique; repeated: {', '.join(duplicates)}"
        )
    reserved = {"market_data", "reference_data", "sample"} & set(names)
    if reserved:
        raise IngestionConfigError(
            f"{where}: airbyte connection name(s) {', '.join(sorted(reserved))} collide with "
            "the dlt pulls' asset prefixes; choose another name"
        )
    airbyte = _airbyte_options(doc.get("airbyte") or {}, f"{lines.at('airbyte')}: airbyte")
    pulls = _mapping(doc.get("pulls"), f"{where}: pulls")
    market_at = f"{lines.at('pulls', 'market_data')}: pulls.market_data"
    reference_at = f"{lines.at('pulls', 'reference_data')}: pulls.reference_data"
    market = _mapping(pulls.get("market_data"), market_at)
    reference = _mapping(pulls.get("reference_data"), reference_at)
    tables = _mapping(reference.get("tables"), f"{reference_at}.tables")
    return IngestionConfig(
        owners=owners,
        airbyte=airbyte,
        airbyte_connections=connections,
        market_data=_cadence(market, market_at),
        reference_data=_cadence(reference, reference_at),
        reference_tables=tuple(
            _sql_table(
                name,
                spec,
                f"{lines.at('pulls', 'reference_data', 'tables', name)}: "
                "pulls.reference_data.tables",
            )
            for name, spec in tables.items()
        ),
        market_data_lookback_days=_lookback(market, market_at),
    )


class _Lines:
    """`file:line` of a path of keys/indexes in the YAML document (its deepest present node)."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path = path
        self.root = root

    def at(self, *keys: str | int) -> str:
        node = self.root
        line = node.start_mark.line if node is not None else 0
        for key in keys:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == key), None)
                if child is not None:
                    line = next(k for k, v in node.value if v is child).start_mark.line
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(key, int)
                and key < len(node.value)
            ):
                child = node.value[key]
                line = child.start_mark.line
            if child is None:
                break
            node = child
        return f"{self.path}:{line + 1}"


def _sql_table(name: Any, spec: Any, where: str) -> SqlTable:
    name = _name(name, where)
    entry = _mapping(spec, f"{where}.{name}")
    unknown = set(entry) - {"primary_key", "cursor"}
    if unknown:
        raise IngestionConfigError(
            f"{where}.{name}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}; "
            "allowed: primary_key, cursor"
        )
    cursor = entry.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise IngestionConfigError(f"{where}.{name}.cursor: {cursor!r} is not a column name")
    return SqlTable(
        name=name,
        primary_key=tuple(
            _strings(entry.get("primary_key"), f"{where}.{name}.primary_key", required=True)
        ),
        cursor=cursor,
    )


def _lookback(entry: dict[str, Any], where: str) -> int:
    value = entry.get("lookback_days", 3)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IngestionConfigError(
            f"{where}.lookback_days: {value!r} must be a whole number of days >= 0"
        )
    return value


def _airbyte_options(value: Any, where: str) -> AirbyteOptions:
    entry = dict(_mapping(value, where))
    auth = entry.pop("auth", "client_credentials")
    if auth not in AIRBYTE_AUTH_MODES:
        raise IngestionConfigError(
            f"{where}.auth: {auth!r} is not one of {', '.join(AIRBYTE_AUTH_MODES)}"
        )
    for key, value in entry.items():
        kind = AIRBYTE_TUNABLES.get(key)
        if kind is None:
            raise IngestionConfigError(
                f"{where}: unknown setting {key!r}; allowed: auth, {', '.join(AIRBYTE_TUNABLES)}"
            )
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise IngestionConfigError(f"{where}.{key}: {value!r} is not a valid {kind.__name__}")
    return AirbyteOptions(auth=auth, tunables=entry)


def _connection(item: Any, where: str) -> AirbyteConnection:
    entry = _mapping(item, where)
    name = _name(entry.get("name"), f"{where}.name")
    where = f"{where} ({name})"
    connection_id = str(entry.get("connection_id", ""))
    try:
        uuid.UUID(connection_id)
    except ValueError as exc:
        raise IngestionConfigError(
            f"{where}: connection_id {connection_id!r} is not a UUID; copy it from the "
            "connection's URL in the Airbyte UI (.../connections/<uuid>)"
        ) from exc
    streams = _strings(entry.get("streams"), f"{where}.streams", required=True)
    for stream in streams:
        _name(stream, f"{where}.streams")
    return AirbyteConnection(
        name=name,
        connection_id=connection_id,
        streams=tuple(streams),
        cadence=_cadence(entry, where),
    )


def _cadence(entry: dict[str, Any], where: str) -> Cadence:
    cron = entry.get("cron")
    if not isinstance(cron, str) or not is_valid_cron_string(cron):
        raise IngestionConfigError(
            f"{where}: cron {cron!r} is not a valid cron expression, e.g. '0 6 * * 1-5'"
        )
    max_age = entry.get("max_age_hours")
    if isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0:
        raise IngestionConfigError(
            f"{where}: max_age_hours {max_age!r} must be a positive number of hours"
        )
    return Cadence(cron=cron, max_age_hours=float(max_age))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise IngestionConfigError(
            f"{where}: {value!r} is not a valid name; use lowercase letters, digits and '_'"
            " (it becomes part of asset keys and job names)"
        )
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise IngestionConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise IngestionConfigError(f"{where}: expected a list, got {value!r}")
    return value


def _strings(value: Any, where: str, *, required: bool = False) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise IngestionConfigError(f"{where}: expected a list of strings, got {value!r}")
    if required and not value:
        raise IngestionConfigError(f"{where}: must name at least one")
    return value
