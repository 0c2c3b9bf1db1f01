"""The listening server: :class:`SMTPServer`."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from .config import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_SIZE,
    ServerConfig,
)
from .protocol import SMTPServerProtocol
from .tls import context_from_credentials

__all__ = ["SMTPServer"]

log = logging.getLogger("fastsmtp.server")


class SMTPServer:
    """An SMTP (or LMTP) server on an asyncio loop; see the module docstring for handlers.

    Args:
        handler: The handler object (aiosmtpd-style hooks, all optional).
        host: Address to listen on (default ``127.0.0.1``).
        port: Port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        name: Server host name (default: ``socket.gethostname()``); no spaces and no
            control characters (ValueError).
        banner: Greeting text after the name (the seed's ``SMTPBanner``); no control
            characters (ValueError): it must not end the greeting early.
        timeout: Seconds per command line (total, so trickling clients are cut off too)
            and longest silence during DATA (default 60, the seed's).
        data_timeout: Seconds one message's DATA may take in total (default 600).
        secure: Implicit TLS on connect (SMTPS); needs ``ssl_context`` or ``credentials``.
        ssl_context: Server ``ssl.SSLContext`` for ``secure=True``.
        tls_context: Server ``ssl.SSLContext`` offered through STARTTLS.
        credentials: simplesmtp's TLS credentials, a mapping with ``cert`` and ``key``
            (PEM text or file paths), optional ``ca`` (verify client certificates) and
            ``password`` (of an encrypted key); see :func:`make_server_ssl_context`. It
            stands for ``ssl_context`` with ``secure=True`` and for ``tls_context``
            (STARTTLS) otherwise.
        require_tls: Refuse MAIL/RCPT/DATA/AUTH before TLS (530).
        enable_auth: Offer AUTH.
        require_auth: Require AUTH before MAIL (530); implies ``enable_auth``.
        auth_methods: Mechanisms to offer (PLAIN, LOGIN, CRAM-MD5, XOAUTH2).
        auth_require_tls: Offer and accept AUTH only over TLS (default True).
        authenticator: The authenticator callable (else ``handler.authenticator``).
        max_size: Largest message in bytes, advertised in SIZE and enforced (552)
            while it arrives (default 32 MiB). 0 means no limit, and then memory is
            bounded only for streaming handlers (``data_chunk``/``data_ready``) and
            handlers without ``handle_DATA``: a buffering ``handle_DATA`` gets
            ``envelope.content`` whole, so one message of any size is held in memory.
        max_clients: Most simultaneous connections (421 beyond it); 0 for no limit.
        max_recipients: Most recipients per message (452 beyond it); 0 for no limit.
        disable_ehlo: Support HELO only.
        hidden_commands: Commands not listed by HELP.
        disabled_commands: Commands answered with 502.
        lmtp: Speak LMTP (RFC 2033).
        bare_newline: ``"normalize"`` (default) or ``"reject"`` bare CR/LF.
        handler_timeout: Seconds a hook may run (451 beyond it); None for no limit.
        close_timeout: Seconds :meth:`close` grants sessions in a transaction.
        smtputf8: Offer SMTPUTF8 (default True).
        reuse_port: Set SO_REUSEPORT on the listening socket.
        debug: Log connections, commands and replies at DEBUG on ``fastsmtp.server``
            (the seed's ``debug``), with AUTH data masked; see the module docstring.

    Memory: command lines, pipelined input (reading pauses while a hook runs or the
    client does not read its replies) and the reply cache are bounded; a message is
    bounded by ``max_size`` unless the handler streams it or has no ``handle_DATA``.

    Raises:
        ValueError: An option is invalid (``secure`` without ``ssl_context``,
            ``credentials`` beside the context they stand for, unknown credentials keys, a
            name or
            banner with control characters, a negative limit ...).
    """

    def __init__(
        self,
        handler: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        banner: str | None = None,
        timeout: float = 60.0,
        data_timeout: float = 600.0,
        secure: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        tls_context: ssl.SSLContext | None = None,
        credentials: Mapping[str, Any] | None = None,
        require_tls: bool = False,
        enable_auth: bool = False,
        require_auth: bool = False,
        auth_methods: tuple[str, ...] | list[str] = ("PLAIN", "LOGIN"),
        auth_require_tls: bool = True,
        authenticator: Callable[..., Any] | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        disable_ehlo: bool = False,
        hidden_commands: tuple[str, ...] | list[str] = (),
        disabled_commands: tuple[str, ...] | list[str] = (),
        lmtp: bool = False,
        bare_newline: str = "normalize",
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        smtputf8: bool = True,
        reuse_port: bool = False,
        debug: bool = False,
    ) -> None:
        if credentials is not None:
            if (ssl_context if secure else tls_context) is not None:
                slot = "ssl_context" if secure else "tls_context"
                raise ValueError(f"give credentials or {slot}, not both")
            context = context_from_credentials(credentials)
            if secure:
                ssl_context = context
            else:
                tls_context = context
        if secure and ssl_context is None:
            raise ValueError("secure=True needs an ssl_context or credentials")
        if max_clients < 0:
            raise ValueError("max_clients must be >= 0")
        self.handler = handler
        self.host = host
        self._port = port
        self._ssl_context = ssl_context if secure else None
        self._tls_context = tls_context
        self._config = ServerConfig(
            handler,
            name=name or socket.gethostname() or "localhost",
            banner=banner,
            timeout=timeout,
            data_timeout=data_timeout,
            secure=secure,
            tls_available=tls_context is not None and not secure,
            require_tls=require_tls,
            enable_auth=enable_auth,
            require_auth=require_auth,
            auth_methods=auth_methods,
            auth_require_tls=auth_require_tls,
            authenticator=authenticator,
            max_size=max_size,
            max_recipients=max_recipients,
            disable_ehlo=disable_ehlo,
            hidden_commands=hidden_commands,
            disabled_commands=disabled_commands,
            lmtp=lmtp,
            bare_newline=bare_newline,
            smtputf8=smtputf8,
        )
        self._max_clients = max_clients
        self._handler_timeout = handler_timeout
        self._close_timeout = close_timeout
        self._reuse_port = reuse_port
        self._debug = debug
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

