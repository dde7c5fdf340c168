"""ThreadedComputeLogManager in a real process with real file descriptors: subprocess output
is captured too and the console still gets everything. (On a Celery worker, whose stdout and
stderr are loggers, see test_executor_celery.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CAPTURE = textwrap.dedent(
    """
    import os, subprocess, sys
    from alphaswarm_orch.execution.compute_logs import ThreadedComputeLogManager

    manager = ThreadedComputeLogManager(base_dir=sys.argv[1])
    with manager.capture_logs(["run", "step"]):
        print("python stdout", flush=True)
        print("python stderr", file=sys.stderr, flush=True)
        subprocess.run(["sh", "-c", "echo child stdout; echo child stderr >&2"], check=True)
        os.write(1, b"raw fd write\\n")
    print("after capture", flush=True)
    print(manager.is_capture_complete(["run", "step"]))
    """
)


def test_capture_records_process_and_child_output_and_still_mirrors_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CAPTURE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = (tmp_path / "run" / "step.out").read_text()
    err = (tmp_path / "run" / "step.err").read_text()
    assert out.splitlines() == ["python stdout", "child stdout", "raw fd write"]
    assert err.splitlines() == ["python stderr", "child stderr"]
    # The console got the same lines (mirrored), and what follows the capture only there.
    assert result.stdout.splitlines() == [*out.splitlines(), "after capture", "True"]
    assert result.stderr.splitlines() == err.splitlines()
