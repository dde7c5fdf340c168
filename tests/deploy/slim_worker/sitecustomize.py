"""Put on PYTHONPATH by test_dependency_split: every top-level module named in
ALPHASWARM_SLIM_BLOCKED (those of distributions outside the worker image's install set)
fails to import, in this process and in every child it starts, as if not installed."""

import os
import sys
from importlib.abc import MetaPathFinder

BLOCKED = frozenset(filter(None, os.environ.get("ALPHASWARM_SLIM_BLOCKED", "").split(",")))


class NotInWorkerImage(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (not in the worker image's install set)",
                name=fullname,
            )
        return None


sys.meta_path.insert(0, NotInWorkerImage())
