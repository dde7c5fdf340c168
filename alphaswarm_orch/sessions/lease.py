"""One owner per session: a Redis lease with a fencing token, checked by every write.

The lease key holds `<fence>|<worker>|<nonce>` with a TTL renewed by every read and ack. A
new owner gets a fence higher than every earlier one (a Redis counter, raised above the
fence Postgres last saw if Redis lost it). Every Redis write of a session (reading ticks
into the group's pending list, acknowledging them) is a Lua script that first checks the
lease value, so it is atomic with the check; every Postgres write is conditional on the
session row's `fence` (see simulator.py). A step that lost its lease therefore cannot write
anywhere, whatever the timing: its next read, ack or database write is refused and it stops.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from alphaswarm_orch.broker.keys import session_fence_key, session_lease_key, tick_stream

LEASE_TTL_MS = 8_000
"""A lease not renewed for this long is free. Below the executor's worker-loss detection
(heartbeat TTL + grace, ~9-10 s), so the step re-submitted after a loss finds it free."""


class LeaseLost(RuntimeError):
    """This step no longer owns its session (another step took it over); it must stop."""

    def __init__(self, session_id: str, fence: int, where: str) -> None:
        super().__init__(
            f"session {session_id}: lease with fence {fence} lost ({where} refused); "
            "another step owns the session now"
        )
        self.session_id = session_id
        self.fence = fence
        self.where = where


_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return {0, redis.call('get', KEYS[1])} end
local fence = redis.call('incr', KEYS[2])
local floor = tonumber(ARGV[3])
if fence <= floor then
  fence = floor + 1
  redis.call('set', KEYS[2], fence)
end
local value = fence .. '|' .. ARGV[1]
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return {fence, value}
"""

# The stop checks of a read or ack: GET of KEYS[3] and KEYS[4] (stop request, handoff flag),
# TYPE of the rest (kill switches: any existing key engages; the caller reads it in full).
_STOPS = """
local function stops()
  local values = {redis.call('get', KEYS[3]), redis.call('get', KEYS[4])}
  for i = 5, #KEYS do values[#values + 1] = redis.call('type', KEYS[i])['ok'] end
  return values
end
"""

# KEYS: lease, stream, stop keys...; ARGV: value, ttl, group, consumer, count, cursor
_READ = (
    _STOPS
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
redis.call('pexpire', KEYS[1], ARGV[2])
local stops = stops()
local reply = redis.call('xreadgroup', 'GROUP', ARGV[3], ARGV[4], 'COUNT', ARGV[5],
  'STREAMS', KEYS[2], ARGV[6])
local entries = {}
if reply and reply[1] then entries = reply[1][2] end
if #entries > 0 or ARGV[6] ~= '>' then return {1, stops, entries} end
for _, group in ipairs(redis.call('xinfo', 'groups', KEYS[2])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if name == ARGV[3] then return {1, stops, entries, last} end
end
return {1, stops, entries}
"""
)

# KEYS: lease, stream, stop keys...; ARGV: value, ttl, group, entry id
_ACK = (
    _STOPS
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('xack', KEYS[2], ARGV[3], ARGV[4])
return {1, stops()}
"""
)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Owner:
    """Who holds a session's lease (parsed from its value)."""

    fence: int
    worker: str

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Owner | None:
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        fence, _, rest = text.partition("|")
        worker = rest.rsplit("|", 1)[0]
        try:
            return cls(int(fence), worker)
        except ValueError:
            return None


def owner_of(client: redis.Redis, session_id: str) -> Owner | None:
    return Owner.parse(client.get(session_lease_key(session_id)))


class SessionLease:
    """The lease of one session as held (or wanted) by one step."""

    def __init__(
        self, client: redis.Redis, session_id: str, worker: str, ttl_ms: int = LEASE_TTL_MS
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.worker = worker
        self.ttl_ms = ttl_ms
        self.key = session_lease_key(session_id)
        self.stream = tick_stream(session_id)
        self.value: str | None = None
        self.fence = 0
        self._acquire = client.register_script(_ACQUIRE)
        self._read = client.register_script(_READ)
        self._ack = client.register_script(_ACK)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self, floor: int = 0) -> bool:
        """Take the lease if nobody holds it; the fence is then above `floor` and every
        earlier fence."""
        nonce = f"{self.worker}|{os.getpid()}-{uuid.uuid4().hex[:8]}"
        reply = self._acquire(
            keys=[self.key, session_fence_key(self.session_id)], args=[nonce, self.ttl_ms, floor]
        )
        if int(reply[0]) == 0:
            return False
        self.fence = int(reply[0])
        self.value = _text(reply[1])
        return True

    def holder(self) -> Owner | None:
        return owner_of(self.client, self.session_id)

    def read(
        self, group: str, consumer: str, cursor: str, count: int, stop_keys: list[str]
    ) -> tuple[list[Any], list[Any], str | None]:
        """(stop key values, entries, group's last-delivered id when none) — or LeaseLost."""
        reply = self._read(
            keys=[self.key, self.stream, *stop_keys],
            args=[self._held("read"), self.ttl_ms, group, consumer, count, cursor],
        )
        if int(reply[0]) == 0:
            raise LeaseLost(self.session_id, self.fence, "tick read")
        last = _text(reply[3]) if len(reply) > 3 else None
        return list(reply[1]), list(reply[2]), last

    def ack(self, group: str, entry_id: str, stop_keys: list[str]) -> list[Any]:
        """Acknowledge `entry_id` and return the stop key values — or LeaseLost."""
        reply = self._ack(
            keys=[self.key, self.stream, *stop_keys],
            args=[self._held("ack"), self.ttl_ms, group, entry_id],
        )
        if int(reply[0]) == 0:
            raise LeaseLost(self.session_id, self.fence, "tick ack")
        return list(reply[1])

    def release(self) -> bool:
        """Give the lease up now (a handoff: the next owner need not wait for the TTL)."""
        if self.value is None:
            return False
        released = bool(self._release(keys=[self.key], args=[self.value]))
        self.value = None
        return released

    def _held(self, where: str) -> str:
        if self.value is None:
            raise LeaseLost(self.session_id, self.fence, where)
        return self.value


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
