"""The forkserver's preload list: the preload module imports with no environment and starts no
thread (a thread started in the forkserver would be missing from every run worker forked from
it), and a name that cannot be found is refused up front."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from dagster._core.errors import DagsterInvariantViolationError

from alphaswarm_orch.launch import ForkserverRunLauncher

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


@pytest.mark.parametrize("name", ["alphaswarm_orch.launch.prelaod", "no_such_package.module"])
def test_a_preload_module_that_cannot_be_found_is_refused_naming_it(name: str) -> None:
    # multiprocessing's forkserver skips a preload that fails to import without a word.
    with pytest.raises(DagsterInvariantViolationError, match=re.escape(repr([name]))):
        ForkserverRunLauncher(preload_modules=["dagster", name])
