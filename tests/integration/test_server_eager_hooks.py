"""``async def`` hooks run eagerly: inline when they never suspend, in a task when they do.

Over real sockets: a pipelined connection mixing hooks that finish at once and hooks that
really wait keeps its replies in order; failures before and after a suspension give 451;
a suspended hook survives its client going away and is cancelled by a closing server;
contextvars and ``asyncio.current_task()`` behave as in any task.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any

import pytest
from support.server import WAIT, greeted, serve, wait_until

ERROR_451 = b"451 4.3.0 Error: local error in processing\r\n"
REPLIES = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"


def transaction(body: bytes) -> bytes:
    return b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n" + body + b"\r\n.\r\n"


class Mixed:
    """``handle_DATA`` returns at once, unless the body says ``wait`` (then awaits ``release``)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()
        self.calls: list[bytes] = []
        self.reading: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        body = envelope.content.strip()
        self.calls.append(body)
        self.reading.append(server.transport.is_reading())
        if body.startswith(b"wait"):
            self.waiting.set()
            await self.release.wait()
            self.reading.append(server.transport.is_reading())
        return "250 2.0.0 " + body.decode()


async def test_inline_and_awaiting_hooks_pipelined_keep_replies_in_order() -> None:
    handler = Mixed()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(
            transaction(b"one") + transaction(b"wait-two") + transaction(b"three") + b"NOOP\r\n"
        )
        await client.expect(REPLIES + b"250 2.0.0 one\r\n" + REPLIES)
        await asyncio.wait_for(handler.waiting.wait(), WAIT)
        # The third message is buffered, not handled, while the second one's hook waits.
        assert handler.calls == [b"one", b"wait-two"]

        async def release() -> None:
            handler.release.set()

        await asyncio.create_task(release())
        await client.expect(b"250 2.0.0 wait-two\r\n" + REPLIES + b"250 2.0.0 three\r\n250 2.0.0 OK\r\n")
        await client.close()
    assert handler.calls == [b"one", b"wait-two", b"three"]
    # A hook finishing inline runs inside the read (nothing can arrive meanwhile), so
    # reading is not paused for it ("one", and "wait-two" before its await); once a hook
    # suspends, reading is paused until its chain ("three" included) has finished.
    assert handler.reading == [True, True, False, False]


class Failing:
    """Raises before any await (``now``) or after a real suspension (``later``)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        body = envelope.content.strip()
        if body == b"now":
            raise RuntimeError("raised inline: secret-now")
        if body == b"later":
            await asyncio.sleep(0)
            raise RuntimeError("raised after awaiting: secret-later")
        return "250 2.0.0 fine"


async def test_hook_raising_inline_or_after_awaiting_gives_451(caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="fastsmtp.server")
    async with serve(Failing()) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(transaction(b"now") + transaction(b"later") + transaction(b"ok") + b"NOOP\r\n")
        await client.expect(
            REPLIES + ERROR_451 + REPLIES + ERROR_451 + REPLIES + b"250 2.0.0 fine\r\n250 2.0.0 OK\r\n"
        )
        await client.close()
    # Logged with their tracebacks for the operator, never sent to the client.
    assert "handle_DATA hook raised" in caplog.text
    assert "secret-now" in caplog.text and "secret-later" in caplog.text


class Parked:
    """``handle_DATA`` waits for ``release``; records how it ended."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()
        self.ended: list[str] = []
        self.closed = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.waiting.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        self.ended.append("returned")
        return "250 2.0.0 late"

    async def handle_CLOSE(self, server: Any, session: Any, envelope: Any) -> None:
        self.closed.set()


async def test_client_gone_while_hook_waits_lets_the_hook_finish() -> None:
    handler = Parked()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(transaction(b"x"))
        await client.expect(REPLIES)
        await asyncio.wait_for(handler.waiting.wait(), WAIT)
        await client.close()
        # Reading is paused while the hook waits: the hook is not cancelled, and the
        # close is seen (handle_CLOSE) once it has returned and reading resumed.
        assert not handler.closed.is_set()
        handler.release.set()
        await asyncio.wait_for(handler.closed.wait(), WAIT)
        assert handler.ended == ["returned"]
        # The server goes on serving.
        other = await greeted(server.port)
        assert await other.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await other.close()


async def test_closing_server_cancels_a_suspended_hook() -> None:
    handler = Parked()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(transaction(b"x"))
        await client.expect(REPLIES)
        await asyncio.wait_for(handler.waiting.wait(), WAIT)
        await server.close(timeout=0)
        await wait_until(lambda: handler.ended == ["cancelled"])
        await client.close()


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("eager_hook_var", default="unset")


class ContextUser:
    """Reads and sets ``VAR``; checks it runs inside a task, before and after awaiting."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.tasks: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        body = envelope.content.strip().decode()
        self.seen.append((body, VAR.get()))
        self.tasks.append(asyncio.current_task() is not None)
        VAR.set(body)
        if body.startswith("wait"):
            await asyncio.sleep(0)
            self.seen.append((body + " after await", VAR.get()))
            self.tasks.append(asyncio.current_task() is not None)
        return "250 2.0.0 OK"


async def test_contextvars_and_current_task_as_in_a_task() -> None:
    handler = ContextUser()
    token = VAR.set("server")
    try:
        async with serve(handler) as server:
            client = await greeted(server.port)
            await client.command(b"EHLO me")
            for body in (b"one", b"wait-two", b"three"):
                await client.send(transaction(body))
                await client.expect(REPLIES + b"250 2.0.0 OK\r\n")
            await client.close()
    finally:
        VAR.reset(token)
    # Each hook sees the server's context, never a value an earlier hook set, and keeps
    # its own value across its suspension.
    assert handler.seen == [
        ("one", "server"),
        ("wait-two", "server"),
        ("wait-two after await", "wait-two"),
        ("three", "server"),
    ]
    assert handler.tasks == [True, True, True, True]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_hook_using_asyncio_timeout_before_its_first_await() -> None:
    # asyncio.timeout() (and aiohttp's request timer) needs a current task from the first
    # line of the hook: running the coroutine eagerly must not take that away.
    class Timed:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            async with asyncio.timeout(WAIT):  # type: ignore[attr-defined]
                if envelope.content.strip() == b"wait":
                    await asyncio.sleep(0)
            return "250 2.0.0 timed"

    async with serve(Timed()) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(transaction(b"now") + transaction(b"wait"))
        await client.expect(REPLIES + b"250 2.0.0 timed\r\n" + REPLIES + b"250 2.0.0 timed\r\n")
        await client.close()
