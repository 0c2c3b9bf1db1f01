"""Tiny local proxies for the client's ``proxy=`` tests, on 127.0.0.1, port 0.

* :class:`HTTPConnectProxy`: answers ``CONNECT host:port`` (optionally demanding Basic
  credentials, 407 otherwise), then relays bytes both ways;
* :class:`Socks5Proxy`: RFC 1928 with the RFC 1929 username/password method (or no
  authentication), CONNECT only, IPv4 and domain-name targets.

Each records the targets it was asked for (``targets``) and the credentials it saw
(``credentials``), so a test proves its traffic went through the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .peer import raw_server

__all__ = ["HTTPConnectProxy", "Socks5Proxy", "http_proxy", "socks5_proxy"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
    upstream_r: asyncio.StreamReader, upstream_w: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))


@dataclass
class HTTPConnectProxy:
    """State of a running HTTP CONNECT proxy (see :func:`http_proxy`)."""

    user: str | None = None
    password: str | None = None
    port: int = 0
    targets: list[str] = field(default_factory=list)
    credentials: list[str | None] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        self.requests.append(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        self.targets.append(target)
        auth = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                kind, _, token = value.strip().partition(" ")
                auth = base64.b64decode(token).decode() if kind == "Basic" else value
        self.credentials.append(auth)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        if self.user is not None and auth != f"{self.user}:{self.password}":
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        host, _, port = target.rpartition(":")
        up_r, up_w = await asyncio.open_connection(host.strip("[]"), int(port))
        # The 200 and whatever the server says first in one write: the client must not
        # read past the head.
        greeting = await up_r.read(65536)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n" + greeting)
        await writer.drain()
        await _relay(reader, writer, up_r, up_w)


@dataclass
class Socks5Proxy:
    """State of a running SOCKS5 proxy (see :func:`socks5_proxy`)."""

    user: str | None = None
    password: str | None = None
    port: int = 0
    targets: list[str] = field(default_factory=list)
    credentials: list[tuple[str, str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._serve(reader, writer), 10)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        assert version == 5
        wanted = 0x02 if self.user is not None else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")
            writer.close()
            return
        writer.write(bytes([5, wanted]))
        if wanted == 0x02:
            sub, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            self.credentials.append((user, password))
            ok = sub == 1 and user == self.user and password == self.password
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                await writer.drain()
                writer.close()
                return
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.targets.append(f"{host}:{port}")
        if cmd != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1" if host == "mail.test" else host,
                                                       port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            writer.close()
            return
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 0))
        await writer.drain()
        await _relay(reader, writer, up_r, up_w)


@contextlib.asynccontextmanager
async def http_proxy(user: str | None = None, password: str | None = None
                     ) -> AsyncIterator[HTTPConnectProxy]:
    """Run an :class:`HTTPConnectProxy` for the block."""
    proxy = HTTPConnectProxy(user, password)
    async with raw_server(proxy.handle) as port:
        proxy.port = port
        yield proxy


@contextlib.asynccontextmanager
async def socks5_proxy(user: str | None = None, password: str | None = None
                       ) -> AsyncIterator[Socks5Proxy]:
    """Run a :class:`Socks5Proxy` for the block (``mail.test`` resolves to 127.0.0.1)."""
    proxy = Socks5Proxy(user, password)
    async with raw_server(proxy.handle) as port:
        proxy.port = port
        yield proxy
