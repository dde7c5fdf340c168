"""The README's newcomer commands stay true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _newcomer_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README must start with a bash block of the newcomer commands"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_main_command_runs_a_job_on_the_embedded_default(tmp_path: Path) -> None:
    main, tests = _newcomer_commands()[:2]
    install, _, run = main.partition("&&")
    assert install.strip() == "pip install -e ."
    assert run.strip().startswith("alphaswarm-orch run ")
    assert tests == "bash .ci/run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "DAGSTER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        run.strip(), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "RUN_SUCCESS" in output
    assert (tmp_path / ".alphaswarm" / "dagster_home").is_dir()


def test_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "`python -m pytest -q`" in readme
    assert ci.rstrip().endswith("python -m pytest -q")
