"""Our own server for a test, a recording handler, and a scripted raw client.

* :func:`serve` runs an :class:`~fastsmtp.server.SMTPServer` on 127.0.0.1, port 0;
* :class:`Recorder` is a handler recording every message;
* :class:`RawClient` (and :func:`greeted`) speaks exact bytes to it;
* ``WAIT`` and :func:`wait_until` (from :mod:`support.wait`) for the server tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

from fastsmtp.server import SMTPServer

from .wait import WAIT, wait_until

__all__ = ["WAIT", "RawClient", "Recorder", "greeted", "serve", "wait_until"]


class Recorder:
    """A handler that records every message (aiosmtpd's ``handle_DATA`` signature)."""

    def __init__(self, reply: str = "250 2.0.0 OK: queued") -> None:
        self.messages: list[tuple[str | None, list[str], bytes]] = []
        self.envelopes: list[Any] = []
        self.reply = reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.envelopes.append(envelope)
        return self.reply


@contextlib.asynccontextmanager
async def serve(handler: Any = None, **options: Any) -> AsyncIterator[SMTPServer]:
    """Run an :class:`SMTPServer` on 127.0.0.1, port 0, for the duration of a test."""
    options.setdefault("name", "test.local")
    server = SMTPServer(handler if handler is not None else Recorder(), **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close(timeout=1.0)


class RawClient:
    """A scripted client checking exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ssl_context), WAIT
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def expect(self, expected: bytes) -> None:
        """Read exactly ``len(expected)`` bytes and compare them with ``expected``."""
        got = await asyncio.wait_for(self.reader.readexactly(len(expected)), WAIT)
        assert got == expected

    async def reply(self) -> bytes:
        """Read one complete (possibly multi-line) reply."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), WAIT)
            assert line.endswith(b"\r\n"), line
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def command(self, line: bytes) -> bytes:
        await self.send(line + b"\r\n")
        return await self.reply()

    async def eof(self) -> bytes:
        """Read until the server closes; return what came before.

        A write of ours that raced the server's close may have failed the stream with
        a broken pipe; what the server sent before closing is still in the buffer then.
        """
        try:
            return await asyncio.wait_for(self.reader.read(), WAIT)
        except (BrokenPipeError, ConnectionResetError):
            return bytes(self.reader._buffer)  # type: ignore[attr-defined]

    async def start_tls(self, context: ssl.SSLContext) -> None:
        await asyncio.wait_for(self.writer.start_tls(context, server_hostname="localhost"), WAIT)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)


async def greeted(port: int, ssl_context: ssl.SSLContext | None = None) -> RawClient:
    """Connect and consume the greeting (asserting it is a 220)."""
    client = await RawClient.connect(port, ssl_context)
    greeting = await client.reply()
    assert greeting.startswith(b"220 test.local "), greeting
    return client

