"""Run launching: each run starts as a fork of a warm forkserver, not a fresh Python.

`ForkserverRunLauncher` is imported on first use, so that the forkserver's first preload
module (`forkserver_start`, in this package) runs before anything else is imported.
"""

from typing import Any

__all__ = ["ForkserverRunLauncher"]


def __getattr__(name: str) -> Any:
    if name == "ForkserverRunLauncher":
        from alphaswarm_orch.launch.launcher import ForkserverRunLauncher

        return ForkserverRunLauncher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
