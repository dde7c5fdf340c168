"""Run launching: each run starts as a fork of a warm forkserver, not a fresh Python."""

from alphaswarm_orch.launch.launcher import ForkserverRunLauncher

__all__ = ["ForkserverRunLauncher"]
