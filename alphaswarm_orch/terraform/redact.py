"""Keep secrets out of the event log: sensitive variables and outputs, credentials from the env.

Terraform masks sensitive values in its human output but not in `terraform show -json` of a
plan, and provisioners may print anything, so every line and every JSON document that leaves
the runtime goes through one `Redactor`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

REDACTED = "(redacted)"

MIN_SECRET_LENGTH = 4
"""Shorter values are not replaced in free text (they would mangle every line); they are
still masked wherever terraform marks them sensitive."""

CREDENTIAL_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY|"
    r"APIKEY|AUTH|SESSION_KEY|CLIENT_KEY|^TF_TOKEN_",
    re.IGNORECASE,
)


class Redactor:
    """Replace known secret values in text and mask what terraform marks sensitive in JSON."""

    def __init__(self, secrets: Iterable[object] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Redactor:
        """Credentials in the environment terraform runs with: by name, and URL passwords."""
        redactor = cls()
        for name, value in environ.items():
            if CREDENTIAL_NAME.search(name):
                redactor.add(value)
            if "://" in value:
                try:
                    password = urlsplit(value).password
                except ValueError:
                    password = None
                redactor.add(password)
        return redactor

    def add(self, *values: object) -> None:
        """Treat each value (and, for containers, each leaf) as a secret from now on."""
        for value in values:
            if isinstance(value, Mapping):
                self.add(*value.values())
            elif isinstance(value, list | tuple):
                self.add(*value)
            elif value is not None and not isinstance(value, bool):
                text = str(value)
                if len(text) >= MIN_SECRET_LENGTH:
                    self._secrets.add(text)

    def text(self, line: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line

    def value(self, value: Any) -> Any:
        """`value` with every string leaf passed through `text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def plan_json(self, plan: Mapping[str, Any], sensitive_variables: Iterable[str]) -> Any:
        """A copy of `terraform show -json <plan>` safe to store and log."""
        plan = dict(plan)
        hidden = set(sensitive_variables)
        if "variables" in plan:
            plan["variables"] = {
                name: {**spec, "value": REDACTED} if name in hidden else spec
                for name, spec in plan["variables"].items()
            }
        planned = dict(plan.get("planned_values") or {})
        if "outputs" in planned:
            planned["outputs"] = _mask_outputs(planned["outputs"])
        if "root_module" in planned:
            planned["root_module"] = _mask_module(planned["root_module"])
        if planned:
            plan["planned_values"] = planned
        prior = dict(plan.get("prior_state") or {})
        if "values" in prior:
            values = dict(prior["values"])
            values["outputs"] = _mask_outputs(values.get("outputs") or {})
            if "root_module" in values:
                values["root_module"] = _mask_module(values["root_module"])
            prior["values"] = values
            plan["prior_state"] = prior
        plan["resource_changes"] = [
            {**change, "change": _mask_change(change.get("change") or {})}
            for change in plan.get("resource_changes") or []
        ]
        plan["output_changes"] = {
            name: _mask_change(change)
            for name, change in (plan.get("output_changes") or {}).items()
        }
        return self.value(plan)


def mask(value: Any, sensitive: Any) -> Any:
    """Mask `value` where terraform's sensitivity mirror (`after_sensitive` etc.) says so."""
    if sensitive is True:
        return REDACTED if value is not None else None
    if isinstance(sensitive, Mapping) and isinstance(value, Mapping):
        return {key: mask(item, sensitive.get(key, False)) for key, item in value.items()}
    if isinstance(sensitive, list) and isinstance(value, list):
        return [
            mask(item, sensitive[i] if i < len(sensitive) else False)
            for i, item in enumerate(value)
        ]
    return value


def _mask_change(change: Mapping[str, Any]) -> dict[str, Any]:
    masked = dict(change)
    for side in ("before", "after"):
        if side in masked:
            masked[side] = mask(masked[side], masked.get(f"{side}_sensitive", False))
    return masked


def _mask_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: {**spec, "value": REDACTED} if spec.get("sensitive") and "value" in spec else spec
        for name, spec in outputs.items()
    }


def _mask_module(module: Mapping[str, Any]) -> dict[str, Any]:
    masked = dict(module)
    masked["resources"] = [
        {**res, "values": mask(res.get("values"), res.get("sensitive_values") or {})}
        for res in module.get("resources") or []
    ]
    if "child_modules" in module:
        masked["child_modules"] = [_mask_module(child) for child in module["child_modules"]]
    return masked
