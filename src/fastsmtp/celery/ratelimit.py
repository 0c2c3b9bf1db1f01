"""One rate limit for every worker: a sliding window kept in Redis, on Redis's clock.

Why not a token bucket, or the pool's own :class:`fastsmtp.ratelimit.RateLimiter` per
worker: N workers with a limit each send N times the limit, and a token bucket lets a full
bucket plus its refill through in one window. The server's limit is on *arrivals*, and a
permit is taken some time before its message arrives (a queue, a pipeline, a slow worker),
so a window counted on permit times alone can still hold more than ``limit`` arrivals at
the server: a burst of permits that waited and a later one that did not.

So a permit counts from the moment it is granted until ``period`` seconds after its
message *finished* (the 250 came back, or the attempt failed): while in flight it sits in
the ``inflight`` sorted set, and :meth:`RedisRateLimiter.release` moves it to ``done``,
scored by when it stops counting. A permit is granted only while fewer than ``limit``
permits count. Then no window of ``period`` seconds can ever see more than ``limit``
arrivals, however the deliveries are delayed: of any ``limit + 1`` arrivals in such a
window, the last one's permit was granted when the other ``limit`` were still counting.
The price is throughput slightly under ``limit / period`` (each message holds its permit
for its own latency too). A permit whose worker died is released by its lease
(``lease`` seconds, default 300) and counts ``period`` more.

Both sets are changed by one Lua script each, with ``TIME`` as the clock: every worker,
on any machine, sees the same window.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from itertools import count
from typing import Any

from .store import run_script

__all__ = ["RedisRateLimiter", "LEASE"]

#: Seconds a permit counts as in flight at most (a worker that died never releases it).
LEASE = 300.0

# KEYS: done, inflight. ARGV: limit, period, lease, member. Returns "0" when granted, else
# the seconds until a permit may free up.
_ACQUIRE = """
local limit, period, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZADD', KEYS[1], tonumber(expired[i + 1]) + period, expired[i])
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) < limit then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  local ttl = math.ceil((lease + period) * 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return '0'
end
local wait = period
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then wait = tonumber(first[2]) - now end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if oldest[2] then wait = math.min(wait, tonumber(oldest[2]) + period - now) end
return tostring(wait)
"""

# KEYS: done, inflight. ARGV: period, members... Each finished permit counts `period` more.
_RELEASE = """
local period = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[1], now + period, ARGV[i])
  end
end
return 0
"""

#: Shortest pause between two tries of a waiting worker (against a busy loop).
MIN_WAIT = 0.001


class RedisRateLimiter:
    """At most ``limit`` messages per ``period`` seconds, shared by every worker.

    Args:
        client: A ``redis.asyncio.Redis`` client.
        key: Key prefix naming the limit (one per SMTP server: the limit is the server's).
        limit: Messages per window; at least 1.
        period: Window in seconds; positive.
        lease: Seconds a permit counts as in flight at most (see :data:`LEASE`).

    Raises:
        ValueError: A limit below 1 or a period not positive.
    """

    def __init__(self, client: Any, key: str, limit: int, period: float = 1.0,
                 lease: float = LEASE) -> None:
        if limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if not period > 0:
            raise ValueError("rate_delta must be positive")
        self.limit = limit
        self.period = period
        self.lease = lease
        self._keys = [f"{key}:done", f"{key}:inflight"]
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._prefix = f"{os.getpid()}:{os.urandom(6).hex()}:"
        self._ids = count()

    async def acquire(self) -> str:
        """Wait for a permit; return its id (give it to :meth:`release` when done)."""
        member = self._prefix + str(next(self._ids))
        args = [self.limit, repr(self.period), repr(self.lease), member]
        while True:
            wait = float(await run_script(self._acquire, self._keys, args))
            if wait <= 0:
                return member
            await asyncio.sleep(max(wait, MIN_WAIT))

    async def release(self, permits: Iterable[str]) -> None:
        """The messages of these permits finished: each counts ``period`` seconds more."""
        members = list(permits)
        if members:
            await run_script(self._release, self._keys, [repr(self.period), *members])
