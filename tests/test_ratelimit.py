"""The strict sliding-window rate limiter."""

import asyncio
import time

import pytest

from fastsmtp.ratelimit import RateLimiter


async def test_no_window_ever_holds_more_than_the_limit():
    limiter = RateLimiter(5, 0.2)
    starts: list[float] = []

    async def worker():
        for _ in range(5):
            await limiter.acquire()
            # The stamp the limiter took for this permit (the lock hands over without a
            # yield, so the newest is ours); a fresh clock read would add scheduling jitter.
            starts.append(limiter._starts[-1])

    await asyncio.gather(*(worker() for _ in range(4)))
    assert len(starts) == 20
    starts.sort()
    # The i-th and (i+limit)-th start are always at least one period apart.
    for first, sixth in zip(starts, starts[5:]):
        assert sixth - first >= 0.2
    # ...and the limiter did not serialize everything: each window is used fully.
    assert starts[4] - starts[0] < 0.2


async def test_cancelled_waiter_takes_no_permit():
    limiter = RateLimiter(1, 0.3)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(limiter._starts) == 1
    assert limiter.delay(time.monotonic()) > 0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
