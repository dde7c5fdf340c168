"""TerraformRuntime: plan, apply a saved plan by id, destroy, on allow-listed workspaces.

A plan is saved under `<state_dir>/plans/<plan_id>/` with its redacted JSON and a record of
what it was planned against (state serial and lineage, a digest of the workspace files). Apply
takes only a plan id and refuses the plan if any of that changed, or if it was applied before:
what was reviewed is exactly what runs, at most once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alphaswarm_orch.terraform.config import TerraformConfig
from alphaswarm_orch.terraform.errors import (
    PlanNotFound,
    StalePlan,
    StateLocked,
    TerraformFailed,
    TerraformNotFound,
    WorkspaceRefused,
)
from alphaswarm_orch.terraform.process import Completed, run_command
from alphaswarm_orch.terraform.redact import Redactor
from alphaswarm_orch.terraform.workspace import (
    Workspace,
    check_variables,
    config_digest,
    declared_variables,
    preset_variables,
    resolve_workspace,
)

PLAN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
PLAN_FILE = "plan.tfplan"
PLAN_JSON = "plan.json"
RECORD = "record.json"
APPLIED = "applied.json"
VARS_FILE = "request.tfvars.json"

LOCK_ERROR = "Error acquiring the state lock"
STALE_ERROR = "Saved plan is stale"

Cancel = Callable[[], bool]


@dataclass(frozen=True)
class PlanSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0

    @classmethod
    def from_plan(cls, plan: Mapping[str, Any]) -> PlanSummary:
        """Count like terraform's own `Plan: N to add, N to change, N to destroy`."""
        add = change = destroy = 0
        for resource in plan.get("resource_changes") or []:
            actions = set(resource.get("change", {}).get("actions", []))
            add += "create" in actions
            destroy += "delete" in actions
            change += actions == {"update"}
        return cls(add, change, destroy)


@dataclass(frozen=True)
class SavedPlan:
    plan_id: str
    workspace: str
    destroy: bool
    summary: PlanSummary
    plan_file: Path
    json_file: Path
    state_serial: int | None
    state_lineage: str | None
    config_digest: str
    sensitive_variables: list[str] = field(default_factory=list)
    created_at: float = 0.0

    def plan_json(self) -> dict[str, Any]:
        """The redacted `terraform show -json` of this plan."""
        return json.loads(self.json_file.read_text())


@dataclass(frozen=True)
class ApplyResult:
    plan_id: str
    workspace: str
    summary: PlanSummary
    outputs: dict[str, Any]
    """Output values, sensitive ones redacted."""
    state_serial: int | None


