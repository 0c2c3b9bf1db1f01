"""asyncio SMTP/LMTP server: :class:`SMTPServer`, its Protocol and a threaded runner.

The protocol logic lives in the sans-IO :mod:`fastsmtp._session`; this module only moves
bytes: ``data_received`` feeds the core's ``ServerReader``, hands every complete command
line (or DATA chunk) to the session, and writes all replies produced by one read in a
single ``transport.write`` (pipelined clients get one segment back, not one per command).

Handler protocol
----------------
The handler is any object; every hook is optional and may be a coroutine function or a
plain function. Hooks have aiosmtpd's names and arguments, so aiosmtpd handlers (``Sink``,
``Message``, ``AsyncMessage``, ``Debugging`` ...) work unchanged. ``server`` is the
per-connection protocol object (``server.hostname``, ``server.server``, ``server.transport``).

* ``handle_EHLO(server, session, envelope, hostname, responses) -> list[str]``
* ``handle_HELO(server, session, envelope, hostname) -> str``
* ``handle_MAIL(server, session, envelope, address, mail_options) -> str`` -- the seed's
  ``validateSender``: return ``"250 OK"`` after setting ``envelope.mail_from`` (and
  ``envelope.mail_options``), or a 4xx/5xx reply to refuse the sender.
* ``handle_RCPT(server, session, envelope, address, rcpt_options) -> str`` -- the seed's
  ``validateRecipient``: append to ``envelope.rcpt_tos`` and return ``"250 OK"``, or refuse.
* ``handle_DATA(server, session, envelope) -> str`` -- ``envelope.content`` holds the whole
  message (bytes). In LMTP mode it may return one reply per recipient (a list).
* ``handle_RSET``, ``handle_QUIT(server, session, envelope)``,
  ``handle_NOOP(server, session, envelope, arg)``, ``handle_VRFY(server, session, envelope,
  address)``.
* ``handle_CLOSE(server, session, envelope)`` -- the seed's ``close`` event: called once
  when a client connection has closed, whoever closed it (QUIT, timeout, the client going
  away, server shutdown), after ``data_abort`` for a message in progress. ``envelope`` is
  the transaction in progress (empty after a completed one). Its result is ignored; an
  exception (or running past ``handler_timeout``) is logged, never raised. fastsmtp's own
  name: aiosmtpd has no such hook.
* ``authenticator(server, session, envelope, mechanism, auth_data)`` -- the seed's
  ``authorizeUser``: returns an object with ``.success`` (aiosmtpd's ``AuthResult`` or
  :class:`fastsmtp._server_auth.AuthResult`) or a bool. ``auth_data`` is a
  ``LoginPassword`` (PLAIN, LOGIN), ``CramMD5Credentials`` (call ``verify(password)``) or
  ``XOAuth2Credentials``. It may be given as the ``authenticator`` option or as a handler
  attribute.
* Streaming (the seed's ``startData``/``data``/``dataReady``), used instead of
  ``handle_DATA`` when ``data_chunk`` and ``data_ready`` exist:
  ``start_data(session, envelope)`` (optional; may return a 4xx/5xx to refuse),
  ``data_chunk(session, envelope, chunk)`` for every chunk as it is read (reading pauses
  while it is awaited), ``data_ready(session, envelope) -> str`` for the final reply, and
  ``data_abort(session, envelope)`` (optional) when the message is refused or the client
  went away.

A hook returning ``None`` gets the default handling. A hook that raises or runs longer
than ``handler_timeout`` makes the command fail with 451 (the exception is logged, never
sent). The reply to the final dot is sent only after the handler returned. A reply a hook
returns must be *one* reply: every line with the same 2xx-5xx code and no control
character; the separators are rewritten (``code-`` on all lines but the last), and any
other reply is logged and answered with 451 instead (never sent).

simplesmtp's server options
---------------------------
``name`` -> ``name``; ``debug`` -> ``debug``; ``timeout`` (ms) -> ``timeout`` (seconds);
``secureConnection`` -> ``secure``; ``credentials`` (``{"key", "cert", "ca"}``, PEM text
or file paths) -> ``credentials`` too, used for implicit TLS with ``secure=True`` and
offered through STARTTLS otherwise, as simplesmtp did (or pass your own
``ssl.SSLContext`` as ``ssl_context`` / ``tls_context``); ``SMTPBanner`` -> ``banner``;
``requireAuthentication`` / ``enableAuthentication`` -> ``require_auth`` / ``enable_auth``
(AUTH only over TLS unless ``auth_require_tls=False``); ``validateSender`` /
``validateRecipients`` -> the ``handle_MAIL`` / ``handle_RCPT`` hooks; ``maxSize`` ->
``max_size`` (enforced, not only advertised); ``authMethods`` -> ``auth_methods``;
``disableEHLO`` -> ``disable_ehlo``. Events: ``startData``/``data``/``dataReady`` ->
``start_data``/``data_chunk``/``data_ready`` (which returns the whole reply, e.g.
``"250 2.0.0 OK: queued as ABC1"``, not only the queue id), ``authorizeUser`` ->
``authenticator``, ``close`` -> ``handle_CLOSE``.

Traffic log
-----------
``debug=True`` (the seed's ``debug`` option) logs every connection, command line and reply
at DEBUG on the ``fastsmtp.server`` logger (enable it, e.g. ``logging.basicConfig(level=
logging.DEBUG)``). AUTH arguments and SASL responses are masked, and message data is
logged as its size only. Without ``debug`` nothing of the traffic is logged: addresses are
personal data.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from ._codec import ServerReader
from ._loop import new_event_loop
from ._server_tls import context_from_credentials, make_server_ssl_context
from ._session import (
    ACT_CLOSE,
    ACT_DATA,
    ACT_STARTTLS,
    DEFAULT_MAX_SIZE,
    Envelope,
    HookCall,
    ServerConfig,
    ServerSession,
    Session,
)

__all__ = [
    "SMTPServer",
    "SMTPServerProtocol",
    "SMTPServerThread",
    "Session",
    "Envelope",
    "make_server_ssl_context",
]

log = logging.getLogger("fastsmtp.server")

#: Default most simultaneous connections; more get 421 at once.
DEFAULT_MAX_CLIENTS = 1000
#: Default most recipients per message (RFC 5321 section 4.5.3.1.8 requires >= 100).
DEFAULT_MAX_RECIPIENTS = 1000
#: Default seconds a handler hook may run before the command fails with 451.
DEFAULT_HANDLER_TIMEOUT = 300.0
#: Default seconds ``close()`` lets sessions finish their transaction.
DEFAULT_CLOSE_TIMEOUT = 30.0

#: Replies gathered before a write, so that a paused transport stops processing early.
_FLUSH_REPLIES = 64
_PENDING = object()  # a hook is being awaited; processing continues when it returns
_CoroutineType = types.CoroutineType


def _ssl_info(transport: asyncio.BaseTransport) -> dict[str, Any]:
    ssl_object = transport.get_extra_info("ssl_object")
    return {
        "cipher": transport.get_extra_info("cipher"),
        "peercert": transport.get_extra_info("peercert"),
        "ssl_object": ssl_object,
        "version": ssl_object.version() if ssl_object is not None else None,
    }


def _is_awaitable(obj: Any) -> bool:
    return type(obj) is _CoroutineType or hasattr(obj, "__await__")


class SMTPServerProtocol(asyncio.Protocol):
    """One client connection (the ``server`` argument of handler hooks).

    Attributes:
        server: The :class:`SMTPServer`.
        transport: The connection's transport (replaced by the TLS one after STARTTLS).
        loop: The event loop.
    """

    def __init__(self, server: SMTPServer) -> None:
        self.server = server
        loop = server._loop
        # The listener builds protocols only after start() has set the loop.
        assert loop is not None, "SMTPServerProtocol needs a started SMTPServer"
        self.loop: asyncio.AbstractEventLoop = loop
        self._config = server._config
        self.transport: Any = None
        self._sm: ServerSession | None = None
        self._reader = ServerReader()
        self._busy = False  # a hook (or the TLS handshake) is in flight; lines wait
        self._closed = False
        self._lost = False  # connection_lost has run
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._cmd_deadline = 0.0
        self._data_deadline = 0.0
        self._last_rx = 0.0
        # Checked once per connection: the per-line path pays one attribute test.
        self._debug = server._debug and log.isEnabledFor(logging.DEBUG)

    # aiosmtpd handlers sometimes read these from the server object.
    @property
    def hostname(self) -> str:
        """The server name (greeting, EHLO)."""
        return self._config.name

    @property
    def session(self) -> Session | None:
        """The current :class:`Session` (a new one after STARTTLS)."""
        return self._sm.session if self._sm is not None else None

    @property
    def envelope(self) -> Envelope | None:
        """The current transaction's :class:`Envelope`."""
        return self._sm.envelope if self._sm is not None else None

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport
        server = self.server
        config = self._config
        if server._max_clients and len(server._connections) >= server._max_clients:
            log.warning("too many connections (%d); refusing one", len(server._connections))
            self._closed = True
            self._write(config.r_busy.encode("utf-8"))
            transport.close()
            return
        server._connections.add(self)
        peer = transport.get_extra_info("peername")
        sm = self._sm = ServerSession(config, peer, config.secure, self.loop)
        if self._debug:
            log.debug("%r connected%s", peer, " (TLS)" if config.secure else "")
        if config.secure:
            sm.session.ssl = _ssl_info(transport)
        if server._closing:
            sm.shutdown()
            self._closed = True
            self._write(config.r_closing.encode("utf-8"))
            transport.close()
            return
        self._write(sm.greeting())
        now = self.loop.time()
        self._cmd_deadline = now + config.timeout
        self._timer = self.loop.call_at(self._cmd_deadline, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._closed = True
        self._lost = True
        self.server._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sm = self._sm
        if sm is None:
            return
        if self._debug:
            log.debug("%r closed%s", sm.session.peer, f" ({exc})" if exc else "")
        # A message in progress is dropped: its handler is told, never asked to accept it;
        # then the seed's close event.
        self._run_detached(sm.connection_lost(), sm.closed())

    def pause_writing(self) -> None:  # noqa: D102
        # A client that pipelines without reading our replies must not grow our buffer.
        self._write_paused = True
        if not self._closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._write_paused = False
        if not self._closed and not self._busy:
            self.transport.resume_reading()
            # Lines left in the reader when _process stopped at the high-water mark; not
            # run from inside the transport's write path.
            if self._reader.buffered:
                self.loop.call_soon(self._resume_processing)

    def _resume_processing(self) -> None:
        if not self._closed and not self._busy and not self._write_paused:
            self._process()

    def eof_received(self) -> bool | None:  # noqa: D102
        return None  # close our side too

    # -- input --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self._closed:
            return
        self._reader.feed(data)
        if self._busy:
            return
        self._last_rx = self.loop.time()
        self._process()

    def _process(self, out: list[bytes] | None = None) -> None:
        """Handle every complete line/chunk buffered; write all replies in one write."""
        reader = self._reader
        sm = self._sm
        assert sm is not None
        if out is None:
            out = []
        lines = 0
        while True:
            if reader.in_data:
                item = reader.next_data()
                if item is None:
                    break
                if self._debug:
                    log.debug("%r >> <%d bytes of message data>", sm.session.peer, len(item[0]))
                r = sm.data_received(item[0], item[1])
            else:
                item = reader.next_line()
                if item is None:
                    break
                lines += 1
                if self._debug:
                    self._log_line(sm, item[1])
                r = sm.receive_line(item[0], item[1])
            if r is None:
                pass
            elif r.__class__ is bytes:
                out.append(r)
            else:
                # Not bytes, so a HookCall; the exact-class test (cheaper than isinstance on
                # this per-line path) narrows only its true branch for mypy.
                r = self._invoke(r)  # type: ignore[arg-type]
                if r is _PENDING:
                    self._flush(out)
                    return
                if r is not None:
                    out.append(r)
            if sm.action and not self._act(out):
                return
            if len(out) >= _FLUSH_REPLIES:
                # Replies can be 14 times their command's size (HELP, EHLO): answering a
                # whole 256 KiB read at once would buffer megabytes for a client that does
                # not read them. Write in batches; at the high-water mark the rest waits
                # in the reader (reading is paused) until resume_writing.
                self._flush(out)
                if self._write_paused:
                    break
        self._flush(out)
        if lines and not reader.in_data:
            self._cmd_deadline = self.loop.time() + self._config.timeout

    def _log_line(self, sm: ServerSession, line: bytes) -> None:
        log.debug("%r >> %r", sm.session.peer, sm.loggable(line))

    def _write(self, data: bytes) -> None:
        """Write replies (logged with ``debug``)."""
        self.transport.write(data)
        if self._debug:
            peer = self._sm.session.peer if self._sm is not None else None
            log.debug("%r << %r", peer, data)

    def _flush(self, out: list[bytes]) -> None:
        if out and not self._closed:
            self._write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _act(self, out: list[bytes]) -> bool:
        """Carry out the session's ``action``; False when processing must stop."""
        sm = self._sm
        assert sm is not None
        action = sm.action
        sm.action = 0
        if action == ACT_DATA:
            self._reader.start_data(self._config.max_size)
            now = self.loop.time()
            self._data_deadline = now + self._config.data_timeout
            self._last_rx = now
            timer = self._timer
            if timer is not None and self._data_deadline < timer.when():
                # The only deadline that can come before the armed one (data_timeout
                # shorter than timeout): re-arm once.
                timer.cancel()
                self._timer = self.loop.call_at(self._data_deadline, self._on_timer)
            return True
        self._flush(out)
        if action == ACT_CLOSE:
            self._close()
            return False
        if action == ACT_STARTTLS:
            # Pipelined plaintext after STARTTLS must never be read as if it came over TLS
            # (CVE-2011-0411): stop reading now and drop what is buffered.
            self.transport.pause_reading()
            dropped = self._reader.clear()
            if dropped:
                log.warning("%r: %d bytes pipelined after STARTTLS discarded", sm.session.peer, dropped)
            self._busy = True
            self._spawn(self._starttls())
            return False
        return True  # pragma: no cover - no other actions

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.transport.close()
        if self.transport.get_write_buffer_size():
            # close() waits until the buffer is flushed: a client that never reads its
            # last replies would keep the connection, its buffer and a max_clients slot
            # for ever. It gets one more timeout to read them, then the connection is cut.
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(self._config.timeout, self._abort)

    # -- hooks --------------------------------------------------------------------------

    def _invoke(self, call: HookCall) -> Any:
        """Run a chain of hook calls synchronously as long as the hooks are synchronous.

        Returns the final reply (bytes or None), or ``_PENDING`` when a hook returned an
        awaitable: reading is paused and a task finishes the chain.
        """
        while True:
            try:
                result = call.func(self, *call.args) if call.server_arg else call.func(*call.args)
            except Exception:
                log.exception("%s hook raised; answering 451", call.name)
                r = call.fail()
            else:
                if _is_awaitable(result):
                    self._busy = True
                    if not self._closed:
                        self.transport.pause_reading()
                    self._spawn(self._await_hook(call, result))
                    return _PENDING
                r = call.finish(result)
            if r.__class__ is not HookCall:
                return r
            call = r

    async def _await_hook(self, call: HookCall, awaitable: Any) -> None:
        timeout = self.server._handler_timeout
        while True:
            try:
                if timeout:
                    result = await asyncio.wait_for(awaitable, timeout)
                else:
                    result = await awaitable
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                log.error("%s hook exceeded handler_timeout (%ss); answering 451", call.name, timeout)
                r = call.fail()
            except Exception:
                log.exception("%s hook raised; answering 451", call.name)
                r = call.fail()
            else:
                r = call.finish(result)
            # Continue the chain; a further async hook is awaited in this same task.
            while r.__class__ is HookCall:
                call = r
                try:
                    result = call.func(self, *call.args) if call.server_arg else call.func(*call.args)
                except Exception:
                    log.exception("%s hook raised; answering 451", call.name)
                    r = call.fail()
                    continue
                if _is_awaitable(result):
                    awaitable = result
                    break
                r = call.finish(result)
            else:
                break
        self._hook_done(r)

    def _hook_done(self, r: bytes | None) -> None:
        self._busy = False
        if self._closed:
            return
        out: list[bytes] = [r] if r else []
        sm = self._sm
        assert sm is not None
        if sm.action and not self._act(out):
            return
        self._cmd_deadline = self.loop.time() + self._config.timeout
        self._process(out)
        if not self._busy and not self._closed and not self._write_paused:
            self.transport.resume_reading()

    def _run_detached(self, *calls: HookCall | None) -> None:
        """Run hooks whose replies nobody waits for (``data_abort``, ``handle_CLOSE``).

        They run in the order given; once one turns out to be async, it and the rest run
        in one task, so a close hook never runs before the abort it follows.
        """
        pending = [call for call in calls if call is not None]
        while pending:
            waiter = self._invoke_quiet(pending.pop(0))
            if waiter is not None:
                self._spawn(self._detached_rest(waiter, pending))
                return

    async def _detached_rest(self, waiter: Any, calls: list[HookCall]) -> None:
        await waiter
        for call in calls:
            waiter = self._invoke_quiet(call)
            if waiter is not None:
                await waiter

    def _invoke_quiet(self, call: HookCall) -> Any:
        try:
            result = call.func(self, *call.args) if call.server_arg else call.func(*call.args)
        except Exception:
            log.exception("%s hook raised", call.name)
            return None
        if not _is_awaitable(result):
            return None

        async def wait() -> None:
            try:
                await asyncio.wait_for(result, self.server._handler_timeout or None)
            except Exception:
                log.exception("%s hook failed", call.name)

        return wait()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        tasks = self.server._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # -- STARTTLS -----------------------------------------------------------------------

    async def _starttls(self) -> None:
        sm = self._sm
        assert sm is not None
        context = self.server._tls_context
        assert context is not None
        try:
            transport = await self.loop.start_tls(
                self.transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._config.timeout,
            )
        except Exception as exc:
            log.info("%r STARTTLS handshake failed: %s", sm.session.peer, exc)
            self._closed = True
            self.transport.abort()
            return
        if transport is None or self._closed:
            return
        self.transport = transport
        # Everything said before TLS is forgotten (RFC 3207 section 4.2). Bytes in the
        # reader now can only have come through TLS: the plaintext ones were dropped.
        sm.tls_started(_ssl_info(transport))
        self._hook_done(None)

    # -- time limits ----------------------------------------------------------------------

    def _on_timer(self) -> None:
        # One timer per connection, re-armed only when it fires: moving a deadline is a
        # float store, so the per-command path never touches the loop's timer heap.
        self._timer = None
        if self._closed:
            return
        now = self.loop.time()
        timeout = self._config.timeout
        if self._busy:
            due = now + timeout  # waiting for our hook, not for the client
        elif self._reader.in_data:
            due = min(self._data_deadline, self._last_rx + timeout)
        else:
            due = self._cmd_deadline
        if now < due:
            self._timer = self.loop.call_at(due, self._on_timer)
            return
        sm = self._sm
        assert sm is not None
        log.info("%r timed out", sm.session.peer)
        abort = sm.connection_lost() if self._reader.in_data else None
        self._write(sm.timed_out())
        self._close()
        if abort is not None:
            self._run_detached(abort)

    # -- server shutdown ------------------------------------------------------------------

    def _shutdown(self) -> None:
        sm = self._sm
        if sm is None or self._closed:
            return
        if self._busy or self._reader.in_data:
            sm.closing = True  # finishes its transaction; the next command gets 421
            return
        reply = sm.shutdown()
        if reply is not None:
            self._write(reply)
            self._close()

    def _abort(self) -> None:
        # Also after _close(): a transport still flushing is cut all the same.
        self._closed = True
        if not self._lost:
            self.transport.abort()


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


class SMTPServerThread:
    """Run an :class:`SMTPServer` on its own loop in a thread (like aiosmtpd's Controller).

    ``start()`` returns once the server listens; ``stop()`` closes it and joins the
    thread. Usable as a context manager. Arguments are those of :class:`SMTPServer`.

    Args:
        handler: The handler object.
        host: Address to listen on.
        port: Port (0 picks a free one; read :attr:`port` after ``start()``).
        use_uvloop: Use uvloop (default: when installed).
        ready_timeout: Seconds ``start()`` waits for the server to listen.
        **options: Further :class:`SMTPServer` options.
    """

    def __init__(
        self,
        handler: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        use_uvloop: bool | None = None,
        ready_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self._use_uvloop = use_uvloop
        self._ready_timeout = ready_timeout
        self._options = options
        self.server: SMTPServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port once started."""
        return self.server.port if self.server is not None else self._port

    @property
    def hostname(self) -> str:
        """The address the server listens on (for clients)."""
        return self.host

    def _run(self) -> None:
        loop = self.loop = new_event_loop(self._use_uvloop)
        asyncio.set_event_loop(loop)
        try:
            self.server = SMTPServer(self.handler, self.host, self._port, **self._options)
            loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> None:
        """Start the thread and wait until the server listens (raises its error)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="fastsmtp-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._ready_timeout):
            raise TimeoutError("SMTP server thread did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self, timeout: float | None = None) -> None:
        """Close the server gracefully and join the thread."""
        thread, loop, server = self._thread, self.loop, self.server
        if thread is None or loop is None or server is None:
            return

        async def shutdown() -> None:
            try:
                await server.close(timeout)
            finally:
                loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join()
        self._thread = None

    def __enter__(self) -> SMTPServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
