"""What every compat contract test shares: the failure message an upstream upgrade gets."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from types import ModuleType
from typing import Any


def broken(module: ModuleType, name: str, distribution: str, what: str) -> str:
    """`<module>.<name> under <dist> <version>: <what>`: names the symbol, the pinned version
    and the expectation, so an upgrade that breaks it says where to look."""
    version = metadata.version(distribution)
    return f"{module.__name__}.{name} under {distribution} {version}: {what}"


def has_members(obj: Any, members: Iterable[str]) -> list[str]:
    """The members of `members` that `obj` lacks."""
    return [m for m in members if not hasattr(obj, m)]


def parameters(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def check_all_covered(module: ModuleType, contracts: Mapping[Any, Iterable[str]]) -> None:
    """Every name the compat module exports has a contract, and no contract is stale."""
    exported = set(module.__all__)
    covered = {name for names in contracts.values() for name in names}
    assert exported == covered, (
        f"{module.__name__}: names without a contract test: "
        f"{sorted(exported - covered)}; contracts for names it no longer exports: "
        f"{sorted(covered - exported)}"
    )


def run_contract(contract: Callable[..., None], **fixtures: Any) -> None:
    """Call `contract` with the fixtures it names."""
    wanted = {k: v for k, v in fixtures.items() if k in inspect.signature(contract).parameters}
    contract(**wanted)
