"""The kill switch: one Redis key (plus optional per-queue keys) shared with alphaswarm-core.

The key's value is the reason (free text, or JSON with a `reason` field). While it is set,
sensors skip, steps refuse to start, session loops stop and terraform apply is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from alphaswarm_orch.control.keys import queue_kill_switch_key
from alphaswarm_orch.ledger.refusals import record_refusal
from alphaswarm_orch.settings import Settings


class KillSwitchEngaged(RuntimeError):
    """Raised where work refuses to start because the kill switch is set."""

    def __init__(self, key: str, reason: str, where: str) -> None:
        self.key = key
        self.reason = reason
        self.where = where
        super().__init__(
            f"kill switch {key!r} is set ({reason}): {where} refused. "
            "Clear it with `alphaswarm-orch kill-switch off` once it is safe to resume."
        )


@dataclass(frozen=True)
class KillSwitchState:
    key: str
    reason: str


class KillSwitch:
    """Read and set the kill-switch keys on the shared Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> KillSwitch:
        url = settings.require_redis("the kill switch")
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, settings.kill_switch_key)

    def key_for(self, queue: str | None) -> str:
        return self.key if queue is None else queue_kill_switch_key(self.key, queue)

    def state(self, queue: str | None = None) -> KillSwitchState | None:
        """The engaged switch that applies to `queue` (global first), or None."""
        keys = [self.key] if queue is None else [self.key, self.key_for(queue)]
        for key, raw in zip(keys, self.client.mget(keys), strict=True):
            if raw is not None:
                return KillSwitchState(key, parse_reason(raw))
        return None

    def check(self, where: str, queue: str | None = None) -> None:
        """Raise KillSwitchEngaged if a switch that applies to `queue` is set."""
        state = self.state(queue)
        if state is not None:
            raise KillSwitchEngaged(state.key, state.reason, where)

    def refuse_step(
        self,
        settings: Settings,
        *,
        source: str,
        where: str,
        queue: str | None,
        run_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """`check`, and record the refusal in the ledger before raising.

        For op bodies: it works under any executor (in-process, multiprocess, Celery), so a
        step refuses to start while the switch is set whoever runs it.
        """
        try:
            self.check(where, queue)
        except KillSwitchEngaged as exc:
            record_refusal(
                settings,
                source=source,
                reason=str(exc),
                queue=queue,
                run_id=run_id,
                request_id=request_id,
            )
            raise

    def engage(self, reason: str, queue: str | None = None) -> None:
        if not reason.strip():
            raise ValueError("a kill switch needs a reason (--reason ...)")
        self.client.set(self.key_for(queue), reason)

    def clear(self, queue: str | None = None) -> bool:
        return bool(self.client.delete(self.key_for(queue)))


def parse_reason(raw: bytes) -> str:
    """The reason stored in a kill-switch key: free text, or JSON with a `reason` field."""
    text = raw.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    if isinstance(payload, dict) and "reason" in payload:
        return str(payload["reason"])
    return text
