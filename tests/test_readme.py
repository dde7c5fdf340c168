"""The README's newcomer commands stay true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    return [
        [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
    ]


def _newcomer_commands() -> list[str]:
    blocks = _bash_blocks()
    assert blocks, "README must start with a bash block of the newcomer commands"
    return blocks[0]


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
    home = tmp_path / ".alphaswarm" / "dagster_home"
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    # The project's instance: no missing-config warning, no telemetry, no DEBUG event flood.
    assert "No dagster instance configuration file" not in output
    assert "Telemetry" not in output and not (home / ".telemetry").exists()
    assert not (home / "logs" / "event.log").exists()
    assert output.count(" - DEBUG - ") <= 1, output[-4000:]  # STEP_WORKER_STARTED: not ours
    run_id = re.search(r"^run (\S+)  ingestion_sample_job  SUCCESS", output, re.M)
    assert run_id, output[-4000:]
    duckdb = tmp_path / ".alphaswarm" / "ingestion" / "ingestion.duckdb"
    assert f"50 rows written (50 in table)  duckdb {duckdb} table sample.daily_bars" in output
    assert f"5 rows written (5 in table)    duckdb {duckdb} table sample.instruments" in output
    assert (
        f"workload_runs {run_id[1]}  job=ingestion_sample_job workload=ingestion trigger=cli "
        "status=success steps=1 assets=2"
    ) in output
    for command in (
        "alphaswarm-orch ledger tail",
        f"alphaswarm-orch ledger show {run_id[1]}",
        "alphaswarm-orch dev",
    ):
        assert f"\n  {command}\n" in output

    # The README follows the first command with `alphaswarm-orch ledger tail`: that run is there.
    (tail,) = _bash_blocks()[1]
    assert tail == "alphaswarm-orch ledger tail"
    shown = subprocess.run(
        tail, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    line = next((x for x in shown.stdout.splitlines() if x.startswith(run_id[1])), "")
    assert line.split()[1:8] == [
        "ingestion_sample_job",
        "ingestion",
        "cli",
        "success",
        "steps",
        "1",
        "assets",
    ], shown.stdout


def test_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "`python -m pytest -q`" in readme
    assert ci.rstrip().endswith("python -m pytest -q")
