"""Every client option, declared once: connection options, pool options, auth and URLs.

:class:`ConnectionOptions` holds everything that describes *how* to reach and talk to one
SMTP server (``SMTPConnection(**options)`` takes its fields), :class:`PoolOptions` how a
pool uses its connections, :class:`Auth` the credentials a pool logs in with, and
:func:`parse_url` turns an ``smtp://`` URL into those options. Each option's name,
default and documentation live on its dataclass field and nowhere else; text (URL query
values, config files) becomes a bool in one place, :func:`parse_bool`.

:class:`ConnectionOptions` It is immutable and validated once, so a pool can build thousands of
connections from one object without re-checking anything; the TLS context it needs is
built at most once too (see below).

Timeouts are floats in **seconds** (nodemailer's options are milliseconds; asyncio's
clock is seconds, so converting once here keeps the hot path free of arithmetic).

The TLS context is built only when TLS is about to be used (the first ``smtps://``
connection or STARTTLS), once per options object; the default verified context once per
process (:func:`default_ssl_context`): loading the system CA store costs tens of
milliseconds, which a plaintext ``SMTPConnection()`` must not pay.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._dns import DEFAULT_DNS_CACHE_TTL, DEFAULT_HAPPY_EYEBALLS_DELAY, DNSCache, Resolver
from ._proxy import ProxyURL, parse_proxy
from ._syntax import has_control
from .auth import MECHANISMS, SASLHandler, check_mechanisms, load_spnego

if TYPE_CHECKING:  # pragma: no cover - fastsmtp.dkim is imported only when dkim= is given
    from .dkim import DKIMSigner

__all__ = [
    "ConnectionOptions",
    "PoolOptions",
    "Auth",
    "TokenProvider",
    "FAST_BATCH_SIZE",
    "connection_options",
    "CONNECTION_OPTION_NAMES",
    "parse_bool",
    "parse_url",
    "DEFAULT_CONNECTION_TIMEOUT",
    "DEFAULT_GREETING_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_PIPELINE_WINDOW",
    "PORT_SUBMISSION",
    "PORT_SUBMISSIONS",
    "PORT_SMTP",
    "PORT_LMTP",
    "AUTH_METHODS",
    "TLS_OPTION_KEYS",
    "VERIFY_ALIASES",
    "SECRET_TLS_KEYS",
    "default_port",
    "make_ssl_context",
    "default_ssl_context",
]

#: Seconds to wait for the TCP (and, with ``secure``, TLS) connection (nodemailer: 2 min).
DEFAULT_CONNECTION_TIMEOUT = 120.0
#: Seconds to wait for the server's 220 greeting once connected (nodemailer: 30 s).
DEFAULT_GREETING_TIMEOUT = 30.0
#: Seconds of silence allowed while a reply is awaited or a write is blocked (nodemailer: 10 min).
DEFAULT_SOCKET_TIMEOUT = 600.0
#: Unanswered BDAT transactions per connection (``pipeline_window``): 10 messages per
#: round trip, while a lost connection leaves at most 10 messages "maybe delivered".
DEFAULT_PIPELINE_WINDOW = 10

#: Message submission with STARTTLS (RFC 6409): the default for a client.
PORT_SUBMISSION = 587
#: Message submission over implicit TLS (RFC 8314): the default when ``secure=True``.
PORT_SUBMISSIONS = 465
#: MTA-to-MTA relay. Never a default: most networks block it for clients, and a relay
#: must be chosen on purpose (pass ``port=25``).
PORT_SMTP = 25
#: LMTP has no IANA port for TCP; 24 ("any private mail system") is the convention
#: (Dovecot, Cyrus), so it is the default when ``lmtp=True``.
PORT_LMTP = 24

#: SASL mechanisms the client implements (``auth_mechanisms=`` adds more). NTLM needs
#: the optional extra ``aiofastsmtp[ntlm]``.
AUTH_METHODS = frozenset(MECHANISMS)

#: Keys accepted when ``tls`` is given as a mapping instead of an :class:`ssl.SSLContext`.
TLS_OPTION_KEYS = frozenset(
    {
        "verify",  # bool, default True: verify the certificate chain and the host name
        # nodemailer's name for verify (Node's tls.rejectUnauthorized), also in snake_case:
        # pool URLs pass tls.rejectUnauthorized=false through as text.
        "rejectUnauthorized",
        "reject_unauthorized",
        "check_hostname",  # bool, default = verify
        "cafile",
        "capath",
        "cadata",
        "certfile",  # client certificate
        "keyfile",
        "password",
        "minimum_version",  # ssl.TLSVersion, default TLS 1.2 (create_default_context)
        "ciphers",
        "server_hostname",  # name to verify and send as SNI (default: host)
    }
)


def default_port(*, secure: bool, lmtp: bool = False) -> int:
    """Return the port used when none is given.

    465 (implicit TLS, RFC 8314) when ``secure``; else 24 for LMTP; else 587 (submission
    with STARTTLS, RFC 6409). Port 25 is for relaying between MTAs and is never chosen
    implicitly.

    Args:
        secure: The connection starts with TLS.
        lmtp: The LMTP dialect is spoken.
    """
    if secure:
        return PORT_SUBMISSIONS
    return PORT_LMTP if lmtp else PORT_SUBMISSION


#: Aliases of ``verify`` in a ``tls`` mapping (nodemailer's ``rejectUnauthorized``).
VERIFY_ALIASES = ("rejectUnauthorized", "reject_unauthorized")
#: Keys of a ``tls`` mapping whose value is hidden in ``repr``.
SECRET_TLS_KEYS = frozenset({"password"})


#: Text accepted as true / false by :func:`parse_bool` (compared case-insensitively).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: Any) -> bool:
    """A bool option: a bool, or text as a URL query or a config file gives it.

    The one text-to-bool rule of the library (``tls.verify=false`` in a URL,
    ``{"rejectUnauthorized": "false"}``, ``?pipelining=no``).

    Args:
        name: The option, named in the error.
        value: ``True``/``False``, or one of :data:`TRUE_WORDS` / :data:`FALSE_WORDS`.

    Raises:
        ValueError: Anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(
        f"{name} must be a bool (true/false, yes/no, on/off, 1/0), not {value!r}"
    )


