"""Scripted SMTP peers: tiny asyncio servers on 127.0.0.1:0 that play exact bytes.

A script is a list of steps run in order for the first client that connects:

* ``Send(b"220 hi\\r\\n")`` writes bytes exactly (several replies may go in one step:
  that is how pipelined or injected bytes are sent);
* ``Expect(b"EHLO me\\r\\n")`` reads exactly that many bytes and records a mismatch;
* ``ExpectData()`` reads a DATA payload up to and including ``\\r\\n.\\r\\n``;
* ``StartTLS(ctx)`` upgrades the connection to TLS (server side);
* ``Sleep(seconds)`` pauses; ``Close()`` closes the connection; ``Reset()`` aborts it
  with a TCP RST (the client sees ``ECONNRESET``); ``Silence()`` keeps it open, reading
  and discarding, until the client goes away.

``ScriptedPeer(script, tls=ctx)`` speaks implicit TLS from the first byte;
``accept_after=seconds`` listens at once but accepts (and so answers the TLS handshake)
only that much later, like a slow server. ``peer.peername`` is the client's address.

After the script ends the peer waits for the client to close. ``peer.check()`` raises
``AssertionError`` with every mismatch; ``peer.received`` holds all bytes read and
``peer.data`` every DATA payload. Use it as ``async with ScriptedPeer([...]) as peer``;
leaving the block stops the server and its connection (bounded in time).

:func:`raw_server` runs any ``(reader, writer)`` coroutine as a server on a socket bound
to port 0 (for the few tests whose server reacts instead of playing a fixed script, e.g.
the pool's refusing or dead servers); :func:`reset` aborts a connection with a TCP RST.
Both are what :class:`ScriptedPeer` itself is built on, so every scripted server in the
suite listens, resets and shuts down the same way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .ports import listening_socket

__all__ = [
    "Send",
    "Expect",
    "ExpectData",
    "StartTLS",
    "Sleep",
    "Close",
    "Reset",
    "Silence",
    "ScriptedPeer",
    "RawServer",
    "greet",
    "raw_server",
    "reset",
]

#: Seconds a peer waits for bytes it expects before it gives up.
READ_TIMEOUT = 10.0


@dataclass
class Send:
    """Write these bytes."""

    data: bytes


@dataclass
class Expect:
    """Read exactly these bytes."""

    data: bytes


@dataclass
class ExpectData:
    """Read a DATA payload through its ``\\r\\n.\\r\\n`` terminator."""


@dataclass
class StartTLS:
    """Upgrade to TLS as the server."""

    context: ssl.SSLContext


@dataclass
class Sleep:
    """Pause the script."""

    seconds: float


@dataclass
class Close:
    """Close the connection."""


@dataclass
class Reset:
    """Abort the connection with a TCP RST (SO_LINGER 0)."""


@dataclass
class Silence:
    """Say nothing until the client closes (at most ``limit`` seconds)."""

    limit: float = 30.0


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0): the client sees ``ECONNRESET``."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """Serve ``handle`` on 127.0.0.1 (a socket bound to port 0); yield the port.

    The socket is bound before its number is known, so no other process can take the
    port between choosing and listening. Leaving the block stops the server (bounded).
    """
    server = await asyncio.start_server(handle, sock=listening_socket())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


class RawServer:
    """A raw asyncio server on a port-0 socket whose connection tasks are tracked.

    Subclasses implement ``_handle(reader, writer)``, run as one task per connection;
    leaving the ``async with`` block stops the server and cancels what still runs
    (bounded in time). ``port`` is the bound port.
    """

    #: StreamReader buffer limit of each connection.
    stream_limit = 1 << 16

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self):  # noqa: ANN204 - returns the subclass instance
        self._server = await asyncio.start_server(self._accept, sock=listening_socket(),
                                                  limit=self.stream_limit)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await asyncio.wait_for(self._server.wait_closed(), 5)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


def greet(ehlo: bytes = b"250 peer.test\r\n", name: bytes = b"client.test") -> list[object]:
    """The usual opening: greeting, the EHLO the client sends, and ``ehlo`` as the reply."""
    return [Send(b"220 peer.test ESMTP\r\n"), Expect(b"EHLO " + name + b"\r\n"), Send(ehlo)]


@dataclass
class ScriptedPeer:
    """A one-connection scripted server; see the module docstring."""

    script: list[object]
    tls: ssl.SSLContext | None = None
    accept_after: float = 0.0
    peername: tuple[str, int] | None = None
    received: bytearray = field(default_factory=bytearray)
    data: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    port: int = 0
    connections: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writer: asyncio.StreamWriter | None = None
    _starting: asyncio.Future[None] | None = None
    _sock: socket.socket | None = None

    async def __aenter__(self) -> ScriptedPeer:
        # Our own listening socket: the kernel completes TCP handshakes into its backlog
        # even while nothing accepts (accept_after).
        sock = self._sock = listening_socket()
        self.port = sock.getsockname()[1]
        if self.accept_after > 0:
            self._starting = asyncio.ensure_future(self._start(self.accept_after))
        else:
            await self._start(0)
        return self

    async def _start(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._server = await asyncio.start_server(
            self._handle, sock=self._sock, ssl=self.tls, limit=1 << 24
        )

    async def __aexit__(self, *exc: object) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is None:
            assert self._sock is not None
            self._sock.close()
            return
        self._server.close()
        if self._writer is not None:
            self._writer.transport.abort()
        try:
            await asyncio.wait_for(self.finished.wait(), 5)
        except asyncio.TimeoutError:
            pass
        await asyncio.wait_for(self._server.wait_closed(), 5)

    def check(self) -> None:
        """Raise AssertionError if the client did not send what the script expected."""
        assert not self.errors, "; ".join(self.errors)
        assert self.finished.is_set(), "the script did not finish"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections > 1:
            writer.transport.abort()
            self.errors.append("unexpected second connection")
            return
        self._writer = writer
        self.peername = writer.get_extra_info("peername")
        try:
            await self._play(reader, writer)
            # Wait for the client to close (bounded), recording anything else it sends.
            await self._drain_until_eof(reader, 30.0)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.TimeoutError:
            self.errors.append("timed out waiting for the client")
        finally:
            writer.transport.abort()
            self.finished.set()

    async def _drain_until_eof(self, reader: asyncio.StreamReader, limit: float) -> None:
        async def drain() -> None:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self.received += chunk

        await asyncio.wait_for(drain(), limit)

    async def _play(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for step in self.script:
            if isinstance(step, Send):
                writer.write(step.data)
                await writer.drain()
            elif isinstance(step, Expect):
                try:
                    got = await asyncio.wait_for(
                        reader.readexactly(len(step.data)), READ_TIMEOUT
                    )
                except asyncio.IncompleteReadError as exc:
                    got = exc.partial
                    self.received += got
                    self.errors.append(f"expected {step.data!r}, got {got!r} then EOF")
                    return
                self.received += got
                if got != step.data:
                    self.errors.append(f"expected {step.data!r}, got {got!r}")
                    return
            elif isinstance(step, ExpectData):
                got = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), READ_TIMEOUT)
                self.received += got
                self.data.append(got)
            elif isinstance(step, StartTLS):
                await writer.start_tls(step.context)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Close):
                writer.close()
                return
            elif isinstance(step, Reset):
                reset(writer)
                return
            elif isinstance(step, Silence):
                try:
                    await self._drain_until_eof(reader, step.limit)
                except asyncio.TimeoutError:
                    self.errors.append("the client never gave up on a silent server")
                return
            else:  # pragma: no cover - a bad script
                raise TypeError(f"unknown step {step!r}")
