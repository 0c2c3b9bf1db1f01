"""Frozen connection options: defaults, validation and port selection.

:class:`ConnectionOptions` holds everything that describes *how* to reach and talk to one
SMTP server. It is immutable and validated once, so a pool can build thousands of
connections from one object without re-checking anything; the TLS context it needs is
built once here too (loading the system CA store costs milliseconds, far too much to pay
per connection).

Timeouts are floats in **seconds** (nodemailer's options are milliseconds; asyncio's
clock is seconds, so converting once here keeps the hot path free of arithmetic).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "ConnectionOptions",
    "DEFAULT_CONNECTION_TIMEOUT",
    "DEFAULT_GREETING_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
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
]

#: Seconds to wait for the TCP (and, with ``secure``, TLS) connection (nodemailer: 2 min).
DEFAULT_CONNECTION_TIMEOUT = 120.0
#: Seconds to wait for the server's 220 greeting once connected (nodemailer: 30 s).
DEFAULT_GREETING_TIMEOUT = 30.0
#: Seconds of silence allowed while a reply is awaited or a write is blocked (nodemailer: 10 min).
DEFAULT_SOCKET_TIMEOUT = 600.0

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

#: SASL mechanisms the client implements (NTLM is deliberately left out).
AUTH_METHODS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"})

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


def _tls_flag(name: str, value: Any) -> bool:
    # A bool, or the text "true"/"false" as a URL query or a config file gives it.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"tls {name!r} must be a bool")


def make_ssl_context(tls: ssl.SSLContext | Mapping[str, Any] | None) -> ssl.SSLContext:
    """Return an SSL context from an existing one, a mapping of options, or None.

    Certificates are verified by default (:func:`ssl.create_default_context`); turning it
    off needs ``{"verify": False}`` on purpose (or nodemailer's
    ``{"rejectUnauthorized": False}``, also spelt ``reject_unauthorized``; the text
    ``"false"`` is accepted too, as an ``smtp://`` URL's ``tls.rejectUnauthorized=false``
    carries it).

    Args:
        tls: An :class:`ssl.SSLContext` (used as is), a mapping whose keys are in
            :data:`TLS_OPTION_KEYS`, or None for the secure default.

    Raises:
        ValueError: An unknown key or a bad value in the mapping.
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    opts = dict(tls or {})
    unknown = set(opts) - TLS_OPTION_KEYS
    if unknown:
        raise ValueError(f"unknown tls option(s): {', '.join(sorted(unknown))}")
    ctx = ssl.create_default_context(
        cafile=opts.get("cafile"), capath=opts.get("capath"), cadata=opts.get("cadata")
    )
    given = {name: _tls_flag(name, opts[name]) for name in ("verify", *VERIFY_ALIASES)
             if name in opts}
    if len(set(given.values())) > 1:
        raise ValueError(f"contradictory tls options: {', '.join(sorted(given))}")
    verify = next(iter(given.values()), True)
    check_hostname = _tls_flag("check_hostname", opts.get("check_hostname", verify))
    if check_hostname and not verify:
        raise ValueError("tls 'check_hostname' needs 'verify'")
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
            ``"XOAUTH2"``); None picks the strongest one offered.
        tls: :class:`ssl.SSLContext` or a mapping of :data:`TLS_OPTION_KEYS`; None means
            :func:`ssl.create_default_context` (certificates verified). ``repr`` hides
            the key file ``password``.
        lmtp: Speak LMTP (RFC 2033): LHLO, and one reply per recipient after the data.
        allow_plaintext_auth: Allow credentials over an unencrypted connection.
        debug: Log the SMTP traffic at DEBUG level (credentials masked).
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
    #: The SSL context built from ``tls`` (once, shared by every connection).
    ssl_context: ssl.SSLContext = field(init=False, repr=False, compare=False)
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
                     "allow_plaintext_auth", "debug"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool")
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
        if self.auth_method is not None:
            method = str(self.auth_method).upper()
            if method not in AUTH_METHODS:
                raise ValueError(
                    f"auth_method must be one of {', '.join(sorted(AUTH_METHODS))}"
                    " (NTLM is not supported)"
                )
            set_(self, "auth_method", method)
        tls = self.tls
        set_(self, "ssl_context", make_ssl_context(tls))
        server_hostname = self.host
        if isinstance(tls, Mapping) and tls.get("server_hostname"):
            server_hostname = str(tls["server_hostname"])
        set_(self, "server_hostname", server_hostname)

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
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """``local_address`` in the ``(host, port)`` form asyncio wants, or None."""
        local = self.local_address
        if local is None:
            return None
        return (local, 0) if isinstance(local, str) else local
