"""First on the forkserver's preload list: the forkserver exits at once when its launcher does.

multiprocessing's forkserver leaves its loop when the launching process closes its end of a
pipe (exit, or `stop_forkserver`), then finalises its interpreter: garbage-collecting the
~500 modules it preloaded took seconds on a busy node, during which it lived on with parent 1.
It holds nothing that needs finalising (it only forks run workers, which exit on their own
with `os._exit`), so it skips that step. Only the forkserver process registers this.
"""

import atexit
import os
import sys


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# The forkserver runs as `python -c "from multiprocessing.forkserver import main; ..."`.
if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    atexit.register(_exit_now)
