"""Termination, timeouts and state locks, with terraform blocked inside a real provisioner."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from alphaswarm_orch.terraform import (
    StalePlan,
    StateLocked,
    TerraformCancelled,
    TerraformConfig,
    TerraformRuntime,
    TerraformTimeout,
)
from alphaswarm_orch.terraform.process import run_command
from alphaswarm_orch.terraform.redact import Redactor
from tests.support.runs import wait_for
from tests.terraform.conftest import Log

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(proc.name) != 0:
            found.append(int(proc.name))
    return found


class Background(threading.Thread):
    """Run `target` in a thread and keep what it raised."""

    def __init__(self, target) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:
            self.error = exc


def test_termination_mid_apply_leaves_consistent_state_and_unlocked_workspace(
    tf_config: TerraformConfig, tf_env: dict[str, str], tf_root: Path, tmp_path: Path, log: Log
) -> None:
    gate = tmp_path / "gate"
    runtime = TerraformRuntime(tf_config, environ=tf_env, on_line=log)
    runtime.plan("slow", {"gate": str(gate)}, plan_id="slow-plan")

    terminate = threading.Event()
    apply = Background(lambda: runtime.apply("slow-plan", cancel=terminate.is_set))
    apply.start()
    wait_for(lambda: Path(f"{gate}.started").exists(), 120, "the provisioner to start")

    # While the apply holds the state lock, another operation is refused with the holder.
    other = TerraformRuntime(tf_config, environ=tf_env)
    with pytest.raises(StateLocked, match=r"state is locked by another operation \(ID:"):
        other.plan("slow", {"gate": str(gate)}, plan_id="while-locked")
    assert not (tf_config.plans_dir / "while-locked").exists()  # nothing half-written

    terminate.set()
    apply.join(timeout=120)
    assert not apply.is_alive()
    assert isinstance(apply.error, TerraformCancelled), apply.error
    assert "SIGINT" in log.text()
    assert not Path(f"{gate}.release").exists()  # stopped by the interrupt, not released
    assert _processes_mentioning(str(gate)) == []

    # Consistent: what was created is recorded; the interrupted resource is tainted.
    state = json.loads((tf_root / "slow" / "terraform.tfstate").read_text())
    status = {r["name"]: r["instances"][0].get("status") for r in state["resources"]}
    assert status == {"first": None, "slow": "tainted"}

    # Unlocked: a new plan takes the lock at once (lock timeout 0) and replaces the tainted one.
    replan = other.plan("slow", {"gate": str(gate)}, plan_id="after")
    assert (replan.summary.add, replan.summary.destroy) == (1, 1)
    # The interrupted plan is consumed: it is never applied a second time.
    with pytest.raises(StalePlan, match="already applied"):
        runtime.apply("slow-plan")


def test_timeout_interrupts_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "forever"
    script = f"i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done  # {marker}"
    with pytest.raises(TerraformTimeout, match="ran longer than 1s and was interrupted"):
        run_command(
            ["sh", "-c", script],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            redactor=Redactor(),
            timeout=1,
            grace=30,
            poll=0.1,
        )
    assert _processes_mentioning(str(marker)) == []


def test_sigkill_after_grace_when_sigint_is_ignored(tmp_path: Path) -> None:
    """A command that ignores SIGINT is killed, with its children, after the grace period."""
    marker = tmp_path / "ignores-int"
    script = (
        f"trap '' INT; touch '{marker}.started'; "
        f"i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done  # {marker}"
    )
    started = threading.Event()
    lines: list[str] = []

    def cancel() -> bool:
        return started.is_set()

    def watch() -> None:
        wait_for(lambda: Path(f"{marker}.started").exists(), 60, "the command to start")
        started.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with pytest.raises(TerraformCancelled):
        run_command(
            ["sh", "-c", script],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            redactor=Redactor(),
            timeout=300,
            grace=0.5,
            poll=0.1,
            on_line=lines.append,
            cancel=cancel,
        )
    watcher.join()
    assert any("sending SIGKILL" in line for line in lines), lines
    assert _processes_mentioning(str(marker)) == []


def test_arguments_are_never_interpreted_by_a_shell(tmp_path: Path) -> None:
    hostile = f"$(touch {tmp_path}/pwned); `touch {tmp_path}/pwned2`"
    result = run_command(
        [sys.executable, "-c", "import sys; print(sys.argv[1])", hostile],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        redactor=Redactor(),
        timeout=60,
        grace=1,
        poll=0.1,
    )
    assert result.lines == [hostile]
    assert list(tmp_path.iterdir()) == []
