"""Last on the forkserver's preload list: build what run workers reuse, then freeze the heap.

- `prebuilt.prebuild()`: the reusable builders imported by the preloads (the code location's
  Definitions) are built once here, with their inputs recorded (see prebuilt.py).
- `gc.freeze()`: every object the forkserver holds moves to the collector's permanent
  generation. A run worker shares those pages with the forkserver until it writes to them,
  and a full collection writes to every tracked object it visits (its GC header): without
  the freeze a run worker's first full collection, within minutes of a session's start, made
  private copies of about 50 MiB of the forkserver's pages, for the rest of the run.

Only the forkserver process acts on this.
"""

import gc

from alphaswarm_orch.launch import prebuilt
from alphaswarm_orch.launch.forkserver_start import in_forkserver

if in_forkserver():
    prebuilt.prebuild()
    gc.collect()
    gc.freeze()
