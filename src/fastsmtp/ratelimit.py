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

__all__ = ["RateLimiter", "AdaptiveRate"]


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

    def set_limit(self, limit: int) -> None:
        """Change the permits per window (the adaptive rate does), keeping the newest
        start times, so the new limit holds at once for the current window too."""
        if limit < 1:
            raise ValueError("rate limit must be at least 1")
        if limit != self.limit:
            self.limit = limit
            self._starts = deque(self._starts, maxlen=limit)

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


class AdaptiveRate:
    """The pool's own rate under "slow down" replies: AIMD, never below a floor.

    Sans-IO (the caller passes ``now``). Unthrottled, :attr:`limit` is None (or the
    configured ``ceiling``). The first slow-down reply sets the limit to what the server
    accepted in the last window (``delivered``: the best estimate of its limit, far better
    than halving an unthrottled burst); a later one, while throttled, halves it
    (multiplicative decrease). At most one cut per window: the replies to messages started
    before a cut arrive after it and must not cut again. Each window without a slow-down
    reply raises the limit by an eighth (at least 1) until it reaches the ceiling, or,
    with no configured rate, twice the first cut's limit, where throttling ends.

    Args:
        floor: The limit never goes below this (permits per window).
        ceiling: The configured ``rate_limit``, or None.
        period: The window in seconds (``rate_delta``).
    """

    __slots__ = ("floor", "ceiling", "period", "limit", "cuts", "_last_cut", "_last_slow",
                 "_release")

    def __init__(self, floor: int, ceiling: int | None, period: float) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.period = period
        #: Permits per window allowed now; None: not throttled and no configured rate.
        self.limit: int | None = ceiling
        #: Slow-down cuts so far (observability).
        self.cuts = 0
        self._last_cut = float("-inf")
        self._last_slow = float("-inf")  # the latest slow-down reply, cut or not
        self._release = ceiling  # where recovery ends

    @property
    def throttled(self) -> bool:
        """True while the limit is below where it would be without slow-down replies."""
        return self.limit is not None and self.limit != self._release

    def slow_down(self, now: float, delivered: int) -> bool:
        """A slow-down reply arrived; ``delivered``: messages accepted in the last window.

        Returns:
            True when the limit changed.
        """
        self._last_slow = now
        if now - self._last_cut < self.period:
            return False
        if self.throttled:
            assert self.limit is not None
            new = max(self.floor, min(self.limit // 2, delivered))
        else:
            new = max(self.floor, delivered)
            if self.ceiling is not None:
                new = min(new, self.ceiling - 1) if self.ceiling > self.floor else self.floor
            else:
                self._release = max(self.floor + 1, 2 * new)
        self._last_cut = now
        self.cuts += 1
        if new == self.limit:
            return False
        self.limit = new
        return True

    def tick(self, now: float) -> bool:
        """A window passed: raise the limit if it was clean.

        Returns:
            True when the limit changed (it may become None: throttling is over).
        """
        if not self.throttled or now - self._last_slow < self.period:
            return False
        assert self.limit is not None and self._release is not None
        self.limit = min(self._release, self.limit + max(1, self.limit // 8))
        if self.limit == self._release and self.ceiling is None:
            self.limit = None
            self._release = None
        return True
