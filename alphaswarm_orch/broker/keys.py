"""Every Redis key and stream name: those shared with alphaswarm-core, and those the run loop,
its steps and the workers tell each other through. One place for all of them."""

DEFAULT_KILL_SWITCH_KEY = "alphaswarm:kill_switch"
"""The global kill switch (ALPHASWARM_KILL_SWITCH_KEY overrides it)."""

REQUEST_FAMILIES = ("paper", "hft", "terraform")


def request_stream(family: str) -> str:
    """Stream alphaswarm-core appends requests of `family` to."""
    return f"alphaswarm:requests:{family}"


def dead_letter_stream(family: str) -> str:
    """Where malformed requests of `family` go, with the reason and the original payload."""
    return f"alphaswarm:requests:{family}:dead"


def request_ids(family: str) -> str:
    """Hash request id -> digest of the content first accepted under it (and its entry id), so
    a request id reused for different content is dead-lettered instead of silently dropped."""
    return f"alphaswarm:requests:{family}:ids"


def tick_stream(session_id: str) -> str:
    """A paper/HFT session's tick or event stream."""
    return f"ticks:{session_id}"


def queue_kill_switch_key(base_key: str, queue: str) -> str:
    """The optional per-queue kill-switch key next to the global one."""
    return f"{base_key}:{queue}"


def request_hold_key(family: str) -> str:
    """Set by a request sensor while a kill switch holds `family`'s requests (value: the
    switch's key), deleted by its next tick that is not held; the daemon's request listener
    wakes the sensors when that switch key is gone (`requests.arrivals`)."""
    return f"alphaswarm:requests:held:{family}"


def session_registry(family: str) -> str:
    """Hash session id -> request id of the start request, for sessions of `family`."""
    return f"alphaswarm:sessions:{family}"


def session_stop_key(session_id: str) -> str:
    """Set (to the reason) by a stop request; the session loop ends cleanly when it sees it."""
    return f"alphaswarm:sessions:{session_id}:stop"


def session_lease_key(session_id: str) -> str:
    """The session's owner: `<fence>|<worker>|<nonce>`, with a short TTL renewed every tick."""
    return f"alphaswarm:sessions:{session_id}:lease"


def session_fence_key(session_id: str) -> str:
    """Counter behind the lease's fencing token: every new owner gets a higher number."""
    return f"alphaswarm:sessions:{session_id}:fence"


def worker_handoff_key(node: str) -> str:
    """Set while worker `node` is stopping: its sessions hand themselves on (see sessions)."""
    return f"alphaswarm:worker:{node}:handoff"


def refusal_episode_key(source: str, queue: str, run_id: str | None = None) -> str:
    """The kill-switch episode `source` last recorded a refusal for, on `queue` (for one run,
    when `run_id` is given)."""
    base = f"alphaswarm:refusals:{source}:{queue}"
    return base if run_id is None else f"{base}:{run_id}"


def heartbeat_key(task_id: str) -> str:
    return f"alphaswarm:step:{task_id}:heartbeat"


def starts_key(task_id: str) -> str:
    """List of the processes that started the step, in order (one more per redelivery)."""
    return f"alphaswarm:step:{task_id}:starts"


def run_tasks_key(run_id: str) -> str:
    """Hash step key -> Celery task id of a run's latest submission of each step, written
    before the task is sent: a resumed run loop finds every task that may have been sent."""
    return f"alphaswarm:run:{run_id}:tasks"


def abandoned_key(task_id: str) -> str:
    return f"alphaswarm:step:{task_id}:abandoned"


def cancel_key(run_id: str) -> str:
    return f"alphaswarm:run:{run_id}:cancel"


def running_key(queue: str) -> str:
    """List of the steps running on light queue `queue` (broker/running.py)."""
    return f"alphaswarm:queue:{queue}:running"
