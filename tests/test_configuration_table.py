"""The README's Configuration table lists exactly the variables the package reads."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from alphaswarm_orch import settings
from alphaswarm_orch.broker.celery_config import VISIBILITY_TIMEOUT_ENV
from alphaswarm_orch.cli.dev import DEV_STACK_VAR
from alphaswarm_orch.defs.ingestion import resources as ingestion_resources
from alphaswarm_orch.defs.terraform.resources import ROOT_ENV, WORKSPACES_ENV
from alphaswarm_orch.settings import Settings
from alphaswarm_orch.worker.process import INCLUDE_ENV
from alphaswarm_orch.workflows.spec import WORKFLOWS_DIR

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alphaswarm_orch"
README = ROOT / "README.md"

READ_BESIDE_SETTINGS = {
    VISIBILITY_TIMEOUT_ENV,
    WORKFLOWS_DIR,
    ROOT_ENV,
    WORKSPACES_ENV,
    INCLUDE_ENV,
}
"""Variables read by the modules that use them rather than by Settings (by their constants)."""
SOURCE_VARIABLES = {
    value
    for value in vars(ingestion_resources).values()
    if isinstance(value, str) and value.startswith("ALPHASWARM_")
}
"""Ingestion's source URLs and secrets, bound with dg.EnvVar at launch and listed under the
table (documented in the Ingestion section)."""
INTERNAL = {DEV_STACK_VAR}
"""Set by `alphaswarm-orch dev` for its own children, never by a user."""


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name looked up."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        raise KeyError(name)

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(name)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def table_variables(text: str) -> list[str]:
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE)


def settings_variables() -> set[str]:
    env = _RecordingEnv()
    Settings.from_env(env)
    return env.read


def test_settings_reads_exactly_its_name_constants():
    constants = {
        value
        for name, value in vars(settings).items()
        if name.isupper() and isinstance(value, str) and value.startswith("ALPHASWARM_")
    }
    assert settings_variables() == constants


def test_configuration_table_lists_every_variable_read():
    rows = table_variables(README.read_text())
    assert len(rows) == len(set(rows)), f"repeated rows: {rows}"
    assert set(rows) == settings_variables() | READ_BESIDE_SETTINGS | {"DAGSTER_HOME"}


def test_every_variable_named_in_the_package_is_documented():
    """A new `ALPHASWARM_...` name in the code fails here until the README describes it."""
    named = set()
    for path in PACKAGE.rglob("*.py"):
        named |= set(re.findall(r"[\"'](ALPHASWARM_[A-Z0-9_]+)[\"']", path.read_text()))
    readme = README.read_text()
    table = set(table_variables(readme))
    undocumented = sorted(
        name
        for name in named - INTERNAL
        if name not in table and not (name in SOURCE_VARIABLES and f"`{name}`" in readme)
    )
    assert undocumented == []
    assert SOURCE_VARIABLES and INTERNAL <= named
