"""Server options: :class:`ServerConfig`, each option declared once, with its documentation.

:class:`~fastsmtp.server.SMTPServer` takes ``handler, host, port, **options`` and hands the
options to :class:`ServerConfig`, which validates them once and computes what derives from
them (the greeting, the EHLO and HELP replies, the handler's hooks): the per-connection
and per-command paths only read attributes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from .._syntax import has_control
from .auth import AUTH_MECHANISMS, check_ntlm_user_file, ntlm_authenticator
from .tls import context_from_credentials

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_RECIPIENTS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_BAD_COMMANDS",
    "DEFAULT_MAX_UNAUTHENTICATED_COMMANDS",
    "DEFAULT_PROXY_TIMEOUT",
    "Networks",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
    "ServerConfig",
    "parse_networks",
    "peer_in",
]

#: Default ``max_size``: 32 MiB, aiosmtpd's default too (buffered handlers hold it in memory).
DEFAULT_MAX_SIZE = 32 * 1024 * 1024
#: Default most simultaneous connections; more get 421 at once.
DEFAULT_MAX_CLIENTS = 1000
#: Default most recipients per message (RFC 5321 section 4.5.3.1.8 requires >= 100).
DEFAULT_MAX_RECIPIENTS = 1000
#: Default seconds a handler hook may run before the command fails with 451.
DEFAULT_HANDLER_TIMEOUT = 300.0
#: Default seconds ``close()`` lets sessions finish their transaction.
DEFAULT_CLOSE_TIMEOUT = 30.0
#: Default unrecognised or malformed commands tolerated before 421 and close.
DEFAULT_MAX_BAD_COMMANDS = 20
#: Default commands a client may send before AUTH when AUTH is required (smtp-server's
#: ``maxAllowedUnauthenticatedCommands`` default).
DEFAULT_MAX_UNAUTHENTICATED_COMMANDS = 10
#: Default seconds a trusted proxy has to send its whole PROXY header.
DEFAULT_PROXY_TIMEOUT = 10.0

#: The XCLIENT attributes the server accepts (Postfix's names), advertised in EHLO.
XCLIENT_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
#: The XFORWARD attributes the server accepts (Postfix's names), advertised in EHLO.
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")

Networks: TypeAlias = "tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]"


def parse_networks(option: str, value: Iterable[str] | str) -> Networks:
    """Parse a list of networks (``"127.0.0.1/32"``, ``"10.0.0.0/8"``, ``"::1"``).

    Raises:
        ValueError: An entry is not an address or network; the message names ``option``.
    """
    if isinstance(value, str):
        value = [value]
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(
                f"{option}: {item!r} is not an IP network; give addresses or CIDR networks "
                f'such as ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]'
            ) from None
    return tuple(out)


def peer_in(networks: Networks, peer: Any) -> bool:
    """True when the socket address ``peer`` (``(host, port, ...)``) is in ``networks``."""
    if not networks or not isinstance(peer, tuple) or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's ::ffff:a.b.c.d
    return any(address in net for net in networks)


class ServerConfig:
    """Every server option, validated, plus everything computed once per server.

    Args:
        handler: The handler object (aiosmtpd-style hooks, all optional; they are looked
            up once, here).
        name: Server host name, used in the greeting, EHLO and 421 replies (default:
            ``socket.gethostname()``); no spaces and no control characters (ValueError).
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
            ``password`` (of an encrypted key); see
            :func:`~fastsmtp.server.make_server_ssl_context`. It stands for
            ``ssl_context`` with ``secure=True`` and for ``tls_context`` (STARTTLS)
            otherwise.
        require_tls: Refuse MAIL/RCPT/DATA/AUTH before TLS (530).
        enable_auth: Offer AUTH.
        require_auth: Require AUTH before MAIL (530); implies ``enable_auth``.
        auth_methods: Mechanisms to offer (PLAIN, LOGIN, CRAM-MD5, XOAUTH2, NTLM). NTLM
            needs pyspnego (``pip install "aiofastsmtp[ntlm]"``; ModuleNotFoundError
            naming it otherwise) and a user file (``ntlm_user_file``).
        auth_require_tls: Offer and accept AUTH only over TLS (default True).
        authenticator: ``authenticator(server, session, envelope, mechanism, auth_data)``
            (else ``handler.authenticator``). With NTLM offered and no authenticator,
            verified NTLM logins are accepted and every other mechanism refused.
        ntlm_user_file: The file pyspnego's NTLM acceptor checks passwords against:
            ``DOMAIN:USER:PASSWORD`` lines (or smbpasswd lines). None: the
            ``NTLM_USER_FILE`` environment variable must name one. The variable is
            process-global: see :mod:`fastsmtp.server.auth` for how it is handled.
        max_size: Largest message in bytes, advertised in SIZE and enforced (552)
            while it arrives (default 32 MiB). 0 means no limit, and then memory is
            bounded only for streaming handlers (``data_chunk``/``data_ready``) and
            handlers without ``handle_DATA``: a buffering ``handle_DATA`` gets
            ``envelope.content`` whole, so one message of any size is held in memory.
        max_clients: Most simultaneous connections (421 beyond it); 0 for no limit.
        max_recipients: Most recipients per message (452 beyond it); 0 for no limit.
        disable_ehlo: Support HELO only.
        hidden_commands: Commands not listed by HELP (they still work).
        disabled_commands: Commands answered with 502.
        lmtp: Speak LMTP (RFC 2033: LHLO; one reply per recipient after DATA).
        bare_newline: ``"normalize"`` (default) or ``"reject"`` bare CR/LF (550 after
            the data).
        handler_timeout: Seconds a hook may run (451 beyond it); None for no limit.
        close_timeout: Seconds :meth:`~fastsmtp.server.SMTPServer.close` grants sessions
            in a transaction.
        smtputf8: Offer SMTPUTF8 (default True).
        reuse_port: Set SO_REUSEPORT on the listening socket.
        debug: Log connections, commands and replies at DEBUG on ``fastsmtp.server``
            (the seed's ``debug``), with AUTH data masked; see :mod:`fastsmtp.server`.
        proxy_protocol: Expect a PROXY protocol header (HAProxy's, v1 or v2) first on
            every connection from ``proxy_trusted``; ``session.peer`` becomes the client
            it names. Connections from elsewhere are served as direct ones. A malformed
            or late header (``proxy_timeout``) closes the connection. Not with
            ``secure=True`` (ValueError): terminate TLS on the proxy or use STARTTLS.
        proxy_trusted: Networks of the proxies (``["127.0.0.1/32", "10.0.0.0/8"]``);
            required with ``proxy_protocol``.
        proxy_timeout: Seconds a trusted proxy has to send its whole header.
        xclient_trusted: Networks allowed to use Postfix's XCLIENT (advertised to them
            only; others get 550). XCLIENT replaces ``session.peer`` (ADDR, PORT),
            ``session.xclient`` (every attribute), ``session.host_name`` (HELO) and
            ``session.authenticated``/``auth_data`` (LOGIN), then restarts the session
            with a new 220 greeting.
        xforward_trusted: Networks allowed to use Postfix's XFORWARD; its attributes go to
            ``envelope.xforward`` (a dict) for the next transaction.
        sni: Server name -> ``ssl.SSLContext``: the certificate presented when the client
            asks for that name (SNI), for STARTTLS and implicit TLS; other names get the
            default context. Names are matched case-insensitively.
        sni_callback: ``sni_callback(name) -> SSLContext | None`` (None: the default
            context), consulted after ``sni``; ``name`` is None when the client sent none.
        hide_pipelining: Do not advertise PIPELINING (smtp-server's ``hidePIPELINING``).
            The server still answers pipelined commands in order.
        hide_size: Do not advertise SIZE and refuse the ``SIZE=`` parameter (555);
            ``max_size`` is still enforced while the data arrives.
        hide_8bitmime: Do not advertise 8BITMIME and refuse ``BODY=`` (555).
        hide_smtputf8: Do not advertise SMTPUTF8 and refuse the ``SMTPUTF8`` parameter
            (555), as ``smtputf8=False``.
        hide_dsn: Do not advertise DSN and refuse its parameters (555), as ``dsn=False``.
        hide_starttls: Do not advertise STARTTLS and answer it with 502.
        hide_chunking: Do not advertise CHUNKING and BINARYMIME (smtp-server's
            ``hideCHUNKING``): BDAT is then an unknown command (500) and
            ``BODY=BINARYMIME`` is refused (555), as on a server without RFC 3030.
        dsn: Advertise DSN (RFC 3461) and accept RET and ENVID on MAIL, NOTIFY and ORCPT
            on RCPT; they are validated (501/555) and given to handlers decoded, as
            ``envelope.dsn_ret``, ``envelope.dsn_envid`` and
            ``envelope.rcpt_dsn[address] = {"notify": [...], "orcpt": (type, address)}``.
        greeting_delay: Seconds to wait before the greeting (Postfix's
            ``smtpd_greet_pause``); a client that talks before it gets 554 and is closed
            (an early talker). 0 (default): greet at once.
        max_bad_commands: Unrecognised or malformed commands tolerated; the next one gets
            421 and the connection is closed (default 20).
        max_unauthenticated_commands: With ``require_auth``, commands a client may send
            before it authenticates (AUTH itself not counted); the next one gets 421 and
            the connection is closed (smtp-server's ``maxAllowedUnauthenticatedCommands``;
            default 10; 0 for no limit).

    Raises:
        ValueError: An option is invalid (``secure`` without ``ssl_context``,
            ``credentials`` beside the context they stand for, unknown credentials keys, a
            name or banner with control characters, a negative limit ...).
        TypeError: An unknown option.
    """

    def __init__(
        self,
        handler: Any,
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
        auth_methods: Iterable[str] = ("PLAIN", "LOGIN"),
        auth_require_tls: bool = True,
        authenticator: Callable[..., Any] | None = None,
        ntlm_user_file: str | os.PathLike[str] | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        disable_ehlo: bool = False,
        hidden_commands: Iterable[str] = (),
        disabled_commands: Iterable[str] = (),
        lmtp: bool = False,
        bare_newline: str = "normalize",
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        smtputf8: bool = True,
        reuse_port: bool = False,
        debug: bool = False,
        proxy_protocol: bool = False,
        proxy_trusted: Iterable[str] = (),
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
        xclient_trusted: Iterable[str] = (),
        xforward_trusted: Iterable[str] = (),
        sni: Mapping[str, ssl.SSLContext] | None = None,
        sni_callback: Callable[[str | None], ssl.SSLContext | None] | None = None,
        hide_pipelining: bool = False,
        hide_size: bool = False,
        hide_8bitmime: bool = False,
        hide_smtputf8: bool = False,
        hide_dsn: bool = False,
        hide_starttls: bool = False,
        hide_chunking: bool = False,
        dsn: bool = False,
        greeting_delay: float = 0.0,
        max_bad_commands: int = DEFAULT_MAX_BAD_COMMANDS,
        max_unauthenticated_commands: int = DEFAULT_MAX_UNAUTHENTICATED_COMMANDS,
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
        if name is None:
            name = socket.gethostname() or "localhost"
        tls_available = tls_context is not None and not secure
        if bare_newline not in ("normalize", "reject"):
            raise ValueError("bare_newline must be 'normalize' or 'reject'")
        if max_size < 0 or max_recipients < 0:
            raise ValueError("max_size and max_recipients must be >= 0")
        if timeout <= 0 or data_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        # Both go verbatim into replies (greeting, EHLO, 421s): a CR or LF in them would put
        # extra replies, or a bare LF, on the wire.
        if not isinstance(name, str) or not name or " " in name or has_control(name):
            raise ValueError("name must be a non-empty host name without spaces or control characters")
        if banner is not None and (not isinstance(banner, str) or has_control(banner)):
            raise ValueError("banner must be text without control characters (no CR, LF, NUL ...)")
        methods = tuple(m.upper() for m in auth_methods)
        unknown = [m for m in methods if m not in AUTH_MECHANISMS]
        if unknown:
            raise ValueError(f"unsupported auth_methods: {', '.join(unknown)}")
        if "NTLM" in methods:
            ntlm_user_file = check_ntlm_user_file(
                None if ntlm_user_file is None else os.fspath(ntlm_user_file))
        elif ntlm_user_file is not None:
            raise ValueError("ntlm_user_file needs 'NTLM' in auth_methods")
        if require_tls and not (tls_available or secure):
            raise ValueError("require_tls needs a tls_context (STARTTLS) or secure=True")
        if hide_starttls:
            if require_tls and not secure:
                raise ValueError("require_tls needs STARTTLS: do not set hide_starttls with it")
            # Hidden means unsupported: not advertised, not in HELP, and answered 502.
            disabled_commands = [*disabled_commands, "STARTTLS"]
        self.handler = handler
        self.name = name
        proto = "LMTP" if lmtp else "ESMTP"
        self.banner = banner if banner is not None else f"{proto} fastsmtp ready"
        self.timeout = float(timeout)
        self.data_timeout = float(data_timeout)
        self.secure = secure
        self.tls_available = tls_available
        self.require_tls = require_tls
        if authenticator is None:
            authenticator = getattr(handler, "authenticator", None)
        if authenticator is None and "NTLM" in methods:
            authenticator = ntlm_authenticator  # pyspnego checked the password itself
        self.authenticator = authenticator
        #: NTLM's user file (None: the NTLM_USER_FILE environment variable).
        self.ntlm_user_file: str | None = ntlm_user_file
        self.require_auth = require_auth
        self.auth_enabled = bool(enable_auth or require_auth)
        self.auth_methods = methods
        self.auth_require_tls = auth_require_tls
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.disable_ehlo = disable_ehlo
        self.hidden_commands = frozenset(c.upper() for c in hidden_commands)
        self.disabled_commands = frozenset(c.upper() for c in disabled_commands)
        self.lmtp = lmtp
        self.reject_bare_newline = bare_newline == "reject"
        self.smtputf8 = smtputf8
        #: The listener's context (implicit TLS), None without ``secure``.
        self.ssl_context = ssl_context if secure else None
        #: The STARTTLS context (``tls_available`` says whether STARTTLS is offered).
        self.tls_context = tls_context
        self.max_clients = max_clients
        self.handler_timeout = handler_timeout
        self.close_timeout = close_timeout
        self.reuse_port = reuse_port
        self.debug = debug

        self.proxy_trusted = parse_networks("proxy_trusted", proxy_trusted)
        if proxy_protocol and not self.proxy_trusted:
            raise ValueError(
                'proxy_protocol=True needs proxy_trusted, the proxies\' networks (e.g. ["127.0.0.1/32"])'
            )
        if self.proxy_trusted and not proxy_protocol:
            raise ValueError("proxy_trusted is given but proxy_protocol is False; set proxy_protocol=True")
        if proxy_protocol and secure:
            raise ValueError(
                "proxy_protocol with secure=True is not supported: terminate TLS on the proxy "
                "or use STARTTLS (tls_context)"
            )
        if proxy_timeout <= 0 or greeting_delay < 0:
            raise ValueError("proxy_timeout must be > 0 and greeting_delay >= 0")
        if max_bad_commands < 0 or max_unauthenticated_commands < 0:
            raise ValueError("max_bad_commands and max_unauthenticated_commands must be >= 0")
        self.proxy_protocol = proxy_protocol
        self.proxy_timeout = float(proxy_timeout)
        self.xclient_trusted = parse_networks("xclient_trusted", xclient_trusted)
        self.xforward_trusted = parse_networks("xforward_trusted", xforward_trusted)
        self.greeting_delay = float(greeting_delay)
        self.max_bad_commands = max_bad_commands
        # Counted only where AUTH is required: elsewhere a client never needs to log in.
        self.max_unauthenticated_commands = max_unauthenticated_commands if require_auth else 0
        self.hide_pipelining = hide_pipelining
        self.hide_size = hide_size
        self.hide_8bitmime = hide_8bitmime
        self.hide_chunking = hide_chunking
        # BDAT (RFC 3030) is served unless hidden; BINARYMIME needs it, and BODY= at all.
        self.chunking = not hide_chunking
        self.binarymime = self.chunking and not hide_8bitmime
        # A hidden extension is refused as if unsupported: one flag the session reads.
        self.smtputf8 = smtputf8 and not hide_smtputf8
        self.dsn = dsn and not hide_dsn
        self.sni: dict[str, ssl.SSLContext] = {}
        if sni is not None or sni_callback is not None:
            self._install_sni(sni or {}, sni_callback)

        def hook(hook_name: str) -> Callable[..., Any] | None:
            func = getattr(handler, hook_name, None)
            return func if callable(func) else None

        self.hook_ehlo = hook("handle_EHLO")
        self.hook_helo = hook("handle_HELO")
        self.hook_mail = hook("handle_MAIL")
        self.hook_rcpt = hook("handle_RCPT")
        self.hook_data = hook("handle_DATA")
        self.hook_rset = hook("handle_RSET")
        self.hook_quit = hook("handle_QUIT")
        self.hook_noop = hook("handle_NOOP")
        self.hook_vrfy = hook("handle_VRFY")
        self.hook_start_data = hook("start_data")
        self.hook_data_chunk = hook("data_chunk")
        self.hook_data_ready = hook("data_ready")
        self.hook_data_abort = hook("data_abort")
        self.hook_close = hook("handle_CLOSE")
        # The streaming interface (the seed's startData/data/dataReady) wins over
        # handle_DATA: a handler that can stream never gets the whole message in memory.
        self.streaming = self.hook_data_chunk is not None and self.hook_data_ready is not None

        self.greeting = f"220 {name} {self.banner}\r\n".encode()
        self.r_closing = f"421 4.3.2 {name} Service shutting down, closing connection\r\n"
        self.r_busy = f"421 4.3.2 {name} Too many connections, try again later\r\n"
        self.r_timeout = f"421 4.4.2 {name} Error: timeout exceeded, closing connection\r\n"
        self.r_runaway = f"421 4.7.0 {name} Error: line too long, closing connection\r\n"
        self.r_bad_cmds = f"421 4.7.0 {name} Error: too many bad commands, closing connection\r\n"
        self.r_auth_fails = f"421 4.7.0 {name} Error: too many failed AUTH attempts\r\n"
        self.r_unauth = f"421 4.7.0 {name} Error: too many unauthenticated commands\r\n"
        self.r_early = f"554 5.5.0 {name} Error: you talk too soon, closing connection\r\n"
        self.r_helo = f"250 {name}\r\n".encode()
        self._ehlo_cache: dict[tuple[bool, bool, bool, bool], tuple[list[str], bytes]] = {}
        self.help = self._help_reply()

    def auth_offered(self, tls: bool) -> bool:
        """Whether AUTH is advertised and accepted on a connection (TLS or not)."""
        return self.auth_enabled and bool(self.auth_methods) and (tls or not self.auth_require_tls)

    def _install_sni(
        self,
        sni: Mapping[str, ssl.SSLContext],
        sni_callback: Callable[[str | None], ssl.SSLContext | None] | None,
    ) -> None:
        """Make the default context(s) switch certificates by the name the client asks for."""
        contexts = [c for c in (self.ssl_context, self.tls_context) if c is not None]
        if not contexts:
            raise ValueError("sni and sni_callback need a default context: ssl_context, tls_context or credentials")
        by_name: dict[str, ssl.SSLContext] = {}
        for server_name, context in sni.items():
            if not isinstance(context, ssl.SSLContext):
                raise ValueError(f"sni[{server_name!r}] must be an ssl.SSLContext")
            by_name[server_name.lower().rstrip(".")] = context
        if sni_callback is not None and not callable(sni_callback):
            raise ValueError("sni_callback must be callable: sni_callback(name) -> SSLContext | None")
        self.sni = by_name

        def select(ssl_object: ssl.SSLObject, server_name: str | None, default: ssl.SSLContext) -> None:
            # Called by the ssl module during the handshake, once per TLS connection.
            chosen = by_name.get(server_name.lower()) if server_name else None
            if chosen is None and sni_callback is not None:
                chosen = sni_callback(server_name)
            if chosen is not None and chosen is not default:
                ssl_object.context = chosen

        for context in contexts:
            context.sni_callback = select

    def ehlo_lines(
        self, tls: bool, xclient: bool = False, xforward: bool = False
    ) -> tuple[list[str], bytes]:
        """The EHLO reply as lines (for ``handle_EHLO``) and as precomputed bytes.

        ``xclient``/``xforward``: the client is trusted with XCLIENT/XFORWARD (then they
        are advertised).
        """
        key = (tls, self.auth_offered(tls), xclient, xforward)
        cached = self._ehlo_cache.get(key)
        if cached is not None:
            return cached
        caps = [] if self.hide_pipelining else ["PIPELINING"]
        if self.max_size and not self.hide_size:
            caps.append(f"SIZE {self.max_size}")
        if not self.hide_8bitmime:
            caps.append("8BITMIME")
        if self.chunking:
            caps.append("CHUNKING")
        if self.binarymime:
            caps.append("BINARYMIME")
        caps.append("ENHANCEDSTATUSCODES")
        if self.dsn:
            caps.append("DSN")
        if self.smtputf8:
            caps.append("SMTPUTF8")
        if self.tls_available and not tls and "STARTTLS" not in self.disabled_commands:
            caps.append("STARTTLS")
        if key[1] and "AUTH" not in self.disabled_commands:
            caps.append("AUTH " + " ".join(self.auth_methods))
        if xclient:
            caps.append("XCLIENT " + " ".join(XCLIENT_ATTRIBUTES))
        if xforward:
            caps.append("XFORWARD " + " ".join(XFORWARD_ATTRIBUTES))
        caps.append("HELP")
        lines = [f"250-{self.name}"] + [f"250-{c}" for c in caps[:-1]] + [f"250 {caps[-1]}"]
        wire = "".join(line + "\r\n" for line in lines).encode("utf-8")
        self._ehlo_cache[key] = (lines, wire)
        return lines, wire

    def _help_reply(self) -> bytes:
        hello = ["LHLO"] if self.lmtp else ["HELO", "EHLO"]
        names = hello + ["MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP"]
        if self.chunking:
            names.append("BDAT")
        if self.tls_available:
            names.append("STARTTLS")
        if self.xclient_trusted:
            names.append("XCLIENT")
        if self.xforward_trusted:
            names.append("XFORWARD")
        if self.auth_enabled:
            names.append("AUTH")
        shown = [n for n in names if n not in self.hidden_commands | self.disabled_commands]
        return f"214 2.0.0 Supported commands: {' '.join(shown)}\r\n".encode("ascii")

