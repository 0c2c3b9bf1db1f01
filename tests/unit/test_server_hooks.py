"""The hook runner: an ``async def`` hook that never suspends gives its output at once.

Called from a plain loop callback, as the protocol calls it from ``data_received``: a
coroutine that finishes without suspending answers synchronously (no PENDING, no task
left scheduled); one that really waits answers through the callback, in a later turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastsmtp.server.hooks import PENDING, HookRunner
from fastsmtp.server.session import HookCall


def call(func: Callable[..., Any]) -> HookCall:
    return HookCall("handle_DATA", func, ("session", "envelope"), lambda r: ("finished", r), lambda: "failed")


async def in_callback(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` from a loop callback (outside any task); return its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    loop.call_soon(lambda: fut.set_result(fn()))
    return await fut


async def test_async_hook_without_suspension_answers_synchronously() -> None:
    runner = HookRunner("server", 300, lambda c: None)

    async def hook(server: Any, session: Any, envelope: Any) -> str:
        assert asyncio.current_task() is not None  # a task of its own, even inline
        return "250 OK"

    def sync_hook(server: Any, session: Any, envelope: Any) -> str:
        return "250 sync"

    assert await in_callback(lambda: runner.run(call(hook), None)) == ("finished", "250 OK")
    assert await in_callback(lambda: runner.run(call(sync_hook), None)) == ("finished", "250 sync")


async def test_async_hook_raising_inline_fails_synchronously() -> None:
    runner = HookRunner("server", 300, lambda c: None)

    async def hook(server: Any, session: Any, envelope: Any) -> str:
        raise RuntimeError("inline")

    assert await in_callback(lambda: runner.run(call(hook), None)) == "failed"


async def test_suspending_hook_answers_through_the_callback() -> None:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    runner = HookRunner("server", 300, lambda c: tasks.append(loop.create_task(c)))
    release = asyncio.Event()
    outputs: list[Any] = []

    async def hook(server: Any, session: Any, envelope: Any) -> str:
        await release.wait()
        return "250 late"

    assert await in_callback(lambda: runner.run(call(hook), outputs.append)) is PENDING
    assert outputs == []
    release.set()
    await asyncio.wait_for(tasks[0], 10)
    assert outputs == [("finished", "250 late")]
