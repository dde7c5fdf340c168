"""What `alphaswarm-orch daemon` adds to dagster-daemon: its loops act when work arrives.

- `wakeup.py`: the sensor loop and the run queue's dequeue loop wait on a wake-up beside their
  period, so a request is evaluated, and its queued run launched, at once.
- `coordinator.py`: the run coordinator that wakes the dequeue loop when a run is queued.
- The request streams' listener that wakes the sensor loop is `requests/arrivals.py`.
"""
