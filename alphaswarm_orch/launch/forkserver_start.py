"""First on the forkserver's preload list: what the forkserver does before it imports anything.

- It exits at once when its launcher does. multiprocessing's forkserver leaves its loop when
  the launching process closes its end of a pipe (exit, or `stop_forkserver`), then finalises
  its interpreter: garbage-collecting the ~500 modules it preloaded took seconds on a busy
  node, during which it lived on with parent 1. It holds nothing that needs finalising (it
  only forks run workers, which exit on their own with `os._exit`), so it skips that step.
- It notes the environment it started with (the launcher's at that moment), before the
  preloaded modules add to it (`os.environ.setdefault` at import): a run worker gets the
  launcher's environment at launch plus those additions, as a fresh process importing the
  same modules would (`preload_environment`).

Only the forkserver process acts on this (this package is imported elsewhere too).
"""

import atexit
import os
import sys

STARTED_ENVIRONMENT: dict[str, str] | None = None
"""The forkserver's environment before its preloads; None outside a forkserver."""


def in_forkserver() -> bool:
    # The forkserver runs as `python -c "from multiprocessing.forkserver import main; ..."`.
    return sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules


def preload_environment() -> dict[str, str]:
    """The variables the forkserver's preloaded modules added to its environment (in the
    forkserver and the processes forked from it; empty elsewhere)."""
    if STARTED_ENVIRONMENT is None:
        return {}
    return {k: v for k, v in os.environ.items() if k not in STARTED_ENVIRONMENT}


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if in_forkserver():
    STARTED_ENVIRONMENT = dict(os.environ)
    atexit.register(_exit_now)
