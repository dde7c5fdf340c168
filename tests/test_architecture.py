"""The package's import rules, checked on its source with `ast`:

- private upstream internals (Dagster's `_` modules, dagster-celery's and dagster-shared's
  modules, Celery/kombu/prometheus-client submodules beyond their documented public ones)
  are imported only in `alphaswarm_orch/compat/`;
- `control/` and `execution/` do not import each other; both build on `broker/`;
- `broker/` imports nothing of the package above it: only itself, `compat/` and the leaves;
- outside `execution/`, only its public entry points (`alphaswarm_orch.execution`) are used.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "alphaswarm_orch"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

SEAM = f"{PACKAGE}.compat"
"""The only place private upstream names may be imported."""

UPSTREAMS_PRIVATE_BY_UNDERSCORE = ("dagster",)
"""Upstreams whose private modules start with `_` (dagster._core, dagster._serdes ...)."""
UPSTREAMS_PRIVATE_ENTIRELY = ("dagster_shared",)
"""Upstreams that are internal to another (Dagster's shared support library)."""
UPSTREAMS_PUBLIC_TOP_ONLY = ("celery", "kombu", "prometheus_client", "dagster_celery")
"""Upstreams whose submodules are internals, except those in PUBLIC_SUBMODULES."""
PUBLIC_SUBMODULES = frozenset(
    {"celery.bootsteps", "celery.exceptions", "celery.result", "celery.signals", "celery.states"}
)
"""Documented public modules of the upstreams above (Celery's API reference)."""

LEAVES = frozenset({f"{PACKAGE}.settings", f"{PACKAGE}.queues", f"{PACKAGE}.text"})
"""Modules that import nothing of the package: `broker/` may build on them."""


def private_upstream(module: str) -> bool:
    """Whether importing `module` reaches into an upstream's internals."""
    top, *rest = module.split(".")
    if top in UPSTREAMS_PRIVATE_BY_UNDERSCORE:
        return any(part.startswith("_") for part in rest)
    if top in UPSTREAMS_PRIVATE_ENTIRELY:
        return True
    if top in UPSTREAMS_PUBLIC_TOP_ONLY:
        return bool(rest) and module not in PUBLIC_SUBMODULES
    return False


@cache
def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def imported_modules(module: str, source: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in `source`, at any depth (TYPE_CHECKING included);
    `from X import Y` yields X, and X.Y as well when Y is a module."""
    package = module.rpartition(".")[0] if not module.endswith("__init__") else module
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield node.lineno, base
            for alias in node.names:
                if _is_module(f"{base}.{alias.name}"):
                    yield node.lineno, f"{base}.{alias.name}"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(module: str, source: str) -> list[str]:
    """What `module` (dotted name, its source given) imports against the rules."""
    where = module.replace(".", "/") + ".py"
    found = []
    for line, target in imported_modules(module, source):
        rule = None
        if private_upstream(target) and not _within(module, SEAM):
            rule = f"private upstream: only {SEAM.replace('.', '/')}/ may import it"
        elif _within(module, f"{PACKAGE}.control") and _within(target, f"{PACKAGE}.execution"):
            rule = "control/ must not import execution/ (both build on broker/)"
        elif _within(module, f"{PACKAGE}.execution") and _within(target, f"{PACKAGE}.control"):
            rule = "execution/ must not import control/ (both build on broker/)"
        elif (
            _within(module, f"{PACKAGE}.broker")
            and _within(target, PACKAGE)
            and target != PACKAGE
            and not _within(target, f"{PACKAGE}.broker")
            and not _within(target, SEAM)
            and target not in LEAVES
        ):
            rule = "broker/ imports only itself, compat/ and the leaves " + str(sorted(LEAVES))
        elif target.startswith(f"{PACKAGE}.execution.") and not _within(
            module, f"{PACKAGE}.execution"
        ):
            rule = f"outside execution/, use its public entry points ({PACKAGE}.execution)"
        elif _within(module, SEAM) and _within(target, PACKAGE) and not _within(target, SEAM):
            rule = "compat/ is the bottom: it imports nothing else of the package"
        if rule:
            found.append(f"{where}:{line}: imports {target} ({rule})")
    return found


def package_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        yield ".".join(parts), path


def test_the_package_keeps_its_import_rules() -> None:
    modules = list(package_modules())
    assert len(modules) > 100, f"walked only {len(modules)} modules under {PACKAGE_DIR}"
    found = [v for name, path in modules for v in violations(name, path.read_text())]
    assert not found, "import rules broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("alphaswarm_orch.ledger.rows", "from dagster._utils.error import SerializableErrorInfo"),
        ("alphaswarm_orch.cli.daemon", "import dagster._daemon.sensor"),
        ("alphaswarm_orch.cli.daemon", "from dagster._daemon import sensor"),
        ("alphaswarm_orch.execution.loop", "from dagster_shared.serdes import deserialize_value"),
        ("alphaswarm_orch.execution.loop", "from dagster_celery.make_app import make_app"),
        ("alphaswarm_orch.broker.redis_queues", "from kombu.transport.redis import Channel"),
        ("alphaswarm_orch.control.health", "from celery.worker import state"),
        ("alphaswarm_orch.control.health", "import celery.worker.consumer"),
        ("alphaswarm_orch.control.metrics", "from prometheus_client import values"),
        ("alphaswarm_orch.control.metrics", "from prometheus_client.core import Metric"),
        ("alphaswarm_orch.control.metrics", "from alphaswarm_orch.execution import running"),
        ("alphaswarm_orch.control.metrics", "from alphaswarm_orch import execution"),
        ("alphaswarm_orch.control.metrics", "from ..execution import executor_for"),
        ("alphaswarm_orch.execution.tasks", "from alphaswarm_orch.control.health import x"),
        ("alphaswarm_orch.broker.keys", "from alphaswarm_orch.sessions import lease"),
        ("alphaswarm_orch.broker.keys", "if TYPE_CHECKING:\n    import alphaswarm_orch.ledger"),
        ("alphaswarm_orch.launch.launcher", "from alphaswarm_orch.execution.liveness import x"),
        ("alphaswarm_orch.workflows.dispatch", "import alphaswarm_orch.execution.celery_config"),
        ("alphaswarm_orch.compat.dagster", "from alphaswarm_orch.settings import Settings"),
    ],
)
def test_the_checker_names_a_broken_rule(module: str, source: str) -> None:
    found = violations(module, source)
    assert found, f"{module}: {source!r} passed the checker"
    assert all(v.startswith(module.replace(".", "/") + ".py:") for v in found), found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("alphaswarm_orch.compat.dagster", "from dagster._utils.error import X"),
        ("alphaswarm_orch.compat.celery", "from celery.worker import state"),
        ("alphaswarm_orch.ledger.rows", "import dagster as dg\nfrom dagster import DagsterEvent"),
        ("alphaswarm_orch.control.metrics", "from prometheus_client import Counter, Metric"),
        ("alphaswarm_orch.control.metrics", "from celery.signals import task_prerun"),
        ("alphaswarm_orch.control.health", "from celery import bootsteps"),
        ("alphaswarm_orch.workflows.dispatch", "import celery.exceptions"),
        ("alphaswarm_orch.launch.launcher", "from alphaswarm_orch.execution import request_cancel"),
        ("alphaswarm_orch.broker.kill_switch", "from alphaswarm_orch.settings import Settings"),
        ("alphaswarm_orch.broker.priority", "from alphaswarm_orch.compat.dagster import X"),
        ("alphaswarm_orch.execution.loop", "from alphaswarm_orch.broker import keys, running"),
        ("alphaswarm_orch.execution.loop", "from alphaswarm_orch.execution import liveness"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(module: str, source: str) -> None:
    assert violations(module, source) == []
