"""Waiting for a condition or an event instead of sleeping (every wait bounded)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["WAIT", "settle", "wait_until"]

#: Upper bound for any single wait in the tests (generous, but bounded). A wait that
#: runs out fails the test; it is never asserted as a duration.
WAIT = 10.0


async def wait_until(predicate: Callable[[], object], timeout: float = WAIT) -> None:
    """Poll ``predicate`` (bounded) until it is true; fail the test if it never is.

    For conditions that no event announces (a count on the server, a pool's queue).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def settle(timeout: float = WAIT) -> None:
    """Wait (bounded) until no other task is left on the loop.

    For "it happens only once" checks: once every task started by the code under test
    has finished, a second call that would have come has come.
    """
    current = asyncio.current_task()
    others = {t for t in asyncio.all_tasks() if t is not current and not t.done()}
    if others:
        done, pending = await asyncio.wait(others, timeout=timeout)
        assert not pending, f"tasks still running: {pending}"
