"""The forkserver's preload module: importable with no environment, and it starts no thread
(a thread started in the forkserver would be missing from every run worker forked from it)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import threading, sys
import alphaswarm_orch.launch.preload
assert threading.active_count() == 1, threading.enumerate()
print(len(sys.modules))
"""


def test_preload_imports_with_no_environment_and_starts_no_thread() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 1000  # the code location and the run machinery
