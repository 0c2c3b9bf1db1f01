"""Sans-IO SMTP/LMTP server session: command lines in, replies and hook calls out.

Theory of operation
-------------------
A :class:`ServerSession` is the protocol logic of one client connection. It never sees a
socket, a loop or a future; the asyncio layer (``fastsmtp.server``) moves bytes between the
socket, the core's ``ServerReader`` and this class:

* ``receive_line(status, line)`` takes one command line as ``ServerReader.next_line``
  returns it; ``data_received(chunk, flags)`` takes one DATA chunk as ``next_data``
  returns it, and ``chunk_received(chunk, flags)`` one piece of a BDAT chunk.
* They return an :data:`Output`: ``None`` (nothing to send), ``bytes`` (complete reply
  lines to send), an :class:`Action` (a reply to send, then something the IO layer must
  do: ``ACT_DATA`` switch the reader to data mode with ``max_size``; ``ACT_CHUNK`` (a
  :class:`ChunkAction`, no reply) switch it to chunk mode with ``start_chunk(size,
  max_size, first)`` and hand the pieces to ``chunk_received``; ``ACT_STARTTLS`` drop
  buffered bytes, start TLS, then call ``tls_started``; ``ACT_CLOSE`` close), or a
  :class:`HookCall`: the application's handler must be called with ``call.args`` (after
  the server object when ``call.server_arg``); its result goes to ``call.finish(result)``
  (or ``call.fail()`` when it raised or timed out), which returns an :data:`Output` again,
  so calls may chain (``data_chunk`` then ``data_ready``).

Everything the IO layer must do comes back as a return value: the session has no side
channel to poll after a call.

CHUNKING (RFC 3030): ``BDAT <size> [LAST]`` is answered once its ``size`` octets were read,
whatever the verdict (a refused chunk is read all the same: its octets are never taken for
commands). A chunk goes to the same handler paths as DATA's body pieces (``data_chunk`` or
the ``handle_DATA`` buffer), so a handler sees one message however it came; the LAST
chunk gets exactly what the end of DATA gets. A non-LAST chunk gets
``250 2.0.0 OK: <size> octets received``. After a chunk of a transaction failed, every
later one up to LAST gets the same refusal; the transaction ends with the reply to LAST.

Handler hooks are looked up once, in :class:`ServerConfig`; a missing hook costs nothing
(the default reply is a precomputed bytes object). Hooks have aiosmtpd's names and
arguments; see ``fastsmtp.server`` for the handler protocol. A hook that returns ``None``
means "default handling", as if the hook did not exist.

Every reply that can be computed ahead is a module constant, so the common path (MAIL,
RCPT, DATA without hooks) allocates almost nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias, overload

from .._codec import core
from .._syntax import COMMAND_CONTROL_BYTES, MAX_PATH, is_param_keyword, xtext_decode
from .auth import (
    AUTH_MECHANISMS,
    XOAUTH2_FAILURE,
    SaslChallenge,
    SaslError,
    SaslExchange,
)
from .config import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, ServerConfig, peer_in
from .replies import (
    R_354,
    R_ALREADY_AUTH,
    R_AUTH_FAIL,
    R_AUTH_IN_MAIL,
    R_AUTH_MECH,
    R_AUTH_NEEDS_TLS,
    R_AUTH_OK,
    R_BAD_DSN,
    R_BAD_PARAM,
    R_BAD_UTF8,
    R_BARE_EOL,
    R_BARE_EOL_DATA,
    R_BYE,
    R_CTL,
    R_DATA_AFTER_BDAT,
    R_DATA_BINARYMIME,
    R_DATA_OK,
    R_IN_MAIL,
    R_LINE_TOO_LONG,
    R_LOCAL_ERROR,
    R_MAIL_OK,
    R_NEED_AUTH,
    R_NEED_HELO,
    R_NEED_LHLO,
    R_NEED_MAIL,
    R_NEED_RCPT,
    R_NEED_TLS,
    R_NESTED_MAIL,
    R_NO_ARGS,
    R_NO_VALID_RCPT,
    R_NON_ASCII,
    R_NOT_AUTHORIZED,
    R_NOT_IMPL,
    R_OK,
    R_RCPT_OK,
    R_STARTTLS,
    R_SYNTAX_AUTH,
    R_SYNTAX_BDAT,
    R_SYNTAX_EHLO,
    R_SYNTAX_HELO,
    R_SYNTAX_LHLO,
    R_SYNTAX_MAIL,
    R_SYNTAX_RCPT,
    R_SYNTAX_VRFY,
    R_SYNTAX_XCLIENT,
    R_SYNTAX_XFORWARD,
    R_TLS_ACTIVE,
    R_TLS_UNAVAILABLE,
    R_TOO_BIG,
    R_TOO_MANY_RCPT,
    R_VRFY,
    R_XFORWARD_OK,
    chunk_received,
    encode_reply,
)

__all__ = [
    "ACT_DATA",
    "ACT_STARTTLS",
    "ACT_CLOSE",
    "ACT_CHUNK",
    "Action",
    "ChunkAction",
    "Output",
    "Envelope",
    "HookCall",
    "ServerSession",
    "Session",
]

log = logging.getLogger("fastsmtp.server")

#: :attr:`Action.kind`: send the reply, then read the message data (``start_data``).
ACT_DATA = 1
#: :attr:`Action.kind`: send the reply, drop buffered input, start TLS, call ``tls_started``.
ACT_STARTTLS = 2
#: :attr:`Action.kind`: send the reply, then close the connection.
ACT_CLOSE = 3
#: :attr:`Action.kind` of a :class:`ChunkAction`: read a BDAT chunk (``start_chunk``).
ACT_CHUNK = 4


class Action:
    """A reply after which the connection changes: the IO layer sends ``reply``, then acts.

    Attributes:
        kind: :data:`ACT_DATA`, :data:`ACT_CHUNK` (a :class:`ChunkAction`), :data:`ACT_STARTTLS`
            or :data:`ACT_CLOSE`.
        reply: The reply lines to send first (wire bytes).
    """

    __slots__ = ("kind", "reply")

    def __init__(self, kind: int, reply: bytes) -> None:
        self.kind = kind
        self.reply = reply

    def __repr__(self) -> str:
        return f"Action({self.kind}, {self.reply!r})"


class ChunkAction(Action):
    """``BDAT <size>`` was read: the next ``size`` octets are a chunk (no reply yet).

    The IO layer calls ``ServerReader.start_chunk(size, max_size, first)`` and gives every
    piece ``next_data`` returns to :meth:`ServerSession.chunk_received`, which answers
    the BDAT command once the chunk's last octet was read.

    Attributes:
        size: The chunk's octets.
        max_size: The limit of the message's total (0: none; 0 too for a refused chunk,
            whose octets are dropped whatever their number).
        first: The chunk starts the message (the reader's running total restarts).
    """

    __slots__ = ("size", "max_size", "first")

    def __init__(self, size: int, max_size: int, first: bool) -> None:
        super().__init__(ACT_CHUNK, b"")
        self.size = size
        self.max_size = max_size
        self.first = first

    def __repr__(self) -> str:
        return f"ChunkAction({self.size}, {self.max_size}, {self.first})"


def _close(reply: str) -> Action:
    return Action(ACT_CLOSE, reply.encode("utf-8"))


# The fixed actions are built once: the per-message path (DATA) allocates none.
_START_DATA = Action(ACT_DATA, R_354)
_START_TLS = Action(ACT_STARTTLS, R_STARTTLS)
_BYE = Action(ACT_CLOSE, R_BYE)

#: Failed AUTH attempts tolerated before the session is closed (421): slows brute force.
MAX_AUTH_FAILURES = 5

_LINE_OK = core.LINE_OK
_LINE_BARE_EOL = core.LINE_BARE_EOL
_LINE_TOO_LONG = core.LINE_TOO_LONG
_DATA_END = core.DATA_END
_DATA_BARE_EOL = core.DATA_BARE_EOL
_DATA_TOO_BIG = core.DATA_TOO_BIG

# Bytes a browser or proxy sends: an HTTP request on the SMTP port is never a mail client.
_HTTP_VERBS = frozenset((b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"OPTIONS"))

# Commands allowed before STARTTLS with require_tls.
_BEFORE_TLS = frozenset((b"EHLO", b"HELO", b"LHLO", b"STARTTLS", b"NOOP", b"QUIT", b"RSET"))

#: The empty, read-only mapping optional attributes default to: a class attribute, so an
#: envelope or session that never uses them costs nothing to create.
_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: Longest ENVID (RFC 3461 section 4.4: 100 characters, before xtext decoding).
MAX_ENVID = 100
#: Longest ORCPT value (RFC 3461 section 4.2: 500 characters).
MAX_ORCPT = 500
_NOTIFY = frozenset(("SUCCESS", "FAILURE", "DELAY"))
#: Most digits of a BDAT chunk size (RFC 3030 sets none): 18 digits always fit a 64-bit
#: size, so a size is never too large for the reader, yet allows any real message.
MAX_CHUNK_DIGITS = 18
# A CR not before an LF, or an LF not after a CR (in a chunk: the reader rewrites nothing).
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# Postfix's placeholders for a value the proxy could not get.
_UNAVAILABLE = frozenset(("[UNAVAILABLE]", "[TEMPUNAVAIL]"))


class Session:
    """What the server knows about one client connection (aiosmtpd's attribute names).

    Attributes:
        peer: The client's address as ``transport.get_extra_info("peername")`` gives it.
        ssl: TLS details once TLS is active (``cipher``, ``peercert``, ``ssl_object``,
            ``version``), else None.
        host_name: The name the client gave in HELO/EHLO/LHLO.
        extended_smtp: True after EHLO/LHLO.
        authenticated: True after a successful AUTH, else None.
        auth_data: What the authenticator returned in ``AuthResult.auth_data`` (or the
            decoded credentials).
        loop: The event loop serving the connection (set by the IO layer).
        proxy_data: The :class:`~fastsmtp.server.proxy.ProxyHeader` a trusted proxy
            sent (``proxy_protocol``), else None; ``peer`` is then the client it named.
        xclient: The XCLIENT attributes a trusted client sent (``xclient_trusted``), as
            a read-only mapping of upper-case names to decoded values (None for
            ``[UNAVAILABLE]``); empty when none were sent.
    """

    #: Empty until XCLIENT: a class attribute, so a session costs nothing more to create.
    xclient: Mapping[str, str | None] = _EMPTY

    def __init__(self, peer: Any = None, loop: Any = None) -> None:
        self.peer = peer
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.authenticated: bool | None = None
        self.auth_data: Any = None
        self.loop = loop
        self.proxy_data: Any = None

    def __repr__(self) -> str:
        return f"<Session peer={self.peer!r} host_name={self.host_name!r}>"


class Envelope:
    """One mail transaction (aiosmtpd's attribute names); a new one after every reset.

    Attributes:
        mail_from: The reverse-path (``""`` for the null sender ``<>``).
        mail_options: MAIL parameters, e.g. ``["SIZE=1024", "BODY=8BITMIME"]``.
        smtp_utf8: True when MAIL carried ``SMTPUTF8``.
        rcpt_tos: The accepted forward-paths.
        rcpt_options: RCPT parameters of all recipients.
        content: The message (bytes, CRLF line endings, dots unstuffed); set only for a
            ``handle_DATA`` hook (never for streaming handlers, nor without a DATA hook).
        original_content: The same bytes (aiosmtpd keeps the undecoded form here).
        dsn_ret: With ``dsn=True``: MAIL's ``RET`` (``"FULL"`` or ``"HDRS"``), else None.
        dsn_envid: With ``dsn=True``: MAIL's ``ENVID``, xtext-decoded, else None.
        rcpt_dsn: With ``dsn=True``: for each accepted recipient that gave DSN
            parameters, ``{"notify": ["SUCCESS", ...], "orcpt": ("rfc822", "a@b")}``
            (a key only when given; ORCPT's address xtext-decoded).
        xforward: The XFORWARD attributes a trusted client sent for this transaction
            (``xforward_trusted``), upper-case names to decoded values (None for
            ``[UNAVAILABLE]``); empty when none were sent.
    """

    # Class attributes: an envelope that never uses them costs nothing more to create
    # (one envelope per message), and the read-only default cannot be shared by mistake.
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    rcpt_dsn: Mapping[str, dict[str, Any]] = _EMPTY
    xforward: Mapping[str, str | None] = _EMPTY

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.content: bytes | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []

    def __repr__(self) -> str:
        return f"<Envelope from={self.mail_from!r} to={self.rcpt_tos!r}>"


def _no_result(_: Any) -> None:
    return None


def _no_reply() -> None:
    return None


class HookCall:
    """A handler call the IO layer must make; see the module docstring.

    Attributes:
        name: The hook's name, for logs (``"handle_DATA"``).
        func: The callable (sync or async).
        args: Its arguments, after the server object when ``server_arg`` is true.
        server_arg: Whether the server object goes first (aiosmtpd hooks).
        finish: Called with the hook's result; returns an :data:`Output` (maybe another HookCall).
        fail: Called instead when the hook raised or timed out.
    """

    __slots__ = ("name", "func", "args", "server_arg", "finish", "fail")

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        finish: Callable[[Any], Any],
        fail: Callable[[], Any],
        server_arg: bool = True,
    ) -> None:
        self.name = name
        self.func = func
        self.args = args
        self.finish = finish
        self.fail = fail
        self.server_arg = server_arg

    def with_fail(self, fail: Callable[[], Any]) -> HookCall:
        """Replace the failure continuation; return self (for chaining)."""
        self.fail = fail
        return self

    def then(self, call: HookCall | None) -> HookCall:
        """Make ``call`` follow this one whatever its outcome; return self.

        For hooks whose result nobody waits for (``data_abort`` then ``handle_CLOSE``):
        one chain, so the second never runs before the first has finished.
        """
        if call is not None:
            self.finish = lambda _: call
            self.fail = lambda: call
        return self


#: What the session returns for every input; see the module docstring.
Output: TypeAlias = "bytes | Action | HookCall | None"


def _parse_path(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<addr> params`` into the address and its parameters, or None."""
    n = len(keyword)
    if arg[:n].upper() != keyword:
        return None
    rest = arg[n:].lstrip(" ")
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        addr = rest[1:end]
        params = rest[end + 1 :]
        if params and params[0] != " ":
            return None
        if addr.startswith("@"):  # an obsolete source route: <@a,@b:user@c>
            colon = addr.find(":")
            if colon < 0:
                return None
            addr = addr[colon + 1 :]
    else:
        addr, _, params = rest.partition(" ")
    if "<" in addr or ">" in addr or (" " in addr and '"' not in addr) or len(addr) > MAX_PATH:
        return None
    return addr, params.split()


def _parse_bdat(arg: bytes) -> tuple[int, bool] | None:
    """``<size> [LAST]`` (RFC 3030: ``"BDAT" SP chunk-size [SP end-marker]``), or None."""
    words = arg.split(b" ")
    size = words[0]
    if len(words) > 2 or not size.isdigit() or len(size) > MAX_CHUNK_DIGITS:
        return None
    last = len(words) == 2
    if last and words[1].upper() != b"LAST":
        return None
    return int(size), last


class _Chunked:
    """The CHUNKING state of one transaction, None until it needs one (one store resets it).

    Attributes:
        seen: A BDAT came in this transaction (DATA is then refused).
        started: The message's data began (``start_data`` was called; ``data_abort``
            is owed if it does not end).
        failed: The refusal every later chunk gets once one failed, else None.
        binary: MAIL said ``BODY=BINARYMIME`` (DATA is refused; any octet goes).
        cr: The last piece ended with a CR (its LF may start the next one).
    """

    __slots__ = ("seen", "started", "failed", "binary", "cr")

    def __init__(self, binary: bool = False) -> None:
        self.seen = False
        self.started = False
        self.failed: bytes | None = None
        self.binary = binary
        self.cr = False

    def bare_eol(self, piece: bytes, end: bool) -> bool:
        """Whether ``piece`` (the next octets of the message) holds a bare CR or LF.

        Pieces split anywhere, a CRLF included; ``end``: no octet follows this piece.
        """
        if self.cr and piece:
            if piece[0] != 10:
                return True
            piece = piece[1:]
            self.cr = False
        if piece[-1:] == b"\r":
            self.cr = True
            piece = piece[:-1]
        return (end and self.cr) or _BARE_EOL.search(piece) is not None


class ServerSession:
    """The state machine of one SMTP/LMTP server connection; see the module docstring.

    Args:
        config: The server's :class:`ServerConfig`.
        peer: The client address (``session.peer``).
        tls: True when the connection is already TLS (implicit TLS).
        loop: Stored in ``session.loop`` for handlers that expect it.
    """

    def __init__(self, config: ServerConfig, peer: Any = None, tls: bool = False, loop: Any = None):
        self.config = config
        self.tls = tls
        self.closing = False
        self._loop = loop
        self._bad_commands = 0
        self._auth_failures = 0
        self._unauthenticated = 0
        self._close_reported = False
        self.session = Session(peer, loop)
        # Trust is decided once, by the connection's peer (after PROXY: the real client).
        self._xclient_ok = bool(config.xclient_trusted) and peer_in(config.xclient_trusted, peer)
        self._xforward_ok = bool(config.xforward_trusted) and peer_in(config.xforward_trusted, peer)
        # One test per command line covers every gate (require_tls, the unauthenticated
        # command cap); without them the line pays that one test only.
        self._gated = config.require_tls or bool(config.max_unauthenticated_commands)
        # The BDAT chunk being read: its size, LAST, and its refusal (None: accepted).
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_refusal: bytes | None = None
        self._reset_connection_state()
        dispatch: dict[bytes, Callable[[bytes], Output]] = {
            b"MAIL": self._cmd_mail,
            b"RCPT": self._cmd_rcpt,
            b"DATA": self._cmd_data,
            b"RSET": self._cmd_rset,
            b"NOOP": self._cmd_noop,
            b"QUIT": self._cmd_quit,
            b"VRFY": self._cmd_vrfy,
            b"HELP": self._cmd_help,
            b"EXPN": self._cmd_not_implemented,
            b"STARTTLS": self._cmd_starttls,
            b"AUTH": self._cmd_auth,
        }
        if config.lmtp:
            dispatch[b"LHLO"] = self._cmd_lhlo
        else:
            dispatch[b"HELO"] = self._cmd_helo
            dispatch[b"EHLO"] = self._cmd_ehlo
        if config.chunking:
            dispatch[b"BDAT"] = self._cmd_bdat
        if config.xclient_trusted:
            dispatch[b"XCLIENT"] = self._cmd_xclient
        if config.xforward_trusted:
            dispatch[b"XFORWARD"] = self._cmd_xforward
        for name in config.disabled_commands:
            dispatch[name.encode("ascii")] = self._cmd_not_implemented
        self._dispatch = dispatch

    # -- state ----------------------------------------------------------------------

    def _reset_connection_state(self) -> None:
        self._greeted = False
        self._sasl: SaslExchange | None = None
        self._xoauth2_failed = False
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.envelope = Envelope()
        self._mail = False
        self._rcpts = 0
        self._chunks: list[bytes] = []
        self._data_failed = False
        self._chunked: _Chunked | None = None

    @property
    def in_transaction(self) -> bool:
        """True between an accepted MAIL and the end of its transaction."""
        return self._mail

    def greeting(self) -> bytes:
        """The 220 greeting to send when the connection opens."""
        return self.config.greeting

    def shutdown(self, idle: bool = True) -> Action | None:
        """The server is closing: return the 421 to send now, or None to let a transaction end.

        A session in a transaction finishes it; its next command then gets the 421.

        Args:
            idle: No hook is running and no message is being read (the IO layer knows);
                when False the session only remembers that it is closing.
        """
        self.closing = True
        if self._mail or not idle:
            return None
        return _close(self.config.r_closing)

    def timed_out(self) -> Action:
        """The 421 to send when the client exceeded a time limit, then close."""
        return _close(self.config.r_timeout)

    def tls_started(self, ssl_info: dict[str, Any]) -> None:
        """TLS is up after STARTTLS: forget everything said before it (RFC 3207 4.2)."""
        self.tls = True
        old = self.session
        self.session = Session(old.peer, self._loop)
        self.session.ssl = ssl_info
        # What the proxy or XCLIENT said about the client is not the client's own
        # plaintext claim: it stays, as the peer does.
        self.session.proxy_data = old.proxy_data
        if old.xclient:
            self.session.xclient = old.xclient
        self._reset_connection_state()

    def abort_message(self, in_data: bool) -> HookCall | None:
        """The client timed out or went away: a message in progress is aborted.

        Args:
            in_data: The reader is in data mode (``ServerReader.in_data``: the reader alone
                keeps that state). A message refused or aborted already ended its
                transaction, so it is not aborted twice.
        """
        if not self._mail:
            return None
        chunked = self._chunked
        if chunked is not None and chunked.seen:
            # Between chunks too: the handler got part of a message that will not end.
            if not chunked.started or chunked.failed is not None:
                return None
        elif not in_data:
            return None
        return self._abort_call(None)

    def closed(self, in_data: bool) -> HookCall | None:
        """The connection is closed: the hooks to run, as one chain (None when there are none).

        First ``data_abort`` for a message in progress (see :meth:`abort_message`), then
        ``handle_CLOSE`` (at most once), the seed's ``close`` event. Their results are
        ignored, their failures only logged: the client is gone, nobody is answered.
        """
        abort = self.abort_message(in_data)
        close = None
        hook = self.config.hook_close
        if hook is not None and not self._close_reported:
            self._close_reported = True
            # After the abort: the envelope is the one left once the message was dropped.
            close = HookCall("handle_CLOSE", hook, (self.session, self.envelope), _no_result, _no_reply)
        return close if abort is None else abort.then(close)

    def loggable(self, line: bytes) -> bytes:
        """``line`` as it may be logged, before it is passed to :meth:`receive_line`.

        SASL responses (passwords, tokens, digests) and everything after an AUTH
        mechanism (the initial response) are masked; so is a mechanism that is not one
        we know (a confused client may have put its secret there).
        """
        if self._sasl is not None or self._xoauth2_failed:
            return b"<hidden>"
        parts = line.split(None, 2)
        if not parts or parts[0].upper() != b"AUTH":
            return line
        mechanism = parts[1].upper() if len(parts) > 1 else b""
        if mechanism.decode("ascii", "replace") not in AUTH_MECHANISMS:
            return line[:4] + b" <hidden>"
        return b" ".join(parts[:2]) + (b" <hidden>" if len(parts) > 2 else b"")

    # -- command lines --------------------------------------------------------------

    def receive_line(self, status: int, line: bytes) -> Output:
        """Handle one command line from ``ServerReader.next_line``."""
        if status != _LINE_OK:
            if status == _LINE_BARE_EOL:
                if self.config.reject_bare_newline:
                    if line[:5].upper() == b"BDAT " and self.config.chunking:
                        return Action(ACT_CLOSE, R_BARE_EOL)  # its chunk cannot be framed
                    return self._bad(R_BARE_EOL)
            elif status == _LINE_TOO_LONG:
                self._sasl = None
                return self._bad(R_LINE_TOO_LONG)
            else:  # LINE_RUNAWAY: the reader gives up; so do we.
                return _close(self.config.r_runaway)
        if self._sasl is not None:
            return self._auth_step(line)
        if self._xoauth2_failed:
            # The client acknowledges the XOAUTH2 error 334 with an empty line.
            self._xoauth2_failed = False
            return self._auth_failed(None)
        sp = line.find(b" ")
        verb = (line if sp < 0 else line[:sp]).upper()
        if self.closing and not self._mail and verb != b"QUIT":
            return _close(self.config.r_closing)
        if COMMAND_CONTROL_BYTES.search(line) is not None:
            if verb == b"BDAT" and self.config.chunking:
                return Action(ACT_CLOSE, R_CTL)  # its chunk cannot be framed
            return self._bad(R_CTL)
        command = self._dispatch.get(verb)
        if command is None:
            if verb in _HTTP_VERBS and not self._greeted:
                log.info("%r sent an HTTP request; closing", self.session.peer)
                return _close(self.config.r_bad_cmds)
            name = verb[:32].decode("ascii", "replace")
            return self._bad(f'500 5.5.2 Error: command "{name}" not recognized\r\n'.encode())
        if self._gated:
            refusal = self._gate(verb)
            if refusal is not None:
                if refusal.__class__ is bytes and verb == b"BDAT" and self.config.chunking:
                    # Refused, but its chunk is still read: its octets are no commands.
                    return self._cmd_bdat(b"" if sp < 0 else line[sp + 1 :], refusal)
                return refusal
        return command(b"" if sp < 0 else line[sp + 1 :])

    def _gate(self, verb: bytes) -> bytes | Action | None:
        """The refusal for a known command before TLS or AUTH, or None to run it."""
        config = self.config
        if config.require_tls and not self.tls and verb not in _BEFORE_TLS:
            return R_NEED_TLS
        limit = config.max_unauthenticated_commands
        if limit and not self.session.authenticated and verb != b"AUTH":
            # smtp-server's maxAllowedUnauthenticatedCommands: a client that never logs
            # in is not allowed to probe for ever.
            self._unauthenticated += 1
            if self._unauthenticated > limit:
                return _close(config.r_unauth)
        return None

    def _bad(self, reply: bytes) -> bytes | Action:
        self._bad_commands += 1
        if self._bad_commands > self.config.max_bad_commands:
            return _close(self.config.r_bad_cmds)
        return reply

    def _call(
        self,
        name: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        finish: Callable[[Any], Any],
        server_arg: bool = True,
    ) -> HookCall:
        return HookCall(name, func, args, finish, self._hook_failed, server_arg)

    def _hook_failed(self) -> bytes:
        return R_LOCAL_ERROR

    def _reply_or_error(self, result: Any, default: bytes) -> bytes:
        if result is None:
            return default
        wire = encode_reply(result)
        if wire is None:
            log.error("handler returned an invalid reply %r; answering 451", result)
            return R_LOCAL_ERROR
        return wire

    # HELO / EHLO / LHLO

    def _hello_arg(self, arg: bytes) -> str | None:
        host = arg.strip()
        if not host:
            return None
        return host.decode("utf-8", "replace")

    def _cmd_helo(self, arg: bytes) -> bytes | HookCall:
        host = self._hello_arg(arg)
        if host is None:
            return R_SYNTAX_HELO
        if self._chunked is not None:
            abort = self._drop_chunks()
            self._reset_transaction()
            return self._after(abort, self._cmd_helo(arg))  # type: ignore[no-any-return]
        self._reset_transaction()
        self.session.extended_smtp = False
        hook = self.config.hook_helo
        if hook is None:
            self._hello_done(host, False)
            return self.config.r_helo
        def finish(result: Any) -> bytes:
            return self._after_hello(host, False, self._reply_or_error(result, self.config.r_helo))

        return self._call("handle_HELO", hook, (self.session, self.envelope, host), finish)

    def _cmd_ehlo(self, arg: bytes) -> bytes | HookCall:
        if self.config.disable_ehlo:
            return R_NOT_IMPL
        return self._extended_hello(arg, R_SYNTAX_EHLO)

    def _cmd_lhlo(self, arg: bytes) -> bytes | HookCall:
        return self._extended_hello(arg, R_SYNTAX_LHLO)

    def _extended_hello(self, arg: bytes, syntax: bytes) -> bytes | HookCall:
        host = self._hello_arg(arg)
        if host is None:
            return syntax
        if self._chunked is not None:
            abort = self._drop_chunks()
            self._reset_transaction()
            return self._after(abort, self._extended_hello(arg, syntax))  # type: ignore[no-any-return]
        self._reset_transaction()
        lines, wire = self.config.ehlo_lines(self.tls, self._xclient_ok, self._xforward_ok)
        hook = self.config.hook_ehlo
        if hook is None:
            self._hello_done(host, True)
            return wire

        def finish(result: Any) -> bytes:
            if result is None:
                reply = wire
            elif isinstance(result, (list, tuple)):
                reply = self._reply_or_error("\n".join(map(str, result)), wire)
            else:
                reply = self._reply_or_error(result, wire)
            return self._after_hello(host, True, reply)

        return self._call("handle_EHLO", hook, (self.session, self.envelope, host, list(lines)), finish)

    def _after_hello(self, host: str, extended: bool, reply: bytes) -> bytes:
        if reply[:1] == b"2":
            self._hello_done(host, extended)
        return reply

    def _hello_done(self, host: str, extended: bool) -> None:
        self._greeted = True
        self.session.host_name = host
        self.session.extended_smtp = extended

    # MAIL / RCPT

    def _need_hello(self) -> bytes | None:
        if not self._greeted:
            return R_NEED_LHLO if self.config.lmtp else R_NEED_HELO
        if self.config.require_auth and not self.session.authenticated:
            return R_NEED_AUTH
        return None

    def _cmd_mail(self, arg: bytes) -> Output:
        refusal = self._need_hello()
        if refusal is not None:
            return refusal
        if self._mail:
            return R_NESTED_MAIL
        try:
            text = arg.decode("utf-8")
        except UnicodeDecodeError:
            return R_BAD_UTF8
        parsed = _parse_path(text, "FROM:")
        if parsed is None:
            return self._bad(R_SYNTAX_MAIL)
        address, params = parsed
        if params and not self.session.extended_smtp:
            return R_SYNTAX_MAIL
        config = self.config
        envelope = self.envelope
        options: list[str] = []
        smtputf8 = binary = False
        ret = envid = None
        for param in params:
            key, eq, value = param.partition("=")
            key = key.upper()
            if not is_param_keyword(key) or (eq and not value):
                return R_SYNTAX_MAIL
            # A hidden extension is refused as if it did not exist (hide_size, ...).
            if key == "SIZE" and not config.hide_size:
                if not value.isdigit():
                    return R_SYNTAX_MAIL
                if config.max_size and int(value) > config.max_size:
                    return R_TOO_BIG
            elif key == "BODY" and not config.hide_8bitmime:
                body = value.upper()
                if body == "BINARYMIME" and config.binarymime:
                    binary = True  # RFC 3030 section 3: BDAT only
                elif body not in ("7BIT", "8BITMIME"):
                    return R_BAD_PARAM
            elif key == "SMTPUTF8" and config.smtputf8 and not eq:
                smtputf8 = True
            elif key == "AUTH" and config.auth_offered(self.tls):
                pass  # RFC 4954 section 5: accepted and ignored (we relay nothing)
            elif key == "RET" and config.dsn:
                if ret is not None or value.upper() not in ("FULL", "HDRS"):
                    return R_BAD_DSN
                ret = value.upper()
            elif key == "ENVID" and config.dsn:
                if envid is not None or len(value) > MAX_ENVID:
                    return R_BAD_DSN
                try:
                    envid = xtext_decode(value)
                except ValueError:
                    return R_BAD_DSN
            else:
                return R_BAD_PARAM
            options.append(f"{key}{eq}{value}")
        if not smtputf8 and not address.isascii():
            return R_NON_ASCII
        if ret is not None or envid is not None:
            # Set before handle_MAIL runs (it may want them); a MAIL the hook refuses
            # takes them back (see finish).
            envelope.dsn_ret = ret
            envelope.dsn_envid = envid
        envelope.smtp_utf8 = smtputf8
        hook = config.hook_mail
        if hook is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            self._mail = True
            if binary:
                self._chunked = _Chunked(binary=True)
            return R_MAIL_OK

        def finish(result: Any) -> bytes:
            if result is None:
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                reply = R_MAIL_OK
            else:
                reply = self._reply_or_error(result, R_MAIL_OK)
            if reply[:1] == b"2":
                self._mail = True
                if binary:
                    self._chunked = _Chunked(binary=True)
            elif ret is not None or envid is not None:
                envelope.dsn_ret = envelope.dsn_envid = None
            return reply

        return self._call("handle_MAIL", hook, (self.session, envelope, address, options), finish)

    def _cmd_rcpt(self, arg: bytes) -> Output:
        refusal = self._need_hello()
        if refusal is not None:
            return refusal
        if not self._mail:
            return R_NEED_MAIL
        try:
            text = arg.decode("utf-8")
        except UnicodeDecodeError:
            return R_BAD_UTF8
        parsed = _parse_path(text, "TO:")
        if parsed is None or not parsed[0]:
            return self._bad(R_SYNTAX_RCPT)
        address, params = parsed
        dsn: dict[str, Any] | None = None
        if params:
            options: list[str] = []
            dsn = self._rcpt_params(params, options)
            if dsn.__class__ is bytes:
                return dsn
        envelope = self.envelope
        if not envelope.smtp_utf8 and not address.isascii():
            return R_NON_ASCII
        config = self.config
        if config.max_recipients and self._rcpts >= config.max_recipients:
            return R_TOO_MANY_RCPT
        hook = config.hook_rcpt
        if hook is None:
            envelope.rcpt_tos.append(address)
            self._rcpts += 1
            if dsn:
                self._add_rcpt_dsn(address, dsn)
            return R_RCPT_OK

        def finish(result: Any) -> bytes:
            if result is None:
                envelope.rcpt_tos.append(address)
                reply = R_RCPT_OK
            else:
                reply = self._reply_or_error(result, R_RCPT_OK)
            if reply[:1] == b"2":
                self._rcpts += 1
                if dsn:
                    self._add_rcpt_dsn(address, dsn)
            return reply

        rcpt_options = options if params else []
        return self._call("handle_RCPT", hook, (self.session, envelope, address, rcpt_options), finish)

    def _rcpt_params(self, params: list[str], options: list[str]) -> Any:
        """Check RCPT's parameters: the DSN ones (``dsn=True``) as a dict, else a refusal."""
        dsn: dict[str, Any] = {}
        refusal = None
        for param in params:
            key, eq, value = param.partition("=")
            key = key.upper()
            if not is_param_keyword(key) or (eq and not value):
                return R_SYNTAX_RCPT
            if refusal is not None:
                continue  # a later parameter may still be a syntax error (501 first)
            if not self.config.dsn or key not in ("NOTIFY", "ORCPT"):
                refusal = R_BAD_PARAM  # no other RCPT extension exists here
                continue
            if key.lower() in dsn:
                refusal = R_BAD_DSN  # given twice
                continue
            if key == "NOTIFY":
                notify = value.upper().split(",")
                # NEVER stands alone; the others may be combined, each once.
                if notify != ["NEVER"] and (
                    not _NOTIFY.issuperset(notify) or len(set(notify)) != len(notify)
                ):
                    refusal = R_BAD_DSN
                    continue
                dsn["notify"] = notify
            else:
                kind, semi, original = value.partition(";")
                if not semi or not is_param_keyword(kind) or not original or len(value) > MAX_ORCPT:
                    refusal = R_BAD_DSN
                    continue
                try:
                    dsn["orcpt"] = (kind.lower(), xtext_decode(original))
                except ValueError:
                    refusal = R_BAD_DSN
                    continue
            options.append(f"{key}={value}")
        return refusal if refusal is not None else dsn

    def _add_rcpt_dsn(self, address: str, dsn: dict[str, Any]) -> None:
        envelope = self.envelope
        if envelope.rcpt_dsn is _EMPTY:
            envelope.rcpt_dsn = {}
        envelope.rcpt_dsn[address] = dsn  # type: ignore[index]

    # DATA

    def _cmd_data(self, arg: bytes) -> Output:
        refusal = self._need_hello()
        if refusal is not None:
            return refusal
        if arg:
            return R_NO_ARGS
        if not self._mail:
            return R_NEED_MAIL
        if not self._rcpts:
            return R_NEED_RCPT
        chunked = self._chunked
        if chunked is not None:
            return R_DATA_AFTER_BDAT if chunked.seen else R_DATA_BINARYMIME
        config = self.config
        if config.streaming and config.hook_start_data is not None:
            return self._call(
                "start_data",
                config.hook_start_data,
                (self.session, self.envelope),
                self._start_data_done,
                server_arg=False,
            )
        return self._begin_data()

    def _start_data_done(self, result: Any) -> bytes | Action:
        if result is not None:
            # start_data may refuse the message before any byte of it is sent.
            reply = self._reply_or_error(result, R_354)
            if reply[:1] != b"3":
                return reply
        return self._begin_data()

    def _begin_data(self) -> Action:
        self._chunks = []
        self._data_failed = False
        return _START_DATA

    def data_received(self, chunk: bytes, flags: int) -> Output:
        """Handle one body chunk from ``ServerReader.next_data``."""
        if flags & _DATA_END:
            return self._data_end(chunk, flags)
        if not chunk or self._data_failed or self._refused(flags):
            return None
        return self._body_piece(chunk, _no_result, self._chunk_failed)

    def _body_piece(
        self, chunk: bytes, done: Callable[[Any], Output], fail: Callable[[], Any]
    ) -> Output:
        """One piece of message data (DATA or BDAT) to the handler: streamed through
        ``data_chunk``, or buffered for ``handle_DATA``. ``done(result)`` is the output
        once it is handled, ``fail()`` the output if ``data_chunk`` raised."""
        config = self.config
        if config.streaming:
            return self._call(
                "data_chunk",
                config.hook_data_chunk,  # type: ignore[arg-type]
                (self.session, self.envelope, chunk),
                done,
                server_arg=False,
            ).with_fail(fail)
        if config.hook_data is not None:
            # Without handle_DATA nobody reads the content: a sink holds no message.
            self._chunks.append(chunk)
        return done(None)

    def _refused(self, flags: int) -> bool:
        return bool(
            flags & _DATA_TOO_BIG
            or (flags & _DATA_BARE_EOL and self.config.reject_bare_newline)
        )

    def _chunk_failed(self) -> None:
        # Keep draining the data; the message is refused with 451 at its end.
        self._data_failed = True
        return None

    def _data_end(self, chunk: bytes, flags: int) -> Output:
        if flags & _DATA_TOO_BIG:
            return self._abort_call(R_TOO_BIG)
        if flags & _DATA_BARE_EOL and self.config.reject_bare_newline:
            return self._abort_call(R_BARE_EOL_DATA)
        if self._data_failed:
            return self._abort_call(R_LOCAL_ERROR)
        config = self.config
        session, envelope = self.session, self.envelope
        if config.streaming:
            ready = self._call(
                "data_ready",
                config.hook_data_ready,  # type: ignore[arg-type]
                (session, envelope),
                self._data_reply,
                server_arg=False,
            ).with_fail(self._data_hook_failed)
            if not chunk:
                return ready
            return self._call(
                "data_chunk",
                config.hook_data_chunk,  # type: ignore[arg-type]
                (session, envelope, chunk),
                lambda _: ready,
                server_arg=False,
            ).with_fail(self._data_hook_failed)
        hook = config.hook_data
        if hook is None:
            return self._data_reply(None)
        chunks = self._chunks
        if chunk:
            chunks.append(chunk)
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        envelope.content = envelope.original_content = content
        return self._call("handle_DATA", hook, (session, envelope), self._data_reply).with_fail(
            self._data_hook_failed
        )

    # BDAT (RFC 3030)

    def _cmd_bdat(self, arg: bytes, refusal: bytes | None = None) -> Output:
        parsed = _parse_bdat(arg)
        if parsed is None:
            # The size is the chunk's only framing: without a valid one nobody knows where
            # its octets end and the next command begins, and reading them as commands
            # would let a message's text be obeyed (command injection). Nothing this
            # client sends can be trusted to line up again: answer and close.
            return Action(ACT_CLOSE, R_SYNTAX_BDAT)
        size, last = parsed
        if refusal is None:
            refusal = self._need_hello()
        first = True
        if refusal is None:
            if not self._mail:
                refusal = R_NEED_MAIL
            else:
                chunked = self._chunked
                if chunked is None:
                    chunked = self._chunked = _Chunked()
                first = not chunked.seen
                chunked.seen = True
                if chunked.failed is None and not self._rcpts:
                    chunked.failed = R_NO_VALID_RCPT
                refusal = chunked.failed
        self._chunk_size = size
        self._chunk_last = last
        self._chunk_refusal = refusal
        return ChunkAction(size, self.config.max_size if refusal is None else 0, first)

    def chunk_received(self, chunk: bytes, flags: int) -> Output:
        """Handle one piece of a BDAT chunk from ``ServerReader.next_data`` (chunk mode)."""
        if self._chunk_refusal is not None:
            return self._chunk_refused() if flags & _DATA_END else None
        chunked = self._chunked
        assert chunked is not None  # an accepted chunk belongs to a transaction
        if not chunked.started:
            # The message's data begins with its first chunk (DATA: with the command).
            chunked.started = True
            config = self.config
            if config.streaming and config.hook_start_data is not None:
                return self._call(
                    "start_data",
                    config.hook_start_data,
                    (self.session, self.envelope),
                    lambda result: self._chunk_started(result, chunk, flags),
                    server_arg=False,
                ).with_fail(lambda: self._chunk_fail(R_LOCAL_ERROR, flags, False))
        return self._chunk_data(chunk, flags)

    def _chunk_started(self, result: Any, chunk: bytes, flags: int) -> Output:
        if result is not None:
            reply = self._reply_or_error(result, R_354)
            if reply[:1] != b"3":
                # start_data refused the message: the handler knows, no data_abort.
                return self._chunk_fail(reply, flags, False)
        return self._chunk_data(chunk, flags)

    def _chunk_data(self, chunk: bytes, flags: int) -> Output:
        if flags & _DATA_TOO_BIG:
            # The reader flags a chunk that takes the message past max_size from its first
            # piece on (the size is declared): refused at once, its octets dropped.
            return self._chunk_fail(R_TOO_BIG, flags, True)
        if self._data_failed:  # a data_chunk hook failed on an earlier piece
            return self._chunk_fail(R_LOCAL_ERROR, flags, True)
        config = self.config
        if config.reject_bare_newline:
            chunked = self._chunked
            assert chunked is not None
            # DATA's policy holds for a text body sent by BDAT too; only BINARYMIME
            # lifts it (RFC 3030 section 3: any octet, no lines).
            if not chunked.binary and chunked.bare_eol(chunk, bool(flags & _DATA_END and self._chunk_last)):
                return self._chunk_fail(R_BARE_EOL_DATA, flags, True)
        if not flags & _DATA_END:
            return self._body_piece(chunk, _no_result, self._chunk_failed) if chunk else None
        if self._chunk_last:
            return self._data_end(chunk, flags)  # exactly what the end of DATA does
        if not chunk:
            return chunk_received(self._chunk_size)
        return self._body_piece(chunk, lambda _: chunk_received(self._chunk_size),
                                lambda: self._chunk_fail(R_LOCAL_ERROR, flags, True))

    def _chunk_fail(self, reply: bytes, flags: int, abort: bool) -> Output:
        """A chunk of the transaction failed: it and every later one up to LAST get ``reply``.

        With ``abort``, a streaming handler is told (``data_abort``) now, once.
        """
        chunked = self._chunked
        assert chunked is not None
        chunked.failed = self._chunk_refusal = reply
        envelope = self.envelope  # before _chunk_refused may reset the transaction
        out = self._chunk_refused() if flags & _DATA_END else None
        config = self.config
        if abort and config.streaming and config.hook_data_abort is not None:
            return HookCall(
                "data_abort",
                config.hook_data_abort,
                (self.session, envelope),
                lambda _: out,
                lambda: out,
                server_arg=False,
            )
        return out

    def _chunk_refused(self) -> bytes:
        """The reply to a refused chunk, read to its end; LAST ends the transaction."""
        reply = self._chunk_refusal
        assert reply is not None
        if self._chunk_last and self._mail:
            reply = self._per_recipient(reply)
            self._reset_transaction()
        return reply

    def _data_hook_failed(self) -> bytes | HookCall:
        return self._abort_call(R_LOCAL_ERROR)

    # A reply in gives a reply (or the abort hook) out; None stays None without the hook.
    @overload
    def _abort_call(self, reply: bytes) -> bytes | HookCall: ...
    @overload
    def _abort_call(self, reply: None) -> HookCall | None: ...
    def _abort_call(self, reply: bytes | None) -> bytes | HookCall | None:
        """End a refused or broken message: tell a streaming handler, then reply."""
        config = self.config
        envelope = self.envelope
        final = self._per_recipient(reply) if reply is not None else None
        self._reset_transaction()
        if config.streaming and config.hook_data_abort is not None:
            return HookCall(
                "data_abort",
                config.hook_data_abort,
                (self.session, envelope),
                lambda _: final,
                lambda: final,
                server_arg=False,
            )
        return final

    def _per_recipient(self, reply: bytes) -> bytes:
        # LMTP (RFC 2033 4.2): one reply per accepted recipient, in RCPT order.
        if self.config.lmtp and self._rcpts > 1:
            return reply * self._rcpts
        return reply

    def _data_reply(self, result: Any) -> bytes:
        rcpts = self._rcpts
        self._reset_transaction()
        if not self.config.lmtp or rcpts <= 1:
            return self._reply_or_error(result, R_DATA_OK) if result is not None else R_DATA_OK
        if isinstance(result, (list, tuple)):
            replies = [self._reply_or_error(r, R_DATA_OK) for r in result]
            if len(replies) != rcpts:
                log.error("LMTP handler returned %d replies for %d recipients", len(replies), rcpts)
                return R_LOCAL_ERROR * rcpts
            return b"".join(replies)
        one = self._reply_or_error(result, R_DATA_OK) if result is not None else R_DATA_OK
        return one * rcpts

    # Simple commands

    def _drop_chunks(self) -> HookCall | None:
        """A new transaction drops the chunks of a BDAT message (RSET, HELO/EHLO/LHLO).

        A streaming handler that got some of them is told (``data_abort``); the returned
        call goes first, then the command's own output (see :meth:`_after`).
        """
        return self.abort_message(False) if self._chunked is not None else None

    @staticmethod
    def _after(abort: HookCall | None, out: Any) -> Any:
        if abort is None:
            return out
        abort.finish = lambda _: out
        abort.fail = lambda: out
        return abort

    def _cmd_rset(self, arg: bytes) -> bytes | HookCall:
        if arg:
            return R_NO_ARGS
        abort = self._drop_chunks()
        self._reset_transaction()
        hook = self.config.hook_rset
        out: bytes | HookCall
        if hook is None:
            out = R_OK
        else:
            out = self._call(
                "handle_RSET", hook, (self.session, self.envelope), lambda r: self._reply_or_error(r, R_OK)
            )
        return self._after(abort, out)  # type: ignore[no-any-return]

    def _cmd_noop(self, arg: bytes) -> bytes | HookCall:
        hook = self.config.hook_noop
        if hook is None:
            return R_OK
        text = arg.decode("utf-8", "replace")
        return self._call(
            "handle_NOOP",
            hook,
            (self.session, self.envelope, text),
            lambda r: self._reply_or_error(r, R_OK),
        )

    def _cmd_quit(self, arg: bytes) -> Output:
        if arg:
            return R_NO_ARGS
        hook = self.config.hook_quit
        if hook is None:
            return _BYE

        def finish(result: Any) -> Action:
            return Action(ACT_CLOSE, self._reply_or_error(result, R_BYE))

        return self._call("handle_QUIT", hook, (self.session, self.envelope), finish)

    def _cmd_vrfy(self, arg: bytes) -> bytes | HookCall:
        text = arg.decode("utf-8", "replace").strip()
        if not text:
            return R_SYNTAX_VRFY
        hook = self.config.hook_vrfy
        if hook is None:
            return R_VRFY
        return self._call(
            "handle_VRFY",
            hook,
            (self.session, self.envelope, text),
            lambda r: self._reply_or_error(r, R_VRFY),
        )

    def _cmd_help(self, arg: bytes) -> bytes:
        return self.config.help

    def _cmd_not_implemented(self, arg: bytes) -> bytes:
        return R_NOT_IMPL

    def _cmd_starttls(self, arg: bytes) -> bytes | Action:
        if arg:
            return R_NO_ARGS
        if self.tls:
            return R_TLS_ACTIVE
        if not self.config.tls_available:
            return R_TLS_UNAVAILABLE
        if self._mail:
            # As Postfix: the handshake would reset a transaction (RFC 3207 4.2) that
            # may have handed part of a message (BDAT chunks) to the handler already.
            return R_IN_MAIL
        return _START_TLS

    # XCLIENT / XFORWARD (Postfix)

    def _x_attributes(
        self, arg: bytes, allowed: tuple[str, ...], syntax: bytes
    ) -> dict[str, str | None] | bytes | Action:
        """Parse ``NAME=value ...`` (xtext values) into upper-case names -> values."""
        try:
            words = arg.decode("ascii").split()
        except UnicodeDecodeError:
            return self._bad(syntax)
        if not words:
            return self._bad(syntax)
        attributes: dict[str, str | None] = {}
        for word in words:
            name, eq, value = word.partition("=")
            name = name.upper()
            if not eq or name not in allowed:
                return self._bad(syntax)
            if value in _UNAVAILABLE:
                attributes[name] = None
                continue
            try:
                decoded = xtext_decode(value)
            except ValueError:
                return self._bad(syntax)
            if name in ("PORT", "DESTPORT") and not (
                decoded.isdigit() and len(decoded) <= 5 and int(decoded) <= 65535
            ):
                return self._bad(syntax)
            if name in ("ADDR", "DESTADDR"):
                address = decoded[5:] if decoded[:5].upper() == "IPV6:" else decoded
                try:
                    decoded = str(ipaddress.ip_address(address))
                except ValueError:
                    return self._bad(syntax)
            if name == "PROTO" and decoded.upper() not in ("SMTP", "ESMTP"):
                return self._bad(syntax)
            if name == "SOURCE" and decoded.upper() not in ("LOCAL", "REMOTE"):
                return self._bad(syntax)
            attributes[name] = decoded
        return attributes

    def _cmd_xclient(self, arg: bytes) -> Output:
        if not self._xclient_ok:
            return R_NOT_AUTHORIZED
        if self._mail:
            return R_IN_MAIL
        parsed = self._x_attributes(arg, XCLIENT_ATTRIBUTES, R_SYNTAX_XCLIENT)
        if not isinstance(parsed, dict):
            return parsed
        attributes = parsed
        old = self.session
        merged = {**old.xclient, **attributes}
        peer = old.peer
        if "ADDR" in attributes or "PORT" in attributes:
            host = merged.get("ADDR")
            port_text = merged.get("PORT")
            port = int(port_text) if port_text else 0
            if host is None:
                host = peer[0] if isinstance(peer, tuple) and peer else None
            if host is None:
                peer = None
            else:
                peer = (host, port, 0, 0) if ":" in host else (host, port)
        # As if the client had just connected from there (Postfix): a new session, a
        # new greeting, HELO/EHLO again. TLS and the PROXY data are the connection's.
        session = Session(peer, self._loop)
        session.ssl = old.ssl
        session.proxy_data = old.proxy_data
        session.xclient = MappingProxyType(merged)
        session.host_name = merged.get("HELO")
        login = merged.get("LOGIN")
        if login is not None:
            session.authenticated = True
            session.auth_data = login
        self.session = session
        self._reset_connection_state()
        log.info("%r XCLIENT: now %r", old.peer, peer)
        return self.config.greeting

    def _cmd_xforward(self, arg: bytes) -> Output:
        if not self._xforward_ok:
            return R_NOT_AUTHORIZED
        if self._mail:
            return R_IN_MAIL
        parsed = self._x_attributes(arg, XFORWARD_ATTRIBUTES, R_SYNTAX_XFORWARD)
        if not isinstance(parsed, dict):
            return parsed
        envelope = self.envelope
        if envelope.xforward is _EMPTY:
            envelope.xforward = {}
        # Attributes add up over several XFORWARD commands, for this transaction only.
        envelope.xforward.update(parsed)  # type: ignore[attr-defined]
        return R_XFORWARD_OK

    # AUTH

    def _cmd_auth(self, arg: bytes) -> Output:
        config = self.config
        if not config.auth_enabled:
            return R_NOT_IMPL
        if not self._greeted or not self.session.extended_smtp:
            return R_NEED_HELO
        if not config.auth_offered(self.tls):
            return R_AUTH_NEEDS_TLS
        if self.session.authenticated:
            return R_ALREADY_AUTH
        if self._mail:
            return R_AUTH_IN_MAIL
        parts = arg.split()
        if not parts or len(parts) > 2:
            return R_SYNTAX_AUTH
        mechanism = parts[0].decode("ascii", "replace").upper()
        if mechanism not in config.auth_methods:
            return R_AUTH_MECH
        exchange = SaslExchange(mechanism, config.name, config.ntlm_user_file)
        return self._sasl_result(exchange, exchange.start(parts[1] if len(parts) == 2 else None))

    def _auth_step(self, line: bytes) -> Output:
        exchange = self._sasl
        assert exchange is not None
        return self._sasl_result(exchange, exchange.step(line))

    def _sasl_result(self, exchange: SaslExchange, result: Any) -> Output:
        if isinstance(result, SaslChallenge):
            self._sasl = exchange
            return result.reply
        self._sasl = None
        if isinstance(result, SaslError):
            return self._count_auth_failure(result.reply)
        mechanism = exchange.mechanism
        authenticator = self.config.authenticator
        if authenticator is None:
            log.warning("%r AUTH %s refused: no authenticator configured", self.session.peer, mechanism)
            return self._auth_failed(None, mechanism)
        return self._call(
            "authenticator",
            authenticator,
            (self.session, self.envelope, mechanism, result),
            lambda outcome: self._auth_done(mechanism, result, outcome),
        ).with_fail(lambda: self._auth_failed(None, mechanism))

    def _auth_done(self, mechanism: str, credentials: Any, outcome: Any) -> bytes | Action:
        success = outcome is True or bool(getattr(outcome, "success", False))
        message = getattr(outcome, "message", None)
        if not success:
            return self._auth_failed(message, mechanism)
        self.session.authenticated = True
        auth_data = getattr(outcome, "auth_data", None)
        self.session.auth_data = auth_data if auth_data is not None else credentials
        log.info("%r authenticated with %s", self.session.peer, mechanism)
        if message:
            return self._reply_or_error(message, R_AUTH_OK)
        return R_AUTH_OK

    def _auth_failed(self, message: str | None, mechanism: str | None = None) -> bytes | Action:
        if mechanism == "XOAUTH2":
            # RFC-less but universal: a 334 with a JSON error, then 535 after the client's
            # empty line (receive_line handles that line).
            self._xoauth2_failed = True
            return XOAUTH2_FAILURE
        log.info("%r authentication failed", self.session.peer)
        reply = self._reply_or_error(message, R_AUTH_FAIL) if message else R_AUTH_FAIL
        return self._count_auth_failure(reply)

    def _count_auth_failure(self, reply: bytes) -> bytes | Action:
        self._auth_failures += 1
        if self._auth_failures >= MAX_AUTH_FAILURES:
            return _close(self.config.r_auth_fails)
        return reply
