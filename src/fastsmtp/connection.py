"""SMTPConnection: one asyncio SMTP (or LMTP) client connection.

Theory of operation
-------------------
``connect()`` opens TCP (or TLS with ``secure``), reads the greeting, sends EHLO (HELO when
EHLO is refused with 5xx), upgrades with STARTTLS when offered, and sends EHLO again: the
capabilities used afterwards only ever come from the EHLO sent over TLS.

Every transaction runs in one pipeline (``SMTPConnection._pipeline``); the meaning of the
bytes and replies is the sans-IO :class:`~fastsmtp._transaction.Transaction`'s. Per
message, the pipeline:

1. writes ``MAIL``, every ``RCPT`` and ``DATA`` in one write when the server offers
   PIPELINING (else one command at a time) and feeds the replies to the transaction;
2. streams the body through the ``DataEncoder`` under write backpressure, with the final
   dot in the same write as the body's last chunk;
3. feeds it the reply to the dot (LMTP: one per accepted recipient).

Cross-message pipelining has one mechanism: with PIPELINING the pipeline takes the next
message just before it writes the current one's dot, and that message's
``MAIL``/``RCPT``/``DATA`` go out in the same write, before the dot's reply arrives (RFC
2920 lets message content lead a pipelined group): about one write and one round trip per
message. :meth:`SMTPConnection.send_many` feeds it from its iterable; :meth:`send` is a
one-message feed: the first caller drives the pipeline, concurrent callers join its feed
and the driver hands the pipeline to the next caller once its own reply is in (so nobody
waits for more than its own message and the one ahead). A pool feeds it runs of queued
jobs. The write turn is only mutual exclusion between the pipeline and other commands
(NOOP, RSET, AUTH, QUIT).

Under CHUNKING (RFC 3030; the server also offers PIPELINING, the ``chunking`` option is on,
not LMTP) the same pipeline sends with BDAT, and nothing waits for a reply at all: a
message's ``MAIL``, every ``RCPT`` and ``BDAT <size> LAST`` with its (normalized, unstuffed)
data go out in one write, and the next messages' transactions follow at once, up to
``pipeline_window`` unanswered transactions (the *window*). The replies are then read
in order, oldest transaction first, and each completed transaction makes room for the
next. Outcomes stay exact, whatever fails where in the window:

* every transaction written behind an unanswered one, or after a failed one, starts
  with ``RSET``: a transaction that failed (sender, recipients or data refused) may have
  left the server's transaction open, and the next ``MAIL`` would otherwise be a
  "nested MAIL" (503), or worse, its ``RCPT`` lines would join the failed transaction. An
  RSET is a few bytes and one reply line, and never a round trip;
* a refusal is that message's outcome only; the connection goes on;
* a 421 means the server processed nothing after it: the message it answered and every
  one behind it get the (retryable) error;
* a lost or silent connection: a message whose ``BDAT ... LAST`` reached the kernel
  (see :meth:`SMTPClientProtocol.mark_end`) and got no reply is
  :class:`~fastsmtp.errors.SMTPMaybeDelivered`; the others were not delivered.

So the window bounds how many messages one lost connection can leave "maybe delivered".
Slow start: until the connection has delivered a message, the window is 1 and a
transaction's data is written only once its envelope was accepted, so a server refusing
everything (530, a sender not allowed) or failing at MAIL/RCPT costs no "maybe".

Errors split cleanly for a pool: a refusal of one message (sender, recipients, data, a
local validation error) leaves the connection usable; anything else (protocol error,
timeout, lost connection, 421) closes it for good. A reply outside 2xx/4xx/5xx where the
command expects none (any 3xx but 354 to DATA and 334 to AUTH) is a protocol error: a
server that answers MAIL with 354 may be reading our next commands as message data. A connection lost or silent after the
final dot was written raises :class:`~fastsmtp.errors.SMTPMaybeDelivered`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import ssl
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from functools import partial
from operator import attrgetter
from time import perf_counter
from types import TracebackType
from typing import Any, NoReturn, TypeVar, cast

from ._codec import DataEncoder
from ._proxy import connect_via
from ._transaction import (
    BODY,
    DATA,
    DOT,
    DOT_RSET_FAIL,
    RSET,
    SEND_DATA,
    RawReply,
    SendResult,
    Transaction,
    bdat,
    breaks_session,
    command,
    positive_or_negative,
    reply_error,
    split_item,
)
from .auth import (
    MAX_STEPS,
    PASSWORD_MECHANISMS,
    TOKEN_MECHANISMS,
    SASLCredentials,
    SASLExchange,
    choose_mechanism,
    decode_challenge,
)
from .ehlo import Capabilities, parse_ehlo
from .errors import (
    SMTPAuthError,
    SMTPConnectionError,
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPError,
    SMTPHeloRefused,
    SMTPInvalidAuth,
    SMTPMaybeDelivered,
    SMTPProtocolError,
    SMTPProxyError,
    SMTPResponseError,
    SMTPServiceClosing,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPTLSNotSupported,
)
from .message import (
    Envelope,
    MessageSource,
)
from .options import ConnectionOptions, TokenProvider, connection_options
from .protocol import SMTPClientProtocol
from .reply import Reply

__all__ = ["SMTPConnection", "SendResult", "TokenProvider"]

_log = logging.getLogger("fastsmtp.connection")

#: Bodies up to this size go out in a single write together with the final dot.
JOIN_LIMIT = 256 * 1024
#: A streamed body under BDAT goes in chunks of about this size (each costs a reply).
CHUNK_SIZE = 64 * 1024

#: Seconds of complete silence after connecting (no byte of a greeting) before the
#: connection checks whether the port expects implicit TLS (a TLS server waits for the
#: client's hello and says nothing: see SMTPConnection._probe_implicit_tls).
SILENCE_PROBE = 1.0
#: Seconds the implicit-TLS check may take.
PROBE_TIMEOUT = 5.0

#: OpenSSL's reasons for a TLS handshake answered by something that is not TLS.
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
                              "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})

#: How to give the CA that verifies the server, in each form the library takes.
CAFILE_HINT = ('give the CA that signed the server\'s certificate: tls={"cafile": '
               '"ca.pem"} (URL: smtps://host/?tls.cafile=ca.pem; CLI: fastsmtp send '
               '--cafile ca.pem)')


def tls_hint(exc: BaseException, implicit: bool) -> str:
    """What to do about a failed TLS handshake, or ``""`` when there is nothing to say.

    Args:
        exc: The handshake's error.
        implicit: The handshake was the connection's first bytes (``smtps://``), not
            STARTTLS: an answer that is not TLS then means a plain SMTP port.
    """
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        return f": the server's certificate was not verified: {CAFILE_HINT}"
    if implicit and reason in _NOT_TLS_REASONS:
        return (": the server speaks plain SMTP on this port: use smtp:// (STARTTLS; "
                "secure=False), or the implicit-TLS port (465)")
    return ""


_NOOP = b"NOOP\r\n"
_QUIT = b"QUIT\r\n"
_STARTTLS = b"STARTTLS\r\n"
_CANCEL = b"*\r\n"

_NEW, _READY, _CLOSED = 0, 1, 2
#: An outcome not known yet (send_many).
_PENDING: Any = object()
_END: Any = object()  # send_many's iterable is exhausted

_E = TypeVar("_E", bound=BaseException)
_JobT = TypeVar("_JobT")

#: A scheduler's job as ``(message, envelope)`` (see :meth:`SMTPConnection.send_jobs`).
_job_parts = attrgetter("message", "envelope")


def unsent_error(exc: _E) -> _E | SMTPError:
    """The error for messages *not* sent on a connection that failed with ``exc``.

    :class:`~fastsmtp.errors.SMTPMaybeDelivered` is true only of the message whose final
    dot was written; for the messages behind it (pipelined, or queued in a pool) it is
    the connection error that caused it, which allows a retry.
    """
    if not isinstance(exc, SMTPMaybeDelivered):
        return exc
    cause = exc.__cause__
    return cause if isinstance(cause, SMTPError) else SMTPConnectionError(exc.message)


#: Connections that hold a socket (each one added once, when its socket is made): a
#: forked child must release them (:func:`_release_inherited`).
_with_socket: weakref.WeakSet[SMTPConnection] = weakref.WeakSet()


def _release_inherited() -> None:
    """After ``fork()``, in the child: every connection of the parent is discarded.

    A TCP (or TLS) session cannot be shared by two processes: a byte written by the child
    would interleave with the parent's, a QUIT would end the parent's session. So the
    child sends nothing on them; it only lets go of its copies of the sockets.
    """
    for conn in list(_with_socket):
        conn.discard()
    _with_socket.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_inherited)


_hostname: str | None = None


def _default_name(sockname: Any) -> str:
    """The EHLO name: the host name if fully qualified, else an address literal."""
    global _hostname
    if _hostname is None:
        _hostname = socket.gethostname()  # once per process: it may be slow
    if "." in _hostname and _hostname.isascii() and not _hostname.endswith("."):
        return _hostname
    if isinstance(sockname, tuple) and sockname:
        host = str(sockname[0])
        return f"[IPv6:{host}]" if ":" in host else f"[{host}]"
    return "[127.0.0.1]"


class SMTPConnection:
    """One SMTP/LMTP client connection (nodemailer's ``smtp-connection``, for asyncio).

    Use it as an async context manager (connect on enter; QUIT on a clean exit, abrupt
    close on an error) or call :meth:`connect` and :meth:`quit` / :meth:`close`.

    Example::

        async with SMTPConnection("smtp.example.com", tls=ctx) as conn:
            await conn.login(user="me", password="secret")
            result = await conn.send(raw, Envelope("me@example.com", ["you@example.org"]))

    Args:
        host: Server host name or IP address.
        port: Server port; None: 465 when ``secure``, 24 for LMTP, else 587 (message
            submission with STARTTLS, RFC 6409). Port 25 (MTA relay) is never implied:
            most networks block it for clients; pass it explicitly to relay.
        options: A prepared :class:`~fastsmtp.options.ConnectionOptions` (a pool shares
            one) instead of ``host``, ``port`` and keyword options.
        sock: An already connected socket to use instead of connecting.
        logger: A :class:`logging.Logger`; default ``fastsmtp.connection``.
        **kwargs: Any other :class:`~fastsmtp.options.ConnectionOptions` field, with the
            meaning and default documented there: ``secure``, ``ignore_tls``,
            ``require_tls``, ``opportunistic_tls``, ``name``, ``local_address``,
            ``connection_timeout``, ``greeting_timeout``, ``socket_timeout``,
            ``auth_method``, ``tls``, ``lmtp``, ``allow_plaintext_auth``, ``debug``.

    Raises:
        TypeError: An unknown option (the message lists the valid ones), or ``options``
            together with ``host``, ``port`` or keyword options.
        ValueError: A bad option value.

    Attributes:
        options: The validated options.
        capabilities: What the server announced in its (last) EHLO.
        secure: True once the connection is TLS-protected.
        messages_sent: Messages the server accepted on this connection.
        last_used: Loop time when the last transaction or command finished.
        closed: Future resolved when the connection is gone (closed by either side).
    """

    #: Sends waiting to join the running pipeline, oldest first (made by connect()).
    _feed: deque[list[Any]]

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        options: ConnectionOptions | None = None,
        sock: socket.socket | None = None,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        if options is None:
            # Every option is declared once, on ConnectionOptions, and validated there.
            options = connection_options(host=host, port=port, **kwargs)
        elif host != "localhost" or port is not None or kwargs:
            # options already holds every option: two sources would silently disagree.
            raise TypeError("pass either options or host, port and keyword options, not both")
        self.options = options
        self._sock = sock
        self.logger = logger or _log
        self.capabilities = Capabilities()
        self.secure = False
        self.messages_sent = 0
        self.last_used = 0.0
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proto: SMTPClientProtocol | None = None
        self._encoder = DataEncoder()
        self._chunker = DataEncoder(stuff=False)  # BDAT: normalized, never stuffed
        self._bdat = False  # transactions go with BDAT (decided once connected)
        self._dirty = False  # BDAT: the last transaction failed; its state may be open
        # BDAT: resolved when a send() joins the feed while the pipeline waits for a
        # reply with room in its window (so that concurrent sends share the window).
        self._fed: asyncio.Future[None] | None = None
        self._turn = False  # a transaction holds the write turn
        self._turn_waiters: deque[asyncio.Future[None]] = deque()
        self._held = b""  # a final write kept for the next transaction to join (_write)
        self._pending = 0  # transactions started and not finished
        self._trace = False
        self._name = ""
        self.authenticated = False
        self.closed: asyncio.Future[None] | None = None
        self._probe: asyncio.Task[None] | None = None  # the implicit-TLS check, if any

    # -- state ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True between a successful :meth:`connect` and the connection's end."""
        return self._state == _READY and self._proto is not None and self._proto.error is None

    @property
    def is_usable(self) -> bool:
        """Connected, not broken, and no transaction in progress: ready for ``send()``."""
        return self._pending == 0 and self.is_connected

    @property
    def pending(self) -> int:
        """Transactions started and not yet finished (more than 1 when pipelined)."""
        return self._pending

    @property
    def error(self) -> SMTPError | None:
        """The error that broke the connection, if it is broken."""
        return self._proto.error if self._proto is not None else None

    def __repr__(self) -> str:
        state = ("new", "ready", "closed")[self._state]
        if self._state == _READY and not self.is_connected:
            state = "broken"
        return f"<SMTPConnection {self.options.host}:{self.options.port} {state}>"

    # -- connect -------------------------------------------------------------------------

    async def __aenter__(self) -> SMTPConnection:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.quit()
        else:
            self.close()

    async def connect(self) -> None:
        """Connect, read the greeting, say EHLO and upgrade to TLS when possible.

        Raises:
            SMTPConnectionError: The connection could not be made or the server refused
                the session (greeting other than 220).
            SMTPTimeoutError: ``connection_timeout`` or ``greeting_timeout`` expired.
            SMTPTLSError: TLS failed, or ``require_tls`` and no STARTTLS.
            SMTPProtocolError: The server broke the protocol.
        """
        if self._state != _NEW:
            raise RuntimeError("connect() may be called only once per SMTPConnection")
        self._state = _READY
        self._feed = deque()
        try:
            await self._connect()
        except BaseException as exc:
            self._abort(exc)
            raise
        caps, opts = self.capabilities, self.options
        # BDAT's gain is the blind pipeline, which needs PIPELINING too (RFC 3030 section
        # 4.2); LMTP's replies to the data depend on the recipients accepted, which a
        # blind pipeline cannot count ahead.
        self._bdat = caps.chunking and caps.pipelining and opts.chunking and not opts.lmtp
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                "connected to %s:%s (%s)", self.options.host, self.options.port,
                "TLS" if self.secure else "plaintext",
            )

    async def _connect(self) -> None:
        opts = self.options
        loop = self._loop = asyncio.get_running_loop()
        proto = self._proto = SMTPClientProtocol(loop, opts.greeting_timeout)
        self.closed = proto.closed
        if opts.debug and self.logger.isEnabledFor(logging.DEBUG):
            proto.trace = self.logger
        ctx = self._tls_context() if opts.secure else None
        kwargs: dict[str, Any] = {}
        if ctx is not None:
            kwargs = {"ssl": ctx, "server_hostname": opts.server_hostname,
                      "ssl_handshake_timeout": opts.connection_timeout}
        try:
            if self._sock is not None:
                coro = loop.create_connection(lambda: proto, sock=self._sock, **kwargs)
            else:
                # Our own socket (every address, Happy Eyeballs, the options' DNS cache,
                # or a proxy tunnel: fastsmtp._proxy), then the same transport set-up.
                coro = connect_via(opts, lambda sock: loop.create_connection(
                    lambda: proto, sock=sock, **kwargs))
            await asyncio.wait_for(coro, opts.connection_timeout)
        except SMTPProxyError:
            raise  # already names the proxy and its reply
        except (asyncio.TimeoutError, TimeoutError):
            raise SMTPTimeoutError(
                f"connection to {opts.host}:{opts.port} timed out after "
                f"{opts.connection_timeout:g}s"
            ) from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise SMTPTLSError(
                f"TLS with {opts.host}:{opts.port} failed: {exc}{tls_hint(exc, True)}"
            ) from exc
        except OSError as exc:
            raise SMTPConnectionError(
                f"cannot connect to {opts.host}:{opts.port}: {exc}"
            ) from exc
        self.secure = ctx is not None
        transport = proto.transport
        assert transport is not None
        _with_socket.add(self)
        self._name = opts.name or _default_name(transport.get_extra_info("sockname"))

        probe = None
        if ctx is None and self._sock is None:
            probe = loop.call_later(SILENCE_PROBE, self._on_silence, proto)
        try:
            greeting = (await proto.greeting)[0]
        finally:
            if probe is not None:
                probe.cancel()
                if self._probe is not None:
                    self._probe.cancel()  # the greeting (or its failure) came first
                    self._probe = None
        if greeting[0] != 220:
            raise self._reply_error(
                greeting, "the server refused the session", SMTPConnectionError
            )
        proto.set_timeout(opts.socket_timeout)
        await self._ehlo()
        if opts.secure or opts.ignore_tls:
            return
        if not self.capabilities.starttls:
            if opts.require_tls:
                raise SMTPTLSNotSupported("require_tls: the server does not offer STARTTLS")
            return
        await self._starttls()

    def _on_silence(self, proto: SMTPClientProtocol) -> None:
        """Not one byte since the connection was made: is it an implicit-TLS port?"""
        if not proto.heard and proto.error is None and not proto.greeting.done():
            self._probe = self._loop.create_task(  # type: ignore[union-attr]
                self._probe_implicit_tls(proto))

    async def _probe_implicit_tls(self, proto: SMTPClientProtocol) -> None:
        """Try a TLS handshake on a second connection to the same port.

        The evidence: an SMTP server greets at once (or, with a greeting delay, answers a
        ClientHello with text or by closing), a TLS server answers it with its
        certificate. If the handshake succeeds, the silent connection fails now with the
        fix instead of after the whole greeting timeout. (Nothing is verified: the probe
        only asks whether TLS is spoken; it sends no SMTP.)
        """
        opts = self.options
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        loop = self._loop
        assert loop is not None
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(asyncio.Protocol, opts.host, cast(int, opts.port), ssl=ctx,
                                       server_hostname=opts.server_hostname,
                                       local_addr=opts.local_addr),
                PROBE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, TimeoutError):
            return  # no TLS there either: keep waiting for the greeting
        transport.abort()
        if not proto.heard and proto.error is None:
            proto.fail(SMTPTLSError(
                f"{opts.host}:{opts.port} sent no greeting but answers a TLS handshake: "
                "this port may expect implicit TLS: use smtps:// (secure=True)"))

    async def _ehlo(self) -> None:
        hello = "LHLO" if self.options.lmtp else "EHLO"
        raw = await self._command_reply(command(hello, self._name))
        if raw[0] == 250:
            self.capabilities = parse_ehlo(line.decode("utf-8", "replace") for line in raw[1])
            return
        if self.options.lmtp or not 500 <= raw[0] < 600 or self.options.require_tls:
            raise self._reply_error(raw, f"{hello} refused", SMTPHeloRefused)
        raw = await self._command_reply(command("HELO", self._name))
        if raw[0] != 250:
            raise self._reply_error(raw, "HELO refused", SMTPHeloRefused)
        self.capabilities = Capabilities(greeting=raw[1][0].decode("utf-8", "replace"))

    async def _starttls(self) -> None:
        proto = self._proto
        assert proto is not None and self._loop is not None
        opts = self.options
        self._write(_STARTTLS)
        raw = (await proto.expect(1, pause=True))[0]
        if raw[0] != 220:
            if not 400 <= raw[0] < 600:
                # Neither 220 nor a refusal: never fall back to plaintext on that.
                raise self._reply_error(raw, "STARTTLS", SMTPTLSError)
            proto.transport.resume_reading()  # type: ignore[union-attr]
            if opts.opportunistic_tls:
                self.logger.warning("STARTTLS refused (%d); going on in plaintext", raw[0])
                return
            raise self._reply_error(raw, "STARTTLS refused", SMTPTLSError)
        try:
            await proto.start_tls(self._tls_context(), opts.server_hostname,
                                  opts.connection_timeout)
        except SMTPTLSError as exc:
            hint = tls_hint(exc.__cause__, False) if exc.__cause__ is not None else ""
            if not hint:
                raise
            raise SMTPTLSError(f"{exc.message}{hint}") from exc.__cause__
        self.secure = True
        # Everything learnt in plaintext is forgotten: capabilities only from this EHLO.
        self.capabilities = Capabilities()
        await self._ehlo()

    def _tls_context(self) -> ssl.SSLContext:
        """The options' TLS context, built on first use (a plaintext connection never
        pays for loading CA certificates)."""
        try:
            return self.options.ssl_context
        except (OSError, ssl.SSLError) as exc:
            raise SMTPTLSError(
                f"cannot set up TLS with the tls options given: {exc} (check the files "
                "named in tls={...} or the URL's ?tls.cafile=)"
            ) from exc

    # -- low-level I/O -------------------------------------------------------------------

    def _write(self, data: bytes, secret: bool = False) -> None:
        """Write ``data`` through the protocol (see :meth:`SMTPClientProtocol.write`)."""
        proto = self._proto
        if proto is None or self._state != _READY:
            raise SMTPConnectionError("the connection is not open")
        proto.write(data, secret)

    async def _command_reply(self, line: bytes, secret: bool = False) -> RawReply:
        self._write(line, secret)
        return (await self._proto.expect(1))[0]  # type: ignore[union-attr]

    def _reply_error(
        self, raw: RawReply, what: str, cls: type[SMTPError] = SMTPResponseError,
        **attrs: Any,
    ) -> SMTPError:
        """The error for a reply that is not the one a command wanted.

        ``cls`` names the category (its reply flavour is raised: see
        :func:`~fastsmtp.errors.reply_error_class`); ``attrs`` go to its constructor
        (``sender=``, ``recipient=``).

        A 421 and a reply outside 2xx/4xx/5xx (a 3xx where none is expected, e.g. 354
        to MAIL) also break the connection: after a 421 the server is gone, and after an
        unexpected 3xx client and server disagree on where the dialogue is (the server
        may be reading message data), so nothing more may be sent on it.
        """
        error = reply_error(raw, what, cls, **attrs)
        if breaks_session(error):
            self._abort(error)
        return error

    def _abort(self, exc: BaseException | None = None) -> None:
        proto = self._proto
        if proto is not None:
            error = exc if isinstance(exc, SMTPError) else SMTPConnectionError(
                "the connection was closed by the client"
                if exc is None else f"the connection was abandoned: {exc!r}"
            )
            proto.fail(error)
        self._state = _CLOSED

    # -- simple commands -----------------------------------------------------------------

    async def _simple(self, line: bytes, what: str) -> Reply:
        await self._acquire_turn()
        self._pending += 1
        try:
            raw = await self._command_reply(line)
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            self._pending -= 1
            self._release_turn()
        self.last_used = self._loop.time()  # type: ignore[union-attr]
        if raw[0] != 250:
            raise self._reply_error(raw, f"{what} refused")
        return Reply.from_core(*raw)

    async def reset(self) -> Reply:
        """Abort any transaction with RSET.

        Raises:
            SMTPResponseError: The server did not answer 250.
        """
        return await self._simple(RSET, "RSET")

    async def noop(self) -> Reply:
        """Send NOOP (a cheap liveness check).

        Raises:
            SMTPResponseError: The server did not answer 250.
        """
        return await self._simple(_NOOP, "NOOP")

    async def quit(self) -> None:
        """Say QUIT and close gracefully; errors on the way out are ignored."""
        if self._state != _READY or self._proto is None or self._proto.error is not None:
            self.close()
            return
        try:
            await self._acquire_turn()
            try:
                await self._command_reply(_QUIT)
            finally:
                self._release_turn()
        except SMTPError:
            pass
        finally:
            proto = self._proto
            self._state = _CLOSED
            proto.fail(SMTPConnectionError("the connection was closed by the client"),
                       abort=False)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("closed connection to %s:%s", self.options.host, self.options.port)

    def discard(self) -> None:
        """Let go of the connection without a word and without its event loop.

        For a connection whose loop is gone: closed (a pool used again from a new loop)
        or left in the parent process (after ``fork()``, which calls this for every
        connection in the child). Nothing is written, not even QUIT, and the loop is not
        touched: the socket's descriptor is pointed at ``/dev/null``, which releases the
        socket here (the parent's copy, if any, stays as it is) and leaves the
        transport, whenever it is collected, a descriptor that closes nothing else.
        """
        proto = self._proto
        self._state = _CLOSED
        if proto is None:
            return
        if proto.error is None:
            proto.error = SMTPConnectionError(
                "the connection was discarded (its event loop or process is gone)"
            )
        transport = proto.transport
        if transport is None or transport.is_closing() or proto.closed.done():
            # Closed already (or being closed): its descriptor may be gone, and its
            # number reused by another file.
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd >= 0:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd, inheritable=False)
            finally:
                os.close(null)

    def close(self) -> None:
        """Close abruptly (no QUIT); every pending operation fails at once."""
        if self._state == _CLOSED and (self._proto is None or self._proto.error is not None):
            return
        self._abort(None)

    # -- authentication ------------------------------------------------------------------

    async def login(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        xoauth2: str | TokenProvider | None = None,
        mechanism: str | None = None,
        domain: str | None = None,
    ) -> Reply:
        """Authenticate (SMTP AUTH, RFC 4954).

        The mechanism is ``mechanism`` if given, else ``auth_method`` if set, else (with
        ``password``) the strongest offered of CRAM-MD5, PLAIN and LOGIN, or (with
        ``xoauth2``) XOAUTH2. Every mechanism runs through the same exchange loop (see
        :mod:`fastsmtp.auth`): the built-ins, NTLM (``mechanism="NTLM"``, needs
        ``pip install "aiofastsmtp[ntlm]"``) and custom ones registered with
        ``auth_mechanisms={"X-MECH": handler}``.

        ``xoauth2`` takes either a token string or a token provider: a (sync or async)
        callable ``provider(user, *, refresh: bool)`` returning the token, or
        ``(user, token)`` when it knows the account itself (then ``user`` may be omitted,
        as with nodemailer's xoauth2 generator). When the server rejects a token from a
        provider, the provider is called again with ``refresh=True`` and the login is
        retried once.

        Credentials are never sent over a plaintext connection unless
        ``allow_plaintext_auth=True``.

        Args:
            user: The user name; for NTLM ``DOMAIN\\user``, ``user@domain`` or a bare
                name completed by ``domain``.
            password: The password (PLAIN, LOGIN, CRAM-MD5, NTLM).
            xoauth2: An OAuth2 token or token provider (XOAUTH2).
            mechanism: The mechanism for this login, overriding ``auth_method``. A custom
                mechanism may take a password, a token, or neither.
            domain: The NTLM domain (default: the ``domain`` option).

        Returns:
            The server's 235 reply.

        Raises:
            SMTPAuthError: Refused, impossible (no mechanism, no TLS) or failed.
            ModuleNotFoundError: NTLM without pyspnego (the message names the extra).
        """
        opts = self.options
        registry = opts.sasl_mechanisms
        preferred = opts.auth_method if mechanism is None else str(mechanism).upper()
        if preferred is not None and preferred not in registry:
            raise SMTPInvalidAuth(
                f"unknown SASL mechanism {preferred}: register it with "
                "auth_mechanisms={name: handler}"
            )
        builtin = preferred is None or preferred in PASSWORD_MECHANISMS | TOKEN_MECHANISMS
        if builtin:
            if user is None and not callable(xoauth2):
                raise SMTPInvalidAuth("a user name is needed (only a token provider may supply it)")
            if (password is None) == (xoauth2 is None):
                raise SMTPInvalidAuth("give exactly one of password and xoauth2")
        elif password is not None and xoauth2 is not None:
            raise SMTPInvalidAuth("give at most one of password and xoauth2")
        if not self.secure and not opts.allow_plaintext_auth:
            raise SMTPInvalidAuth(
                "refusing to send credentials over a plaintext connection: use TLS "
                "(smtps://, or a server offering STARTTLS), or allow it on purpose with "
                "allow_plaintext_auth=True (URL: smtp://user@host/?allow_plaintext_auth=true; "
                "CLI: fastsmtp send --server 'smtp://user@host/?allow_plaintext_auth=true')"
            )
        name = choose_mechanism(
            self.capabilities.auth, preferred=preferred, token=xoauth2 is not None,
        )
        handler = registry[name]
        if domain is None:
            domain = opts.domain

        def exchange(account: str, token: str | None) -> SASLExchange:
            credentials = SASLCredentials(account, password, token, domain, opts.server_hostname)
            return SASLExchange(name, handler, credentials)

        if xoauth2 is None or isinstance(xoauth2, str):
            reply = await self._sasl(exchange(user or "", xoauth2))
        else:
            account, token = await self._token(xoauth2, user, refresh=False)
            try:
                reply = await self._sasl(exchange(account, token))
            except SMTPAuthError as exc:
                if exc.reply is None or not self.is_connected:
                    raise
                account, token = await self._token(xoauth2, user, refresh=True)
                reply = await self._sasl(exchange(account, token))
            user = account
        self.authenticated = True
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("authenticated as %s with %s", user, name)
        return reply

    @staticmethod
    async def _token(
        provider: TokenProvider, user: str | None, *, refresh: bool
    ) -> tuple[str, str]:
        """Ask ``provider`` for a token; return ``(user, token)``."""
        got = provider(user, refresh=refresh)
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, tuple) and len(got) == 2:
            account, token = got
            if not isinstance(account, str) or not account:
                raise SMTPInvalidAuth("the xoauth2 token provider returned no user")
        else:
            account, token = user or "", got
            if not account:
                raise SMTPInvalidAuth(
                    "no user for XOAUTH2: give one, or let the provider return (user, token)"
                )
        if not isinstance(token, str) or not token:
            raise SMTPInvalidAuth("the xoauth2 token provider returned no token")
        return account, token

    async def _sasl(self, mech: SASLExchange) -> Reply:
        """Drive one exchange: the one loop every mechanism runs through."""
        # The handler runs to its first answer before the turn is taken and anything is
        # written: its errors (a missing package, bad input) leave the connection intact.
        first = mech.start()
        await self._acquire_turn()
        self._pending += 1
        try:
            raw = await self._command_reply(first, secret=True)
            for _ in range(MAX_STEPS):
                if raw[0] != 334:
                    break
                try:
                    answer = mech.step(decode_challenge(raw[1][0] if raw[1] else b""))
                except SMTPAuthError:
                    cancelled = await self._command_reply(_CANCEL)
                    if not positive_or_negative(cancelled[0]):
                        raise self._reply_error(cancelled, "AUTH cancel") from None
                    raise
                raw = await self._command_reply(answer, secret=True)
        except SMTPAuthError:
            raise
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            mech.close()
            self._pending -= 1
            self._release_turn()
        if raw[0] == 235:
            return Reply.from_core(*raw)
        # Includes a 334 after MAX_STEPS challenges: the server still waits for an
        # answer, so _reply_error closes the connection (any 3xx here).
        raise self._reply_error(raw, f"{mech.name} authentication failed", SMTPAuthError)

    # -- the write turn ------------------------------------------------------------------
    #
    # The turn is mutual exclusion, not pipelining: one pipeline (or one command such as
    # NOOP or AUTH) owns the connection at a time. Sends that arrive while a pipeline
    # runs join its feed instead of waiting for the turn (see _pipeline).

    async def _acquire_turn(self) -> None:
        if not self._turn:
            if self._state != _READY:
                raise SMTPConnectionError("the connection is not open")
            self._turn = True
            return
        fut = self._loop.create_future()  # type: ignore[union-attr]
        self._turn_waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release_turn()  # it was handed to us just as we were cancelled
            else:
                self._turn_waiters.remove(fut)
            raise

    def _release_turn(self) -> None:
        waiters = self._turn_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand over: the turn stays taken
                return
        feed = self._feed
        while feed:
            # Sends queued behind a command: the oldest one drives a new pipeline.
            entry = feed[0]
            if entry[0].done():  # its caller gave up before anything was written
                feed.popleft()
                continue
            entry[0].set_result(self._feed_drive())
            return  # the turn stays taken
        self._turn = False

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        message: MessageSource,
        envelope: Envelope | None = None,
    ) -> SendResult:
        """Send one message.

        Args:
            message: bytes, str, EmailMessage, a binary file, or a sync or async iterable
                of bytes chunks (streamed, never read whole). Line endings are normalized
                to CRLF and leading dots doubled.
            envelope: Sender and recipients; None to derive them from ``message``, which
                must then be an :class:`email.message.Message` (``Sender``/``From``;
                ``To``, ``Cc``, ``Bcc``; ``Bcc`` is not sent).

        Under CHUNKING (the ``chunking`` option, on by default) the message goes with
        BDAT (RFC 3030): no dot-stuffing, line endings still normalized, the whole
        transaction in one write; concurrent ``send()`` calls on the connection share
        its window of ``pipeline_window`` unanswered transactions. Cancelling a send
        that was written closes the connection, as with DATA.

        The declared ``SIZE`` (when the server offers SIZE) is ``envelope.size`` if set,
        else, for an in-memory message, its size after CRLF normalization
        (:func:`~fastsmtp.message.data_size`). A stream without ``envelope.size`` is
        not declared; one that is a regular file is still refused before MAIL when its
        byte count alone exceeds the server's limit (line-ending normalization can only
        add to it), other streams are refused by the server after their data was sent.

        Returns:
            A :class:`SendResult`. Some refused recipients do not fail the send.

        Raises:
            TypeError: No envelope and ``message`` is not an
                :class:`email.message.Message` (nothing written).
            SMTPEnvelopeError: Invalid envelope, e.g. an address that could add
                parameters (``<``, ``>``, whitespace outside a quoted local part, a
                control character) (nothing written).
            SMTPMessageError: Larger than the server's SIZE (nothing written).
            SMTPSenderRefused: MAIL FROM refused.
            SMTPRecipientsRefused: Every recipient refused (no data sent, RSET done).
            SMTPDataRefused: DATA or the message refused (LMTP: by every recipient).
            SMTPMaybeDelivered: The connection was lost (or went silent) after the final
                dot (BDAT: the ``LAST`` chunk) was written: the message may have been
                delivered. Under BDAT also when the server accepted the data of a
                transaction it had refused in part.
            SMTPServerDisconnected, SMTPTimeoutError, SMTPProtocolError: The connection
                broke before the final dot; it is closed and nothing was delivered.
                (SMTPServerDisconnected includes SMTPSocketError, ``ESOCKET``.)
            SMTPProtocolError: An unexpected reply, e.g. a 3xx to MAIL, RCPT or the
                final dot (with its ``reply``); the connection is closed.
        """
        tr = Transaction(message, envelope, self.capabilities, self.options.lmtp,
                         self.options.dkim_signer, self.secure, self._bdat)
        # Nothing has been written before this point. Every send goes through the one
        # pipeline: the first caller drives it, the others join its feed.
        if self._state != _READY:
            raise SMTPConnectionError("the connection is not open")
        own: asyncio.Future[Any] = self._loop.create_future()  # type: ignore[union-attr]
        entry = [own, _PENDING, tr]
        self._feed.append(entry)
        fed = self._fed
        if fed is not None and not fed.done():
            fed.set_result(None)
        self._pending += 1
        try:
            if not self._turn:
                self._turn = True
                got: Any = self._feed_drive()
            else:
                got = await self._wait_turn(entry)
            while isinstance(got, _Drive):
                # Ours to drive: until our own outcome is in, then handed on. (A caller
                # that waited was handed the pipeline through its future: a fresh one.)
                if own.done():
                    own = entry[0] = self._loop.create_future()  # type: ignore[union-attr]
                await self._drive(got, own)
                got = own.result()
        finally:
            self._pending -= 1
        if isinstance(got, BaseException):
            raise got
        return cast(SendResult, got)

    async def _wait_turn(self, entry: list[Any]) -> Any:
        """Wait in the feed: for the outcome, or for the pipeline to be handed over."""
        fut = entry[0]
        try:
            return await fut
        except asyncio.CancelledError as exc:
            if entry in self._feed:
                self._feed.remove(entry)  # never taken: nothing of it was written
            elif fut.done() and not fut.cancelled() and isinstance(fut.result(), _Drive):
                # Handed the pipeline just as we were cancelled: it must still end (and
                # release the turn); the connection goes, as for any cancelled send.
                self._abort(exc)
                abandoned = fut.result()
                dummy = self._loop.create_future()  # type: ignore[union-attr]
                self._loop.create_task(self._drive(abandoned, dummy))  # type: ignore[union-attr]
            elif entry[1] is _PENDING:
                self._abort(exc)  # cancelled mid-transaction: the session state is unknown
            raise

    def _feed_drive(self) -> _Drive:
        """A pipeline fed by the send() callers waiting in the feed, to be driven."""
        queue: deque[list[Any]] = deque()
        feed = self._feed

        def pull() -> list[Any] | None:
            # The next send waiting in the feed (callers that gave up are skipped).
            while feed:
                entry = feed.popleft()
                if not entry[0].done():
                    queue.append(entry)
                    return entry
            return None

        return _Drive(self._pipeline(pull, queue, joinable=True), queue)

    async def _drive(self, drive: _Drive, own: asyncio.Future[Any]) -> None:
        """Run the pipeline until ``own`` has its outcome, settling every caller's future;
        then hand the pipeline to the caller of the next message, if any."""
        agen, queue = drive.agen, drive.queue
        try:
            while True:
                if own.done():
                    for nxt in (*queue, *self._feed):
                        if not nxt[0].done():
                            nxt[0].set_result(drive)  # its caller drives from here
                            return
                try:
                    fut, outcome = await agen.__anext__()
                except StopAsyncIteration:
                    return
                if not fut.done():
                    fut.set_result(outcome)
        except BaseException as exc:
            # Cancelled while driving: the pipeline aborted the connection and ended. The
            # messages it had taken behind ours were not sent (their dots were not
            # written). Those still in the feed are left to the next pipeline, which the
            # turn's release has already handed on: it fails them with the connection's
            # error without writing anything.
            error = unsent_error(self.error or SMTPConnectionError(repr(exc)))
            for entry in queue:
                if not entry[0].done() and entry[0] is not own:
                    # An outcome the pipeline settled on its way out (a BDAT window's
                    # "maybe delivered") stands.
                    entry[0].set_result(error if entry[1] is _PENDING else entry[1])
            raise

    def _outcome(
        self, tr: Transaction, replies: list[RawReply], size: int, started: float,
        envelope_time: float,
    ) -> SendResult | SMTPError:
        """The outcome of a message from the replies to its final dot: its result, or
        the refusal (:class:`SMTPEnvelopeError`, :class:`SMTPDataRefused`).

        ``started`` is the clock (:func:`time.perf_counter`) when the data began,
        ``envelope_time`` the seconds the envelope took: one clock read per phase.

        Raises:
            SMTPError: A fatal reply (421, a 3xx): the connection is over.
        """
        self.last_used = self._loop.time()  # type: ignore[union-attr]
        try:
            result = tr.result(replies, size)
        except (SMTPEnvelopeError, SMTPDataRefused) as exc:
            return exc
        result.envelope_time = envelope_time
        result.message_time = perf_counter() - started
        self.messages_sent += 1
        return result

    async def _envelope_unpipelined(self, tr: Transaction) -> int:
        """Without PIPELINING: MAIL, each RCPT and DATA one at a time, each after the
        reply to the one before; the transaction's action (see
        :meth:`Transaction.envelope_replies`)."""
        commands = tr.commands
        replies = [await self._command_reply(commands[0])]
        while tr.wants_more(replies):
            replies.append(await self._command_reply(commands[len(replies)]))
        action = tr.envelope_replies(replies, data_sent=False)
        if action == SEND_DATA:
            action = tr.data_reply(await self._command_reply(DATA))
        return action

    async def _refused(self, tr: Transaction, action: int) -> NoReturn:
        """The envelope or DATA was refused: clean up as ``action`` asks (end the empty
        message a lax server accepted, RSET), then raise the transaction's error."""
        if action == DOT_RSET_FAIL:
            raw = await self._command_reply(DOT)
            if not positive_or_negative(raw[0]):
                raise self._reply_error(raw, "empty message")
        await self._rset_quietly()
        assert tr.error is not None
        raise tr.error

    async def _rset_quietly(self) -> None:
        raw = await self._command_reply(RSET)
        if raw[0] != 250:
            raise self._reply_error(raw, "RSET refused", SMTPProtocolError)

    async def _write_body(self, payload: Any, tail: bytes = b"") -> None:
        """Write the message data and the final dot (plus ``tail``) under backpressure.

        ``tail`` (the next message's pipelined commands) goes in the same write as the
        dot, so a pipelined message costs one write. A large in-memory body goes out in
        ``JOIN_LIMIT`` slices, each written once the transport has room (no copy of the
        whole body in the transport's buffer, and a connection that dies under it fails
        the message before its dot). The protocol is told where the dot ends
        (:meth:`SMTPClientProtocol.mark_end`): only a dot that reached the kernel makes
        a later loss "maybe delivered".
        """
        if isinstance(payload, (bytes, bytearray, memoryview)):
            data = self._encoder.encode(payload)
            self._write_final(data if len(data) <= JOIN_LIMIT else await self._write_head(data),
                              tail)
            return
        if isinstance(payload, AsyncIterable):
            async for chunk in payload:
                await self._write_chunk(chunk)
        else:
            for chunk in payload:
                await self._write_chunk(chunk)
        self._write_final(b"", tail)

    async def _write_head(self, data: bytes | bytearray | memoryview) -> memoryview:
        """Write all of a large ``data`` but its last ``JOIN_LIMIT`` bytes or fewer, in
        ``JOIN_LIMIT`` slices, each once the transport has room (no copy of the whole in
        its buffer; a connection dying under it fails the message before its end).
        Returns the rest, to go in one write with what follows it."""
        proto = self._proto
        assert proto is not None
        view = memoryview(data)
        size = len(view)
        pos = 0
        while size - pos > JOIN_LIMIT:
            proto.write(view[pos:pos + JOIN_LIMIT])
            pos += JOIN_LIMIT
            if proto.paused:
                await proto.drain()
        return view[pos:]

    def _write_final(self, data: bytes | memoryview, tail: bytes) -> None:
        """Write the last of a message's (encoded) data, the final dot and ``tail`` in
        one write, and mark where the dot ends (:meth:`SMTPClientProtocol.mark_end`)."""
        proto = self._proto
        assert proto is not None
        proto.write(b"".join((data, self._encoder.end(), tail)))
        proto.mark_end(len(tail))

    async def _write_chunk(self, chunk: bytes | str) -> None:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if not chunk:
            return
        self._write(self._encoder.encode(chunk))
        proto = self._proto
        if proto.paused:  # type: ignore[union-attr]
            await proto.drain()  # type: ignore[union-attr]

    async def _write_bdat(
        self, entry: list[Any], rset: bool, limit: int, careful: bool = False
    ) -> list[Any]:
        """Write one BDAT transaction, wait for no reply; return its window record.

        ``careful`` (slow start, see :meth:`_pipeline`): write the envelope first and
        wait for its replies; the data and ``LAST`` follow only if the sender and a
        recipient were accepted. A transaction refused there never had its ``LAST``
        written, so whatever happens next it is not delivered.

        In memory: ``[RSET]``, ``MAIL``, every ``RCPT`` and ``BDAT <n> LAST`` with the
        data, in one write (a body over ``JOIN_LIMIT`` in slices under backpressure).
        A stream: the commands, then one ``BDAT <n>`` per ``CHUNK_SIZE`` or so of
        normalized data and the last piece with ``LAST``; at most ``limit`` chunk
        replies are left unread (a refused chunk stops the stream: RFC 3030 forbids
        more chunks after it, and the message is not delivered).

        The record: ``[entry, transaction, envelope replies future, chunk reply futures,
        end offset (see SMTPClientProtocol.mark_end), size, write clock, LAST written,
        RSET sent]``.
        """
        proto = self._proto
        assert proto is not None
        tr: Transaction = entry[2]
        head = [RSET, *tr.commands] if rset else tr.commands
        payload = tr.payload
        binary = tr.binary
        encoder = self._chunker
        env: asyncio.Future[list[RawReply]] | None = None
        if careful:
            sent_at = perf_counter()
            proto.write(b"".join(head))
            env = proto.expect(len(head))
            if not _envelope_accepted(await env, rset):
                return [entry, tr, env, [], -1, 0, sent_at, False, rset]
            head = []
        if isinstance(payload, (bytes, bytearray, memoryview)):
            if binary:
                data, end = payload, b""
            else:
                data, end = encoder.encode(payload), encoder.end()
            size = len(data) + len(end)
            line = bdat(size, True)
            if env is None:
                sent_at = perf_counter()
            if size <= JOIN_LIMIT:
                proto.write(b"".join((*head, line, data, end)))
                if env is None:
                    env = proto.expect(len(head))
                last = proto.expect(1)
            else:
                proto.write(b"".join((*head, line)))
                # Registered before anything is awaited: their replies may come at once.
                if env is None:
                    env = proto.expect(len(head))
                last = proto.expect(1)
                proto.write(b"".join((await self._write_head(data), end)))
            return [entry, tr, env, [last], proto.mark_end(0), size, sent_at, True, rset]
        if env is None:
            sent_at = perf_counter()
            proto.write(b"".join(head))
            env = proto.expect(len(head))
        futs: list[asyncio.Future[list[RawReply]]] = []
        record = [entry, tr, env, futs, -1, 0, sent_at, False, rset]
        held: list[bytes] = []
        held_size = size = read = 0

        async def flush(last: bool) -> bool:
            """Write the held data as one chunk; False: a chunk was refused, stop."""
            nonlocal held_size, size, read
            proto.write(b"".join((bdat(held_size, last), *held)))
            futs.append(proto.expect(1))
            size += held_size
            held.clear()
            held_size = 0
            if last:
                return True
            while len(futs) - read >= limit:
                raw = (await futs[read])[0]
                read += 1
                if raw[0] != 250:
                    return False
            if proto.paused:
                await proto.drain()
            return True

        going = True
        chunks = payload if isinstance(payload, AsyncIterable) else _aiter(payload)
        async for chunk in chunks:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            if not chunk:
                continue
            piece = chunk if binary else encoder.encode(chunk)
            held.append(piece)
            held_size += len(piece)
            if held_size >= CHUNK_SIZE and not (going := await flush(False)):
                break
        if going:
            if not binary:
                held.append(encoder.end())
                held_size += len(held[-1])
            await flush(True)
            record[4] = proto.mark_end(0)
            record[7] = True
        elif not binary:
            encoder.end()  # the next message starts afresh
        record[5] = size
        return record

    async def _settle_bdat(self, rec: list[Any]) -> Any:
        """Read the replies of the oldest BDAT transaction in the window: its outcome.

        A refusal is returned (the next transaction starts with RSET). A fatal reply
        breaks the connection and is raised, with this message's outcome already set:
        a 421 or a refused ``LAST`` means not delivered; anything else after ``LAST``
        was written means "maybe delivered" (the dialogue can no longer be trusted).
        A lost connection is raised as is (see :meth:`_window_failed`).
        """
        entry, tr, env_fut, futs, end, size, sent_at, last, rset = rec
        env = await env_fut
        envelope_done = perf_counter()
        chunks = [raw for fut in futs for raw in await fut]
        if rset:
            raw = env[0]
            env = env[1:]
            if raw[0] != 250:
                # RSET must get 250 (RFC 5321): the server's state is unknown from here.
                error = self._reply_error(raw, "RSET refused", SMTPProtocolError)
                self._abort(error)
                entry[1] = _maybe(error) if last else error
                raise error
        try:
            result = tr.chunk_result(env, chunks, size, last)
        except SMTPError as exc:
            self._dirty = True
            if not breaks_session(exc):
                return exc
            outcome: SMTPError = exc
            if not isinstance(exc, (SMTPMaybeDelivered, SMTPServiceClosing)) and last and not (
                    chunks and 400 <= chunks[-1][0] < 600):
                outcome = _maybe(exc)
            entry[1] = outcome
            self._abort(exc)
            raise
        self._dirty = False
        result.envelope_time = envelope_done - sent_at
        result.message_time = perf_counter() - sent_at
        self.last_used = self._loop.time()  # type: ignore[union-attr]
        self.messages_sent += 1
        return result

    async def _joined(self, reply: asyncio.Future[list[RawReply]]) -> bool:
        """Wait for ``reply`` or for a send() to join the feed; True: one joined first."""
        if reply.done():
            return False
        fed = self._fed = self._loop.create_future()  # type: ignore[union-attr]

        def wake(_: Any) -> None:
            if not fed.done():
                fed.set_result(None)

        reply.add_done_callback(wake)
        try:
            await fed
        finally:
            reply.remove_done_callback(wake)
            self._fed = None
        return not reply.done()

    def _window_failed(self, window: deque[list[Any]], exc: BaseException) -> None:
        """The connection broke with BDAT transactions in the window: settle each.

        After a 421 the server processed nothing more: every one is not delivered. Else
        a message whose ``BDAT ... LAST`` reached the kernel and got no reply may have
        been delivered (:class:`~fastsmtp.errors.SMTPMaybeDelivered`); the others were
        not, and may be retried.
        """
        self._abort(exc)
        error = self.error
        assert error is not None
        proto = self._proto
        assert proto is not None
        closing = isinstance(error, SMTPServiceClosing)
        unsent = unsent_error(error)
        for rec in window:
            entry = rec[0]
            if entry[1] is not _PENDING:
                continue
            if not closing and rec[7] and proto.sent(rec[4]):
                entry[1] = _maybe(error)
            else:
                entry[1] = unsent

    async def _pipeline(
        self, pull: Callable[[], list[Any] | None], queue: deque[list[Any]],
        acquire: bool = False, joinable: bool = False,
    ) -> AsyncIterator[tuple[Any, Any]]:
        """THE pipelining mechanism: every transaction on the connection runs here.

        ``pull()`` returns the next message to send as an entry ``[key, _PENDING,
        transaction]``, or None when there is none right now; it never waits. It appends
        that entry to ``queue`` itself, after any invalid messages it took on the way
        (as ``[key, error, None]``). The entries in ``queue`` are yielded in order as
        ``(key, outcome)``, each as soon as every earlier one is known. ``joinable``:
        the entries come from the feed, which send() callers may join at any time.

        With PIPELINING the next message is pulled just before the current message's
        final dot is written, and its MAIL/RCPT/DATA go out in the same write; without
        it, one message at a time, one command at a time. Under BDAT (see the module
        docstring) messages are pulled while the window has room, each written whole
        (:meth:`_write_bdat`) with no wait, and settled oldest first
        (:meth:`_settle_bdat`); a send() joining the feed while the pipeline waits with
        room in its window is written at once (:meth:`_joined`). Whoever iterates this
        holds the write turn (``acquire``: takes it first, as :meth:`send_many`); it is
        released when the pipeline ends.
        """
        if acquire:
            await self._acquire_turn()
        proto = self._proto
        assert proto is not None
        pipelining = self.capabilities.pipelining
        dot_entry: list[Any] | None = None
        bdat = self._bdat
        self._pending += acquire
        try:
            if bdat:
                window: deque[list[Any]] = deque()
                full = self.options.pipeline_window
                try:
                    while True:
                        # Slow start: until the connection has delivered a message, one
                        # transaction at a time, its data written only once its envelope
                        # was accepted (a round trip more, once per connection). A server
                        # refusing every transaction (530: no AUTH; a sender not
                        # allowed), or one that drops or stalls at MAIL/RCPT, then leaves
                        # no message "maybe delivered", as with DATA; a whole window
                        # written with LAST would be, if the run were cut or abandoned.
                        limit = full if self.messages_sent else 1
                        while len(window) < limit and (cur := pull()) is not None:
                            # Behind an unanswered transaction, or after a failed one,
                            # the server's transaction may still be open: RSET first.
                            window.append(await self._write_bdat(
                                cur, bool(window) or self._dirty, full, not self.messages_sent))
                        if not window:
                            break
                        rec = window[0]
                        if joinable and len(window) < limit and await self._joined(rec[3][-1]):
                            continue  # a send joined before the reply: into the window
                        rec[0][1] = await self._settle_bdat(rec)
                        window.popleft()
                        while queue and queue[0][1] is not _PENDING:
                            done = queue.popleft()
                            yield done[0], done[1]
                except BaseException as exc:
                    self._window_failed(window, exc)
                    raise
                cur = None
            else:
                cur = pull()
            written = None
            sent_at = 0.0  # when the current envelope's commands were written
            if cur is not None and pipelining:
                proto.write(b"".join(cur[2].commands))
                written = proto.expect(len(cur[2].commands))
                sent_at = perf_counter()
            dot: asyncio.Future[list[RawReply]] | None = None  # the last dot's reply
            # ... and its message's transaction, size and times:
            dot_tr: Transaction | None = None
            dot_size, dot_sent_at, started = 0, 0.0, 0.0
            # The awaits are here and the logic in plain methods: a coroutine per step
            # would cost a frame and a send per message.
            while not bdat:
                if dot is not None:
                    # The previous dot's reply comes before this envelope's replies.
                    try:
                        replies = await dot
                    except SMTPError as exc:
                        if proto.end_sent:
                            raise _maybe(exc) from exc
                        raise  # the dot never left the process: not delivered
                    dot_entry[1] = self._outcome(  # type: ignore[index]
                        dot_tr, replies, dot_size, started,  # type: ignore[arg-type]
                        started - dot_sent_at)
                    dot = None
                while queue and queue[0][1] is not _PENDING:
                    done = queue.popleft()
                    yield done[0], done[1]
                if cur is None:
                    # Anything that arrived while the last reply was awaited.
                    cur = pull()
                    if cur is None:
                        break
                    if pipelining:
                        proto.write(b"".join(cur[2].commands))
                        written = proto.expect(len(cur[2].commands))
                        sent_at = perf_counter()
                entry, tr = cur, cur[2]
                try:
                    if written is not None:
                        action = tr.envelope_replies(await written, data_sent=True)
                    else:
                        sent_at = perf_counter()
                        action = await self._envelope_unpipelined(tr)
                    if action != BODY:
                        await self._refused(tr, action)
                except (SMTPEnvelopeError, SMTPDataRefused) as exc:
                    entry[1] = exc  # refused: the connection goes on
                    cur = written = None
                    continue
                cur = pull() if pipelining else None
                payload = tr.payload
                tail = b"".join(cur[2].commands) if cur is not None else b""
                dot_sent_at, started = sent_at, perf_counter()
                if type(payload) is bytes and len(payload) <= JOIN_LIMIT // 2:
                    # The common case, in one write and without a coroutine (encoding
                    # at most doubles the size: a lone LF or a lone dot per line).
                    self._write_final(self._encoder.encode(payload), tail)
                else:
                    await self._write_body(payload, tail)
                # The dot is written: from here on a lost connection means "maybe
                # delivered" for this message (and only for this one), if the dot
                # reached the kernel (see above).
                dot_entry, dot_tr, dot_size = entry, tr, self._encoder.bytes_out
                dot = proto.expect(tr.expected_final())
                if cur is not None:
                    # Its commands went in the same write as the dot.
                    written = proto.expect(len(cur[2].commands))
                    sent_at = started
                else:
                    written = None
        except BaseException as exc:
            self._abort(exc)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, SMTPMaybeDelivered):
                # Only the message whose dot was written may have been delivered; the
                # ones behind it were not, and may be retried.
                if dot_entry is not None and dot_entry[1] is _PENDING:
                    dot_entry[1] = exc
            while pull() is not None:
                pass  # every message not sent yet gets the error below
            other = unsent_error(exc)
            for pending in queue:
                if pending[1] is _PENDING:
                    pending[1] = other
        finally:
            self._pending -= acquire
            self._release_turn()
        while queue:
            done = queue.popleft()
            yield done[0], done[1]

    def send_many(
        self, items: Iterable[Any]
    ) -> AsyncIterator[tuple[Any, SendResult | Exception]]:
        """Send several messages back to back, pipelined across messages when possible.

        With PIPELINING, the next message's MAIL/RCPT/DATA go out in the same write as
        the previous message's final dot (RFC 2920), so each message costs one write and
        about one round trip instead of two (see :meth:`_pipeline`). Without it, the
        messages go one after another. Under CHUNKING (BDAT), up to ``pipeline_window``
        whole transactions are in flight with no wait at all: about ``pipeline_window``
        messages per round trip.

        Args:
            items: Each a message (an :class:`email.message.EmailMessage` gives its own
                envelope) or a ``(message, envelope)`` pair, as for :meth:`send`;
                consumed lazily. The rule for telling them apart: a tuple of two whose
                second element is an :class:`~fastsmtp.message.Envelope` or None is a
                pair; anything else (a list or tuple of chunks too) is a message.

        Yields:
            ``(item, outcome)`` for each item, in the order given: a
            :class:`SendResult`, or the exception: a refusal
            (:class:`~fastsmtp.errors.SMTPError`), a local validation error, or, once
            the connection broke, the connection's error for every message not yet
            finished (:class:`~fastsmtp.errors.SMTPMaybeDelivered` for the one whose dot
            was written). Errors are yielded, not raised.

        The connection is busy until the iteration ends: do not send on it from inside
        the loop. Leaving the loop early (``break``) while a message is in flight closes
        the connection, as cancelling :meth:`send` does.
        """
        # The pipeline itself, not a generator around it: one frame less per await.
        queue: deque[list[Any]] = deque()
        pull = self._puller(partial(next, iter(items), _END), split_item, _END, queue)
        return self._pipeline(pull, queue, acquire=True)

    def send_jobs(
        self, take: Callable[[], _JobT | None]
    ) -> AsyncIterator[tuple[_JobT, SendResult | Exception]]:
        """:meth:`send_many` for a scheduler: fed by ``take()``, which returns the next
        job (any object with ``message`` and ``envelope`` attributes, as for
        :meth:`send`) or None when there is none right now.

        ``take()`` is called lazily, just before the previous message's final dot is
        written (so a job is never held longer than needed), and again after a None
        whenever the pipeline is about to end (a job queued meanwhile continues the
        run). Once the connection broke, it is called until it returns None and each job
        it returns then gets the connection's error: a scheduler that would rather keep
        its jobs for another connection returns None when :attr:`is_connected` is false,
        as the pool does. Yields ``(job, outcome)`` in the order taken, as
        :meth:`send_many` does.
        """
        queue: deque[list[Any]] = deque()
        return self._pipeline(self._puller(take, _job_parts, None, queue), queue, acquire=True)

    def _puller(
        self, take: Callable[[], Any], parts: Callable[[Any], tuple[Any, Any]], end: Any,
        queue: deque[list[Any]],
    ) -> Callable[[], list[Any] | None]:
        """The pipeline's ``pull`` over the items ``take()`` returns until ``end``:
        ``parts(item)`` is an item's ``(message, envelope)``. Each valid one becomes
        ``[item, _PENDING, Transaction]``; an invalid one ``[item, error, None]``, and
        the next item is taken (see :meth:`_pipeline`)."""
        caps, lmtp = self.capabilities, self.options.lmtp
        dkim, secure, chunking = self.options.dkim_signer, self.secure, self._bdat

        def pull() -> list[Any] | None:
            while (item := take()) is not end:
                message, envelope = parts(item)
                try:
                    entry = [item, _PENDING, Transaction(message, envelope, caps, lmtp,
                                                         dkim, secure, chunking)]
                except Exception as exc:  # noqa: BLE001 - reported per message
                    queue.append([item, exc, None])
                    continue
                queue.append(entry)
                return entry
            return None

        return pull


