"""The listening server: :class:`SMTPServer`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .config import (
    ServerConfig,
)
from .protocol import SMTPServerProtocol

__all__ = ["SMTPServer"]

log = logging.getLogger("fastsmtp.server")


class SMTPServer:
    """An SMTP (or LMTP) server on an asyncio loop; see the module docstring for handlers.

    Args:
        handler: The handler object (aiosmtpd-style hooks, all optional).
        host: Address to listen on (default ``127.0.0.1``).
        port: Port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        **options: The server options (``name``, ``banner``, ``timeout``, ``secure``,
            ``credentials``, ``require_auth``, ``max_size``, ``max_clients``, ``lmtp``,
            ``debug`` ...), each declared and documented once, in
            :class:`~fastsmtp.server.ServerConfig`.

    Memory: command lines, pipelined input (reading pauses while a hook runs or the
    client does not read its replies) and the reply cache are bounded; a message is
    bounded by ``max_size`` unless the handler streams it or has no ``handle_DATA``.

    Raises:
        ValueError: An option is invalid (see :class:`~fastsmtp.server.ServerConfig`).
        TypeError: An unknown option.
    """

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        config = self._config = ServerConfig(handler, **options)
        self._ssl_context = config.ssl_context
        self._tls_context = config.tls_context
        self._max_clients = config.max_clients
        self._handler_timeout = config.handler_timeout
        self._close_timeout = config.close_timeout
        self._reuse_port = config.reuse_port
        self._debug = config.debug
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[SMTPServerProtocol] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def hostname(self) -> str:
        """The server name used in the greeting and EHLO."""
        return self._config.name

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; the requested one before)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def connections(self) -> int:
        """Number of open client connections."""
        return len(self._connections)

    async def start(self) -> None:
        """Start listening (returns once the socket is bound)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._server = await self._loop.create_server(
            lambda: SMTPServerProtocol(self),
            self.host,
            self._port,
            ssl=self._ssl_context,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            backlog=1024,
        )
        log.info("SMTP server listening on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled; then close gracefully."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, let transactions finish, then close every connection.

        Idle sessions get 421 at once; a session inside a transaction (or a running
        hook) may finish it within ``timeout`` (default ``close_timeout``) and gets 421
        on its next command; whatever is left after that is aborted.
        """
        if self._server is None:
            return
        self._closing = True
        server, self._server = self._server, None
        server.close()
        for conn in list(self._connections):
            conn._shutdown()
        grace = self._close_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
            for conn in list(self._connections):
                conn._shutdown()
        for conn in list(self._connections):
            conn._abort()
        # Aborted transports report connection_lost on a later loop iteration; the
        # data_abort and handle_CLOSE tasks it starts must be among those waited for.
        settle = loop.time() + 1.0
        while self._connections and loop.time() < settle:
            await asyncio.sleep(0.005)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.1, deadline - loop.time()))
        for task in list(self._tasks):
            task.cancel()
        await server.wait_closed()
        log.info("SMTP server closed")

    async def __aenter__(self) -> SMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

