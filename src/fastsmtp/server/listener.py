"""The listening server: :class:`SMTPServer`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .config import ServerConfig
from .protocol import SMTPServerProtocol
from .state import ServerState

__all__ = ["SMTPServer"]

log = logging.getLogger("fastsmtp.server")

#: Seconds ``close()`` waits for aborted connections to report that they are gone.
_ABORT_SETTLE = 1.0


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set, at most ``timeout`` seconds."""
    if event.is_set():
        return
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass


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
        self._config = ServerConfig(handler, **options)
        self._state = ServerState(self._config)
        # The same set as the state's (tests and debugging read it here).
        self._connections: set[SMTPServerProtocol] = self._state.connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def state(self) -> ServerState:
        """What this server's connections share (each :class:`SMTPServerProtocol` gets it)."""
        return self._state

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
        loop = self._loop = asyncio.get_running_loop()
        state = self._state
        state.open()
        config = self._config
        self._server = await loop.create_server(
            lambda: SMTPServerProtocol(self, state),
            self.host,
            self._port,
            ssl=config.ssl_context,
            reuse_address=True,
            reuse_port=config.reuse_port or None,
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
        as soon as it is idle; whatever is left after that is aborted.
        """
        if self._server is None:
            return
        state = self._state
        state.closing = True
        server, self._server = self._server, None
        server.close()
        for conn in list(state.connections):
            conn.shutdown()
        grace = self._config.close_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Each session closes itself once its transaction is over; the last one sets idle.
        await _wait(state.idle, grace)
        for conn in list(state.connections):
            conn.abort()
        # Aborted transports report connection_lost on a later loop iteration; the
        # data_abort and handle_CLOSE tasks it starts must be among those waited for.
        await _wait(state.idle, _ABORT_SETTLE)
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=max(0.1, deadline - loop.time()))
        for task in list(state.tasks):
            task.cancel()
        await server.wait_closed()
        log.info("SMTP server closed")

    async def __aenter__(self) -> SMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

