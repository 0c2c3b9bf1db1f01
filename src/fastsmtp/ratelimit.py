"""A strict sliding-window rate limiter for message starts.

nodemailer's pool counts messages after they were sent and so overshoots by up to
``maxConnections`` per window; a token bucket allows a full bucket plus its refill (up to
twice the limit) in one window. This limiter keeps the start times of the last ``limit``
permits instead, so in *any* window of ``period`` seconds at most ``limit`` permits are
granted, however many tasks ask.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["RateLimiter"]


class RateLimiter:
    """Grants at most ``limit`` permits in any sliding window of ``period`` seconds.

    Waiters are served in arrival order. A waiter that is cancelled takes no permit.
    Times come from :func:`time.monotonic`, not the loop's clock: uvloop's clock is cached
    per loop iteration at millisecond resolution, which could let a window come up a
    millisecond short.

    Args:
        limit: Permits per window; must be at least 1.
        period: Window length in seconds; must be positive.
    """

    def __init__(self, limit: int, period: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("rate limit must be at least 1")
        if period <= 0:
            raise ValueError("rate period must be positive")
        self.limit = limit
        self.period = period
        self._starts: deque[float] = deque(maxlen=limit)
        self._lock = asyncio.Lock()  # FIFO: asyncio.Lock wakes waiters in order

    def delay(self, now: float) -> float:
        """Seconds until a permit is free at :func:`time.monotonic` time ``now``."""
        if len(self._starts) < self.limit:
            return 0.0
        return max(0.0, self._starts[0] + self.period - now)

    def try_acquire(self) -> bool:
        """Take a permit if one is free right now and nobody is waiting; never waits.

        Returns:
            True when a permit was taken.
        """
        if self._lock.locked():
            return False  # a waiter is ahead: FIFO order holds
        now = time.monotonic()
        if self.delay(now) > 0:
            return False
        self._starts.append(now)
        return True

    async def acquire(self) -> None:
        """Wait for a permit and take it."""
        clock = time.monotonic
        async with self._lock:
            # A timer may fire up to one clock resolution early: check again after sleeping.
            while (wait := self.delay(clock())) > 0:
                await asyncio.sleep(wait)
            self._starts.append(clock())

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None
