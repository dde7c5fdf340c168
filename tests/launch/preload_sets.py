"""A module that sets an environment variable at import, as the ingestion package does for
dlt: a forkserver preloading it passes the variable on to its run workers."""

import os

from tests.launch.reusable import PRELOAD_SETS

os.environ.setdefault(PRELOAD_SETS, "by the forkserver's preload")