def _tls_settings(tls: Mapping[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """Check a ``tls`` mapping; return ``(options, verify, check_hostname)``.

    Raises:
        ValueError: An unknown key or a bad value.
    """
    opts = dict(tls)
    unknown = set(opts) - TLS_OPTION_KEYS
    if unknown:
        raise ValueError(f"unknown tls option(s): {', '.join(sorted(unknown))}")
    given = {name: parse_bool(f"tls {name!r}", opts[name]) for name in ("verify", *VERIFY_ALIASES)
             if name in opts}
    if len(set(given.values())) > 1:
        raise ValueError(f"contradictory tls options: {', '.join(sorted(given))}")
    verify = next(iter(given.values()), True)
    check_hostname = parse_bool("tls 'check_hostname'", opts.get("check_hostname", verify))
    if check_hostname and not verify:
        raise ValueError("tls 'check_hostname' needs 'verify'")
    return opts, verify, check_hostname


_default_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The verifying default context (:func:`ssl.create_default_context`), built once
    per process: loading the system CA store costs tens of milliseconds of CPU."""
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


def make_ssl_context(tls: ssl.SSLContext | Mapping[str, Any] | None) -> ssl.SSLContext:
    """Return an SSL context from an existing one, a mapping of options, or None.

    Certificates are verified by default (:func:`ssl.create_default_context`; for None,
    the one :func:`default_ssl_context` of the process); turning it off needs
    ``{"verify": False}`` on purpose (or nodemailer's ``{"rejectUnauthorized": False}``,
    also spelt ``reject_unauthorized``; the text ``"false"`` is accepted too, as an
    ``smtp://`` URL's ``tls.rejectUnauthorized=false`` carries it).

    Args:
        tls: An :class:`ssl.SSLContext` (used as is), a mapping whose keys are in
            :data:`TLS_OPTION_KEYS`, or None for the secure default.

    Raises:
        ValueError: An unknown key or a bad value in the mapping.
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not tls:
        return default_ssl_context()
    opts, verify, check_hostname = _tls_settings(tls)
    ctx = ssl.create_default_context(
        cafile=opts.get("cafile"), capath=opts.get("capath"), cadata=opts.get("cadata")
    )
    ctx.check_hostname = bool(check_hostname)
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    if opts.get("certfile"):
        ctx.load_cert_chain(opts["certfile"], opts.get("keyfile"), opts.get("password"))
    if opts.get("minimum_version") is not None:
        ctx.minimum_version = opts["minimum_version"]
    if opts.get("ciphers"):
        ctx.set_ciphers(opts["ciphers"])
    return ctx


def _timeout(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number of seconds")
    return value


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How to reach and talk to one SMTP (or LMTP) server.

    Attributes:
        host: Host name or IP address of the server.
        port: TCP port; None picks :func:`default_port` (465 secure, 24 LMTP, else 587).
        secure: Start TLS immediately (implicit TLS, "SMTPS").
        ignore_tls: Never use STARTTLS, even when offered.
        require_tls: Fail unless STARTTLS succeeds; no command after EHLO is sent in
            plaintext.
        opportunistic_tls: If the server refuses STARTTLS, go on in plaintext instead of
            failing. (A failed TLS *handshake* leaves the socket unusable and still
            raises :class:`~fastsmtp.errors.SMTPTLSError`; reconnect with
            ``ignore_tls=True`` to insist on plaintext.)
        name: Name sent with EHLO/LHLO; None: the local host name if it is a fully
            qualified domain name, else the local address literal (``[192.0.2.1]``).
        local_address: Local interface to bind: a host, or ``(host, port)``.
        connection_timeout: Seconds for the TCP (and implicit TLS) connection.
        greeting_timeout: Seconds for the 220 greeting.
        socket_timeout: Seconds of server silence while a reply is awaited or a write is
            blocked; expiry closes the connection.
        auth_method: Preferred SASL mechanism (``"PLAIN"``, ``"LOGIN"``, ``"CRAM-MD5"``,
            ``"XOAUTH2"``, ``"NTLM"`` or a name registered in ``auth_mechanisms``); None
            picks the strongest one offered of CRAM-MD5, PLAIN and LOGIN (XOAUTH2 with a
            token). NTLM needs pyspnego (``pip install "aiofastsmtp[ntlm]"``): asking
            for it without raises ModuleNotFoundError naming that extra.
        auth_mechanisms: Custom SASL mechanisms ``{"X-MECH": handler}`` (see
            :mod:`fastsmtp.auth`: a handler is a generator function
            ``handler(credentials)`` yielding raw answers); a built-in name overrides
            the built-in. Used when named by ``auth_method`` or ``login(mechanism=)``.
        domain: The NTLM domain, for a user name without one (``DOMAIN\\user`` and
            ``user@domain`` carry their own); other mechanisms ignore it.
        tls: :class:`ssl.SSLContext` or a mapping of :data:`TLS_OPTION_KEYS`; None means
            :func:`ssl.create_default_context` (certificates verified). ``repr`` hides
            the key file ``password``.
        lmtp: Speak LMTP (RFC 2033): LHLO, and one reply per recipient after the data.
            (LMTP always sends with ``DATA``: its replies to the data depend on the
            recipients accepted, which a blind BDAT pipeline cannot count ahead.)
        chunking: Send with ``BDAT`` (RFC 3030 CHUNKING) when the server offers it: a
            message's ``MAIL``, ``RCPT`` lines and ``BDAT <size> LAST`` with its data go out
            in one write with no wait for any reply, and the next messages follow right
            behind (up to ``pipeline_window``), so one connection is no longer limited
            to one message per round trip. No dot-stuffing; line endings are still
            normalized to CRLF. False always uses ``DATA``. (URL: ``?chunking=false``.)
        pipeline_window: Under CHUNKING, the most transactions a connection has written
            and not yet seen answered. It bounds how many messages a lost connection
            leaves "maybe delivered" (those whose ``BDAT LAST`` was written); 10 carries
            10 messages per round trip per connection, enough for a far-away server
            (RTT 50 ms: 200 messages/s per connection). 1 sends one transaction at a
            time. Until a connection has delivered a message the window is 1, and a
            transaction's data waits for its envelope to be accepted (slow start: a
            server refusing everything leaves nothing "maybe delivered").
            (URL: ``?pipeline_window=4``.)
        allow_plaintext_auth: Allow credentials over an unencrypted connection.
        debug: Log the SMTP traffic at DEBUG level (credentials masked).
        dkim: Sign every message (RFC 6376): a :class:`fastsmtp.dkim.DKIMSigner`, or a
            mapping it is made from (nodemailer's ``dkim`` object: ``domainName``,
            ``keySelector``, ``privateKey``, ``keys``, ``headerFieldNames``). Needs the
            ``fastsmtp[dkim]`` extra. Messages in memory and files are signed; chunk
            streams are refused (see :mod:`fastsmtp.dkim`).
        proxy: Connect through a proxy (nodemailer's ``proxy``):
            ``"http://[user:pass@]host:port"`` (HTTP CONNECT, built in),
            ``"socks5://..."`` or ``"socks4://..."`` (the ``fastsmtp[socks]`` extra;
            the SMTP host name is resolved by the proxy). ``repr`` and errors never show
            the proxy's password.
        resolver: ``async resolver(host) -> [address, ...]`` used instead of the
            system resolver (``loop.getaddrinfo``); every address it returns is tried.
        dns_cache_ttl: Seconds a resolution is reused by every connection made from
            these options (a pool's connections share one lookup); 0 resolves each time.
        happy_eyeballs_delay: Seconds before the next address (IPv6 and IPv4
            interleaved) is tried while one is still connecting (RFC 8305; asyncio's
            option of that name). A refused address moves on at once; the whole race is
            bounded by ``connection_timeout``.
    """

    host: str = "localhost"
    port: int | None = None
    secure: bool = False
    ignore_tls: bool = False
    require_tls: bool = False
    opportunistic_tls: bool = False
    name: str | None = None
    local_address: str | tuple[str, int] | None = None
    connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    auth_method: str | None = None
    tls: ssl.SSLContext | Mapping[str, Any] | None = None
    lmtp: bool = False
    allow_plaintext_auth: bool = False
    debug: bool = False
    chunking: bool = True
    pipeline_window: int = DEFAULT_PIPELINE_WINDOW
    auth_mechanisms: Mapping[str, SASLHandler] | None = None
    domain: str | None = None
    #: Every mechanism usable by name: the built-ins plus ``auth_mechanisms``.
    sasl_mechanisms: Mapping[str, SASLHandler] = field(init=False, repr=False, compare=False)
    dkim: DKIMSigner | Mapping[str, Any] | None = None
    proxy: str | None = None
    resolver: Resolver | None = field(default=None, compare=False)
    dns_cache_ttl: float = DEFAULT_DNS_CACHE_TTL
    happy_eyeballs_delay: float = DEFAULT_HAPPY_EYEBALLS_DELAY
    #: The signer built from ``dkim`` (None: no signing).
    dkim_signer: DKIMSigner | None = field(init=False, repr=False, compare=False)
    #: The parsed ``proxy`` URL, or None.
    proxy_url: ProxyURL | None = field(init=False, repr=False, compare=False)
    #: Resolutions shared by every connection made from these options.
    dns_cache: DNSCache = field(init=False, repr=False, compare=False)
    #: The SSL context built from ``tls`` (once, when TLS is first used; see ssl_context).
    _ssl_context: ssl.SSLContext | None = field(init=False, repr=False, compare=False,
                                                default=None)
    #: Name to verify in the certificate and send as SNI.
    server_hostname: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host must be a non-empty string")
        if self.port is None:
            set_(self, "port", default_port(secure=self.secure, lmtp=self.lmtp))
        elif isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError("port must be an int")
        elif not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        for flag in ("secure", "ignore_tls", "require_tls", "opportunistic_tls", "lmtp",
                     "allow_plaintext_auth", "debug", "chunking"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool")
        window = self.pipeline_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(
                f"pipeline_window must be an int of at least 1 (1: one transaction at a "
                f"time), not {window!r}"
            )
        if self.require_tls and (self.ignore_tls or self.opportunistic_tls):
            raise ValueError("require_tls contradicts ignore_tls and opportunistic_tls")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError("name must be a non-empty string")
        local = self.local_address
        if local is not None and not (
            isinstance(local, str)
            or (isinstance(local, tuple) and len(local) == 2 and isinstance(local[1], int))
        ):
            raise ValueError("local_address must be a host or a (host, port) tuple")
        for name in ("connection_timeout", "greeting_timeout", "socket_timeout"):
            set_(self, name, _timeout(name, getattr(self, name)))
        registry: Mapping[str, SASLHandler] = MECHANISMS
        if self.auth_mechanisms is not None:
            registry = {**MECHANISMS, **check_mechanisms(self.auth_mechanisms)}
        set_(self, "sasl_mechanisms", registry)
        if self.auth_method is not None:
            method = str(self.auth_method).upper()
            if method not in registry:
                raise ValueError(
                    f"auth_method must be one of {', '.join(sorted(registry))}, or a "
                    "custom mechanism registered with auth_mechanisms={name: handler}"
                )
            if method == "NTLM" and registry["NTLM"] is MECHANISMS["NTLM"]:
                load_spnego()  # fail now, naming the extra, not at the first login
            set_(self, "auth_method", method)
        if self.domain is not None and (
            not isinstance(self.domain, str) or not self.domain or has_control(self.domain)
        ):
            raise ValueError("domain must be a non-empty NTLM domain name")
        tls = self.tls
        if isinstance(tls, ssl.SSLContext):
            set_(self, "_ssl_context", tls)
        elif tls is not None:
            if not isinstance(tls, Mapping):
                raise TypeError("tls must be an ssl.SSLContext or a mapping of tls options")
            _tls_settings(tls)  # bad keys fail here; the context is built on first use
        server_hostname = self.host
        if isinstance(tls, Mapping) and tls.get("server_hostname"):
            server_hostname = str(tls["server_hostname"])
        set_(self, "server_hostname", server_hostname)
        signer = None
        if self.dkim is not None:
            from .dkim import DKIMSigner  # only now: it loads dkimpy

            signer = DKIMSigner.coerce(self.dkim)
        set_(self, "dkim_signer", signer)
        set_(self, "proxy_url", None if self.proxy is None else parse_proxy(self.proxy))
        if self.resolver is not None and not callable(self.resolver):
            raise TypeError("resolver must be an async callable: await resolver(host) -> "
                            "[address, ...]")
        ttl = self.dns_cache_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) \
                or not (ttl >= 0 and math.isfinite(ttl)):
            raise ValueError("dns_cache_ttl must be a number of seconds (0: no cache)")
        set_(self, "dns_cache_ttl", float(ttl))
        set_(self, "happy_eyeballs_delay",
             _timeout("happy_eyeballs_delay", self.happy_eyeballs_delay))
        set_(self, "dns_cache", DNSCache(self.resolver, self.dns_cache_ttl))

    def __repr__(self) -> str:
        # The dataclass repr would print the tls mapping as is, key-file password
        # included; repr ends up in logs and tracebacks.
        parts = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "tls" and isinstance(value, Mapping):
                value = {k: "***" if k in SECRET_TLS_KEYS else v for k, v in value.items()}
            elif f.name == "proxy" and value is not None:
                value = repr(self.proxy_url)  # the URL's password stays out of logs
                parts.append(f"proxy={value}")
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The SSL context for ``tls``, built when TLS is first used (not for a plaintext
        connection) and then shared by every connection made with these options; the
        default verified context is built once per process."""
        ctx = self._ssl_context
        if ctx is None:
            ctx = make_ssl_context(self.tls)
            object.__setattr__(self, "_ssl_context", ctx)
        return ctx

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """``local_address`` in the ``(host, port)`` form asyncio wants, or None."""
        local = self.local_address
        if local is None:
            return None
        return (local, 0) if isinstance(local, str) else local


#: What ``SMTPConnection(**options)`` accepts: the init fields of :class:`ConnectionOptions`.
CONNECTION_OPTION_NAMES = frozenset(f.name for f in fields(ConnectionOptions) if f.init)


def connection_options(**options: Any) -> ConnectionOptions:
    """Build :class:`ConnectionOptions` from keyword options, naming any unknown one.

    Raises:
        TypeError: An option that is not a :class:`ConnectionOptions` field (the message
            lists the valid ones), or a value of the wrong type.
        ValueError: A bad value (see :class:`ConnectionOptions`).
    """
    unknown = sorted(set(options) - CONNECTION_OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"unknown connection option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; the options are ConnectionOptions' fields: "
            f"{', '.join(sorted(CONNECTION_OPTION_NAMES))}"
        )
    return ConnectionOptions(**options)


# -- pool options, credentials and URLs ----------------------------------------------------

#: An XOAUTH2 token provider: ``await provider(user, refresh=False) -> token``. It is
#: called again with ``refresh=True`` when the server rejected the token it returned. A
#: provider that knows its account (as nodemailer's xoauth2 generator does) may return
#: ``(user, token)`` instead; it is then called with ``user=None`` when none was given.
TokenProvider = Callable[..., Awaitable[str | tuple[str, str]] | str | tuple[str, str]]

#: The default ``batch_size`` (see :class:`PoolOptions`): long enough that a run's set-up
#: is paid rarely, short enough that other slots get queued jobs too.
FAST_BATCH_SIZE = 32


@dataclass(frozen=True, slots=True)
class Auth:
    """Credentials a pool logs in with on every new connection.

    Attributes:
        user: User name (for XOAUTH2, the account the token belongs to). May be empty
            only with a token provider that returns ``(user, token)`` itself (the seed's
            xoauth2 generator, which needs no ``auth.user``).
        password: Password; mutually exclusive with ``xoauth2``.
        xoauth2: An OAuth2 access token, or a token provider
            ``provider(user, *, refresh: bool)`` (sync or async) returning the token or
            ``(user, token)``, asked again with ``refresh=True`` when the server
            rejected its token.
    """

    user: str
    password: str | None = None
    xoauth2: str | TokenProvider | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not (self.user or callable(self.xoauth2)):
            raise ValueError("auth needs a user (unless a token provider supplies it)")
        if (self.password is None) == (self.xoauth2 is None):
            raise ValueError("auth needs exactly one of password and xoauth2")

    def __repr__(self) -> str:  # never show the secret
        kind = "password" if self.password is not None else "xoauth2"
        return f"Auth(user={self.user!r}, {kind}=<hidden>)"

    @classmethod
    def coerce(cls, value: Auth | Mapping[str, Any] | tuple[str, str] | None) -> Auth | None:
        """Accept an Auth, a ``(user, password)`` pair or a nodemailer-style mapping
        (``user``, ``pass``/``password``, ``xoauth2``; ``xoauth2`` wins over a password)."""
        if value is None or isinstance(value, Auth):
            return value
        if isinstance(value, tuple):
            user, password = value
            return cls(user, password)
        if isinstance(value, Mapping):
            token = value.get("xoauth2")
            secret = None if token is not None else value.get("pass", value.get("password"))
            return cls(str(value.get("user", "")), secret, token)
        raise TypeError("auth must be an Auth, a (user, password) tuple or a mapping")


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How a pool uses its connections (the connection options live apart).

    Attributes:
        max_connections: Simultaneous connections at most (nodemailer: 5).
        max_messages: Messages per connection before it is replaced (nodemailer: 100).
        rate_limit: Messages allowed to *start* in any window of ``rate_delta`` seconds,
            shared by all connections; None for no limit.
        rate_delta: The rate window in seconds.
        max_queue: Jobs waiting for a connection at most; ``send()`` waits beyond that.
        max_attempts: Attempts per message for retryable failures (1 disables retries).
        retry_delay: First backoff in seconds; it doubles per attempt.
        retry_delay_max: Cap of the backoff (also of the pool's reconnect backoff).
        idle_timeout: Seconds an unused connection is kept open.
        pipelining: Pipeline consecutive messages on a connection (when offered).
        batch_size: Messages a connection may send as one run while more are queued
            (with PIPELINING and no rate limit): each message's envelope then goes out in
            the same write as the previous message's final dot, one write per message.
            Each caller still gets its result the moment its own reply arrives. 1: one
            task per message, up to ``PIPELINE_DEPTH`` in flight per connection (the
            path a rate-limited pool always takes).
        breaker_threshold: Failed connections *in a row* (refused, reset, or broken
            before doing any work) after which a server counts as down: its circuit
            opens, new connections wait ``retry_delay`` (doubling up to
            ``retry_delay_max``) and, when no other host can take them, every waiting
            message is charged one attempt. A single failed connection costs only the
            messages that were on it.
        max_connection_age: Seconds after which a connection is renewed (QUIT, then a
            fresh one) before its next message, to stay ahead of a server's session
            lifetime cut; None: no limit.
        probe_idle: A connection idle longer than this many seconds gets an RSET before
            it is reused (Postfix's ``smtp_rset_timeout``); one that fails the probe is
            replaced without costing the message an attempt. None: no probe.
        adaptive_rate: Lower the pool's own rate when the server says "slow down"
            (a 4.7.x code or rate/throttling text; see :func:`fastsmtp.retry.is_slow_down`)
            and raise it again while replies are clean (AIMD). See ``SMTPPool.throttle``.
        rate_floor: The adaptive rate never goes below this many messages per
            ``rate_delta``.
    """

    max_connections: int = 5
    max_messages: int = 100
    rate_limit: int | None = None
    rate_delta: float = 1.0
    max_queue: int = 1000
    max_attempts: int = 3
    retry_delay: float = 0.5
    retry_delay_max: float = 30.0
    idle_timeout: float = 30.0
    pipelining: bool = True
    batch_size: int = FAST_BATCH_SIZE
    breaker_threshold: int = 3
    max_connection_age: float | None = None
    probe_idle: float | None = None
    adaptive_rate: bool = True
    rate_floor: int = 1

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_messages", "max_queue", "max_attempts",
                     "batch_size", "breaker_threshold", "rate_floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int of at least 1")
        if self.rate_limit is not None and (
            isinstance(self.rate_limit, bool) or not isinstance(self.rate_limit, int)
            or self.rate_limit < 1
        ):
            raise ValueError("rate_limit must be None or an int of at least 1")
        for name in ("rate_delta", "retry_delay", "retry_delay_max", "idle_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
            object.__setattr__(self, name, float(value))
        for name in ("max_connection_age", "probe_idle"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be None or a positive number of seconds")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.adaptive_rate, bool):
            raise ValueError("adaptive_rate must be True or False")


# -- URLs ----------------------------------------------------------------------------------

_SCHEMES = {"smtp": False, "smtps": True}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
#: Boolean keys of the ``tls`` mapping (``rejectUnauthorized`` is nodemailer's ``verify``).
_TLS_FLAGS = frozenset({"verify", "check_hostname", "rejectUnauthorized", "reject_unauthorized"})
# nodemailer option names whose Python name is not simply the snake_case form.
_ALIASES = {"ignore_t_l_s": "ignore_tls", "require_t_l_s": "require_tls",
            "opportunistic_t_l_s": "opportunistic_tls", "l_m_t_p": "lmtp"}


def _field_types() -> dict[str, str]:
    types: dict[str, str] = {}
    for cls in (ConnectionOptions, PoolOptions):
        for f in fields(cls):
            if f.init:
                types[f.name] = str(f.type).split("|")[0].strip()
    types.pop("tls", None)  # tls is given as tls.<key>=value pairs
    for name in ("auth_mechanisms", "dkim", "resolver"):  # code and objects, not URL text
        types.pop(name, None)
    types["service"] = "str"
    return types


def _coerce(name: str, text: str, kind: str) -> Any:
    if text.lower() in ("none", "null") and kind != "str":
        return None
    if kind == "bool":
        return parse_bool(name, text)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    return text


def _option_name(key: str) -> str:
    name = _CAMEL.sub("_", key).lower().replace("-", "_")
    return _ALIASES.get(name, name)


def parse_url(url: str) -> dict[str, Any]:
    """Parse ``smtp://user:pass@host:port/?option=value&...`` (or ``smtps://``) into options.

    Query arguments name any connection or pool option, in snake_case or nodemailer's
    camelCase (``max_connections=8`` or ``maxConnections=8``), and ``tls.<key>=value``
    sets a TLS option (``tls.verify=false``). User and password are percent-decoded.

    Returns:
        Keyword options for :class:`SMTPPool` (``auth`` as an :class:`Auth`); a user
        without a password comes back as ``user`` alone, for the caller to complete.

    Raises:
        ValueError: Unknown scheme or option, or a value of the wrong type.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (use smtp:// or smtps://)")
    options: dict[str, Any] = {"secure": _SCHEMES[scheme]}
    if parts.hostname:
        options["host"] = parts.hostname
    if parts.port is not None:
        options["port"] = parts.port
    if parts.username is not None:
        if parts.password is None:
            options["user"] = unquote(parts.username)  # the password must come from elsewhere
        else:
            options["auth"] = Auth(unquote(parts.username), unquote(parts.password))
    types = _field_types()
    tls: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.startswith("tls."):
            sub = key[4:]
            tls[sub] = parse_bool(key, value) if sub in _TLS_FLAGS else value
            continue
        name = _option_name(key)
        if name not in types:
            raise ValueError(f"unknown option {key!r} in the SMTP URL")
        options[name] = _coerce(key, value, types[name])
    if tls:
        options["tls"] = tls
    return options