class TerraformRuntime:
    """Runs terraform for one configuration; every line it reports is redacted."""

    def __init__(
        self,
        config: TerraformConfig,
        *,
        environ: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.config = config
        # TF_CLI_ARGS* would add arguments behind the runtime's back: the argv is the contract.
        self.environ = {
            name: value
            for name, value in (os.environ if environ is None else environ).items()
            if not name.startswith("TF_CLI_ARGS")
        }
        self.on_line = on_line
        self.redactor = Redactor.from_env(self.environ)

    def workspace(self, name: Any) -> Workspace:
        return resolve_workspace(self.config, name)

    def plan(
        self,
        workspace: str,
        variables: Mapping[str, Any],
        *,
        plan_id: str,
        destroy: bool = False,
        cancel: Cancel | None = None,
    ) -> SavedPlan:
        """Plan `workspace` with `variables` and save the plan under `plan_id`."""
        ws = self.workspace(workspace)
        declared = declared_variables(ws)
        check_variables(ws, declared, variables, preset_variables(ws, self.environ))
        sensitive = sorted(name for name, var in declared.items() if var.sensitive)
        self.redactor.add(*(variables[n] for n in sensitive if n in variables))
        self.redactor.add(*(declared[n].default for n in sensitive))
        self.redactor.add(*(self.environ.get(f"TF_VAR_{n}") for n in sensitive))

        directory = self._plan_dir(plan_id)
        if (directory / APPLIED).exists():
            raise StalePlan(f"plan id {plan_id!r} was already applied: plan under a new id")
        if directory.exists():
            shutil.rmtree(directory)  # a retried plan step replaces its unapplied plan
        _private_dir(self.config.plans_dir)
        directory.mkdir(mode=0o700)
        try:
            return self._plan_into(directory, ws, variables, sensitive, plan_id, destroy, cancel)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # no half-written plan is left
            raise

    def _plan_into(
        self,
        directory: Path,
        ws: Workspace,
        variables: Mapping[str, Any],
        sensitive: list[str],
        plan_id: str,
        destroy: bool,
        cancel: Cancel | None,
    ) -> SavedPlan:
        env = self._env(directory)
        self._init(ws, env, cancel)
        serial, lineage = self._state_version(ws, env, cancel)
        digest = config_digest(ws)

        vars_file = directory / VARS_FILE
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(variables), fh)
        try:
            argv = [*self._lock_args("plan"), f"-out={directory / PLAN_FILE}"]
            argv.append(f"-var-file={vars_file}")
            if destroy:
                argv.append("-destroy")
            self._check(self._run(argv, ws, env, cancel), ws, "plan")
        finally:
            vars_file.unlink(missing_ok=True)

        raw = self._show_json(ws, env, directory / PLAN_FILE, cancel)
        self.redactor.add(*_sensitive_values(raw, sensitive))
        json_file = directory / PLAN_JSON
        _write_private(json_file, json.dumps(self.redactor.plan_json(raw, sensitive)))
        saved = SavedPlan(
            plan_id=plan_id,
            workspace=ws.name,
            destroy=destroy,
            summary=PlanSummary.from_plan(raw),
            plan_file=directory / PLAN_FILE,
            json_file=json_file,
            state_serial=serial,
            state_lineage=lineage,
            config_digest=digest,
            sensitive_variables=sensitive,
            created_at=time.time(),
        )
        _write_json(directory / RECORD, _record(saved))
        return saved

    def saved_plan(self, plan_id: str) -> SavedPlan:
        directory = self._plan_dir(plan_id)
        try:
            data = json.loads((directory / RECORD).read_text())
        except FileNotFoundError:
            raise PlanNotFound(
                f"no saved plan with id {plan_id!r} under {self.config.plans_dir}: run "
                "terraform_plan_job first and apply the plan id it reports"
            ) from None
        return SavedPlan(
            **{
                **data,
                "summary": PlanSummary(**data["summary"]),
                "plan_file": directory / PLAN_FILE,
                "json_file": directory / PLAN_JSON,
            }
        )

    def apply(
        self,
        plan_id: str,
        *,
        workspace: str | None = None,
        applied_by: str = "",
        cancel: Cancel | None = None,
    ) -> ApplyResult:
        """Apply exactly the saved plan `plan_id`, refusing it if stale or already applied.

        `workspace`, when given, must be the plan's: a request that names one workspace never
        applies a plan made for another.
        """
        saved = self.saved_plan(plan_id)
        if workspace is not None and workspace != saved.workspace:
            raise WorkspaceRefused(
                f"plan {plan_id!r} was made for workspace {saved.workspace!r}, not "
                f"{workspace!r}: apply it under its own workspace or plan {workspace!r}"
            )
        directory = self._plan_dir(plan_id)
        self._refuse_if_applied(directory, plan_id)
        ws = self.workspace(saved.workspace)
        env = self._env(directory)
        self._init(ws, env, cancel)
        if config_digest(ws) != saved.config_digest:
            raise StalePlan(
                f"plan {plan_id!r} is stale: the files of workspace {ws.name!r} changed since "
                "it was planned. Plan again and apply the new plan id."
            )
        serial, lineage = self._state_version(ws, env, cancel)
        if (serial, lineage) != (saved.state_serial, saved.state_lineage):
            raise StalePlan(
                f"plan {plan_id!r} is stale: the state of workspace {ws.name!r} changed since it "
                f"was planned (serial {saved.state_serial} -> {serial}). Plan again and apply "
                "the new plan id."
            )
        raw = self._show_json(ws, env, saved.plan_file, cancel)
        self.redactor.add(*_sensitive_values(raw, saved.sensitive_variables))

        marker = directory / APPLIED
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self._refuse_if_applied(directory, plan_id)
            raise StalePlan(f"plan {plan_id!r} is being applied by a concurrent run") from None
        with os.fdopen(fd, "w") as fh:
            json.dump({"applied_by": applied_by, "started_at": time.time()}, fh)
        result = self._run([*self._lock_args("apply"), str(saved.plan_file)], ws, env, cancel)
        if result.returncode != 0 and any(LOCK_ERROR in line for line in result.lines):
            marker.unlink()  # nothing was applied: the plan stays applicable
        self._check(result, ws, "apply")

        outputs_raw = json.loads(
            self._run(["output", "-json"], ws, env, cancel, capture=True).stdout or "{}"
        )
        self.redactor.add(*(o.get("value") for o in outputs_raw.values() if o.get("sensitive")))
        outputs = {
            name: "(sensitive)" if o.get("sensitive") else self.redactor.value(o.get("value"))
            for name, o in outputs_raw.items()
        }
        serial, _lineage = self._state_version(ws, env, cancel)
        _write_json(
            marker, {"applied_by": applied_by, "finished_at": time.time(), "serial": serial}
        )
        return ApplyResult(plan_id, ws.name, saved.summary, outputs, serial)

    def destroy(
        self,
        workspace: str,
        variables: Mapping[str, Any],
        *,
        plan_id: str,
        cancel: Cancel | None = None,
    ) -> ApplyResult:
        """Plan a destroy under `plan_id` and apply it at once."""
        self.plan(workspace, variables, plan_id=plan_id, destroy=True, cancel=cancel)
        return self.apply(plan_id, applied_by=plan_id, cancel=cancel)

    # -- internals ---------------------------------------------------------------------

    def _binary(self) -> str:
        found = shutil.which(self.config.binary, path=self.environ.get("PATH"))
        if found is None:
            raise TerraformNotFound(
                f"{self.config.binary} not found on PATH: install terraform on this worker or "
                "set the runtime's binary to its full path"
            )
        return found

    def _plan_dir(self, plan_id: str) -> Path:
        if not plan_id or not set(plan_id) <= PLAN_ID_CHARS or len(plan_id) > 128:
            raise PlanNotFound(
                f"plan id {plan_id!r} is not a plan id: use the id terraform_plan_job reported "
                "(letters, digits, '-', '_')"
            )
        return self.config.plans_dir / plan_id

    def _env(self, directory: Path) -> dict[str, str]:
        _private_dir(self.config.plugin_cache_dir)
        return {
            **self.environ,
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "TF_DATA_DIR": str(directory / "tfdata"),
            "TF_PLUGIN_CACHE_DIR": str(self.config.plugin_cache_dir),
        }

    def _lock_args(self, command: str) -> list[str]:
        return [
            command,
            "-input=false",
            "-no-color",
            f"-lock-timeout={self.config.lock_timeout_seconds}s",
        ]

    def _run(
        self,
        args: list[str],
        ws: Workspace,
        env: Mapping[str, str],
        cancel: Cancel | None,
        *,
        capture: bool = False,
    ) -> Completed:
        return run_command(
            [self._binary(), *args],
            cwd=ws.path,
            env=env,
            redactor=self.redactor,
            timeout=self.config.timeout_seconds,
            grace=self.config.grace_seconds,
            poll=self.config.poll_seconds,
            on_line=self.on_line,
            cancel=cancel,
            capture_stdout=capture,
        )

    def _check(self, result: Completed, ws: Workspace, what: str) -> None:
        if result.returncode == 0:
            return
        if any(STALE_ERROR in line for line in result.lines):
            raise StalePlan(
                f"terraform refused the saved plan for workspace {ws.name!r}: its state changed "
                "after the plan was made. Plan again and apply the new plan id."
            )
        if any(LOCK_ERROR in line for line in result.lines):
            holder = [
                line.strip()
                for line in result.lines
                if line.strip().startswith(("ID:", "Who:", "Operation:", "Created:"))
            ]
            raise StateLocked(
                f"workspace {ws.name!r} state is locked by another operation "
                f"({'; '.join(holder) or 'no lock info'}); waited "
                f"{self.config.lock_timeout_seconds}s. Retry when it finishes; if its process "
                "died, run `terraform force-unlock <ID>` in the workspace."
            )
        raise TerraformFailed(
            f"terraform {what} failed for workspace {ws.name!r} (exit {result.returncode}):\n"
            f"{result.tail()}"
        )

    def _init(self, ws: Workspace, env: Mapping[str, str], cancel: Cancel | None) -> None:
        self._check(self._run(self._lock_args("init"), ws, env, cancel), ws, "init")

    def _state_version(
        self, ws: Workspace, env: Mapping[str, str], cancel: Cancel | None
    ) -> tuple[int | None, str | None]:
        result = self._run(["state", "pull"], ws, env, cancel, capture=True)
        self._check(result, ws, "state pull")
        if not result.stdout.strip():
            return None, None
        state = json.loads(result.stdout)
        return state.get("serial"), state.get("lineage")

    def _show_json(
        self, ws: Workspace, env: Mapping[str, str], plan_file: Path, cancel: Cancel | None
    ) -> dict[str, Any]:
        result = self._run(
            ["show", "-json", "-no-color", str(plan_file)], ws, env, cancel, capture=True
        )
        self._check(result, ws, "show")
        return json.loads(result.stdout)

    def _refuse_if_applied(self, directory: Path, plan_id: str) -> None:
        marker = directory / APPLIED
        if marker.exists():
            try:
                by = json.loads(marker.read_text()).get("applied_by") or "an earlier run"
            except ValueError:
                by = "a concurrent run"
            raise StalePlan(
                f"plan {plan_id!r} was already applied (by {by}): a plan is applied at most "
                "once. Plan again and apply the new plan id."
            )


def _sensitive_values(plan: Mapping[str, Any], sensitive_variables: list[str]) -> list[Any]:
    """Values a plan holds in the clear: sensitive variables (from any source) and outputs."""
    variables = plan.get("variables") or {}
    outputs = (plan.get("planned_values") or {}).get("outputs") or {}
    return [variables.get(name, {}).get("value") for name in sensitive_variables] + [
        spec.get("value") for spec in outputs.values() if spec.get("sensitive")
    ]


def _record(saved: SavedPlan) -> dict[str, Any]:
    data = asdict(saved)
    for key in ("plan_file", "json_file"):
        data.pop(key)
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write via a temporary file and rename, so readers never see half a record."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, json.dumps(data))
    os.replace(tmp, path)


def _write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (what the runtime stores may hold secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _private_dir(path: Path) -> None:
    """`path` and its missing parents, created owner-only (the state dir holds plans)."""
    if not path.is_dir():
        _private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
