"""Keep secrets out of the event log: sensitive variables and outputs, credentials from the env.

Terraform masks sensitive values in its human output but not in `terraform show -json` of a
plan, and provisioners may print anything, so every line and every JSON document that leaves
the runtime goes through one `Redactor`.

Output is redacted line by line, so a multi-line secret (a PEM key in `TF_VAR_tls_key`) is
also remembered line by line: a provisioner that prints it leaks none of its lines.
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
    r"APIKEY|AUTH|SESSION_KEY|CLIENT_KEY|^TF_TOKEN_|^TF_VAR_\w*KEY$",
    re.IGNORECASE,
)

PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
"""A PEM private key is a secret whatever the variable holding it is called."""


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
            if CREDENTIAL_NAME.search(name) or PRIVATE_KEY_BLOCK.search(value):
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
                parts = [text]
                if len(text.splitlines()) > 1:
                    # Each line on its own too: output is redacted one line at a time.
                    parts += [line.strip() for line in text.splitlines()]
                self._secrets.update(part for part in parts if len(part) >= MIN_SECRET_LENGTH)

    def text(self, line: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line

    def value(self, value: Any) -> Any:
        """`value` with every string leaf passed through `text`, and any number leaf that is
        itself a secret (a sensitive `number` default) replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return REDACTED if str(value) in self._secrets else value
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
        configuration = dict(plan.get("configuration") or {})
        if "root_module" in configuration:
            # The configuration repeats each variable's `default`, of any type (a map, a
            # number): those of sensitive variables are masked whole.
            configuration["root_module"] = _mask_config_module(configuration["root_module"], hidden)
            plan["configuration"] = configuration
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


def _mask_config_module(module: Mapping[str, Any], hidden: set[str]) -> dict[str, Any]:
    """A `configuration` module with the defaults of its sensitive variables masked; `hidden`
    names the root module's sensitive variables (child modules say so themselves)."""
    masked = dict(module)
    if "variables" in module:
        masked["variables"] = {
            name: {**spec, "default": REDACTED}
            if "default" in spec and (spec.get("sensitive") or name in hidden)
            else spec
            for name, spec in module["variables"].items()
        }
    if "module_calls" in module:
        masked["module_calls"] = {
            name: {**call, "module": _mask_config_module(call["module"], set())}
            if "module" in call
            else call
            for name, call in module["module_calls"].items()
        }
    return masked
