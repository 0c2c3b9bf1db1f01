"""The strict sliding-window rate limiter."""

import asyncio
import time

import pytest

from fastsmtp.ratelimit import RateLimiter

from support.wait import wait_until


async def test_no_window_ever_holds_more_than_the_limit():
    limiter = RateLimiter(5, 0.2)
    starts: list[float] = []
    # Set by the first loop step after the first permit: a permit granted before it is
    # set came without any wait.
    next_step = asyncio.Event()
    at_once: list[bool] = []

    async def worker():
        for _ in range(5):
            await limiter.acquire()
            # The stamp the limiter took for this permit (the lock hands over without a
            # yield, so the newest is ours); a fresh clock read would add scheduling jitter.
            starts.append(limiter._starts[-1])
            if len(starts) == 1:
                asyncio.get_running_loop().call_soon(next_step.set)
            at_once.append(not next_step.is_set())

    await asyncio.gather(*(worker() for _ in range(4)))
    assert len(starts) == 20
    starts.sort()
    # The i-th and (i+limit)-th start are always at least one period apart.
    for first, sixth in zip(starts, starts[5:]):
        assert sixth - first >= 0.2
    # ...and the limiter did not serialize everything: each window is used fully (the
    # first five permits came at once, in the first one's loop step; an ordering check,
    # not a duration, so a slow machine cannot fail it).
    assert at_once[:5] == [True] * 5


async def test_cancelled_waiter_takes_no_permit():
    limiter = RateLimiter(1, 0.3)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    # The waiter holds the limiter's lock while it waits for the permit.
    await wait_until(limiter._lock.locked)
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