def _envelope_accepted(replies: list[RawReply], rset: bool) -> bool:
    """Replies to ``[RSET]``, MAIL, RCPT...: may the data follow (slow start)?"""
    for raw in replies:
        if raw[0] == 421 or not positive_or_negative(raw[0]):
            return False  # fatal: the transaction's result raises it
    if rset:
        if replies[0][0] != 250:
            return False
        replies = replies[1:]
    return replies[0][0] == 250 and any(200 <= raw[0] < 300 for raw in replies[1:])


def _maybe(exc: SMTPError) -> SMTPMaybeDelivered:
    """``exc`` as the outcome of a message whose end was written and not answered."""
    if isinstance(exc, SMTPMaybeDelivered):
        return exc
    maybe = SMTPMaybeDelivered(
        f"the connection failed after the message was sent: {exc.message}", reply=exc.reply)
    maybe.__cause__ = exc
    return maybe


async def _aiter(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    """A sync chunk stream as an async one (the BDAT writer reads both alike)."""
    for chunk in chunks:
        yield chunk


class _Drive:
    """The pipeline handed to a send() caller: it drives it until its own outcome."""

    __slots__ = ("agen", "queue")

    def __init__(self, agen: AsyncIterator[tuple[Any, Any]], queue: deque[list[Any]]) -> None:
        self.agen = agen
        self.queue = queue
