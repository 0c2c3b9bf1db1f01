"""Sans-IO client SASL for SMTP AUTH (RFC 4954): one exchange driver, many mechanisms.

Theory of operation
-------------------
A mechanism is a *handler*: a function ``handler(credentials) -> generator`` (see
:data:`SASLHandler`). The generator is the whole mechanism, written as a dialogue:

* the first value it yields is the initial response (raw bytes), or None to send the
  bare ``AUTH <name>`` and wait for the server's first challenge;
* every later ``334`` challenge is base64-decoded and sent into the generator
  (``challenge = yield answer``); the value it yields next is the raw answer;
* when it returns (or has nothing more to say) the exchange is over: a further ``334``
  is answered with ``*`` (cancel, RFC 4954) and the login fails.

:class:`SASLExchange` drives one generator for one attempt and does the wire work: the
``AUTH`` line, base64 both ways, CRLF. The connection writes what
:meth:`SASLExchange.start` returns, then what :meth:`SASLExchange.step` returns for every
``334``, until a 235 (success) or an error: one loop for every mechanism, built-in or
registered with ``auth_mechanisms=``. Because answers only ever leave as base64, a CR or
LF inside a user name, password or custom answer cannot inject an SMTP command.

PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and NTLM are handlers like any other (:data:`MECHANISMS`).
NTLM runs through ``pyspnego`` (the optional extra ``aiofastsmtp[ntlm]``), which computes
NTLMv2 without the system's MD4 (OpenSSL 3 disables it); ``spnego`` is imported only when
an NTLM exchange (or option) asks for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import SMTPAuthError, SMTPAuthNotSupported, SMTPInvalidAuth

__all__ = [
    "SASLCredentials",
    "SASLHandler",
    "SASLExchange",
    "SASLMechanism",
    "Plain",
    "Login",
    "CramMD5",
    "XOAuth2",
    "plain",
    "login",
    "cram_md5",
    "xoauth2",
    "ntlm",
    "MECHANISMS",
    "PASSWORD_MECHANISMS",
    "TOKEN_MECHANISMS",
    "PREFERENCE",
    "NTLM_EXTRA",
    "choose_mechanism",
    "check_mechanisms",
    "decode_challenge",
    "load_spnego",
    "ntlm_username",
]

#: Mechanisms tried, strongest first, when the caller does not pick one. CRAM-MD5 first
#: because the password itself never crosses the wire (even a TLS-terminating proxy does
#: not see it); PLAIN before LOGIN because it takes one round trip instead of three. NTLM
#: is never chosen implicitly: it needs an optional package and is asked for by name.
PREFERENCE: tuple[str, ...] = ("CRAM-MD5", "PLAIN", "LOGIN")

#: Most 334 challenges a mechanism answers before the exchange is abandoned.
MAX_STEPS = 4

#: What to install for NTLM (named in the error raised without it).
NTLM_EXTRA = 'pip install "aiofastsmtp[ntlm]"'

#: A SASL mechanism name (RFC 4422 section 3.1): 1 to 20 of A-Z, 0-9, "-" and "_".
_MECH_NAME = re.compile(r"[A-Z0-9_-]{1,20}")


@dataclass(frozen=True, slots=True)
class SASLCredentials:
    """What a mechanism handler gets: the login's credentials and where they go.

    Attributes:
        user: User name (for NTLM ``DOMAIN\\user``, ``user@domain`` or a bare name).
        password: The password, or None (token or custom mechanisms).
        token: The OAuth2 token (``xoauth2=``), or None.
        domain: The NTLM domain when the user name carries none (the ``domain`` option).
        host: The server's host name (what the connection dialled).
    """

    user: str
    password: str | None = None
    token: str | None = None
    domain: str | None = None
    host: str = ""

    def __repr__(self) -> str:  # repr ends up in logs and tracebacks: no secret
        hidden = ", password=<hidden>" if self.password is not None else ""
        hidden += ", token=<hidden>" if self.token is not None else ""
        return f"SASLCredentials(user={self.user!r}{hidden}, domain={self.domain!r})"


#: A mechanism: ``handler(credentials)`` returning a generator that yields the raw
#: initial response (or None for none) and then one raw answer per decoded challenge it
#: is sent (see the module docstring). ``str`` answers are UTF-8 encoded.
SASLHandler = Callable[[SASLCredentials], Generator[bytes | str | None, bytes, None]]


def decode_challenge(text: bytes) -> bytes:
    """Decode the base64 text of a 334 reply.

    Raises:
        SMTPAuthError: The text is not valid base64.
    """
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SMTPAuthError("server sent a challenge that is not base64") from None


def _raw(name: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise SMTPInvalidAuth(
        f"the {name} mechanism yielded {type(value).__name__}; it must yield bytes or str"
    )


class SASLExchange:
    """One authentication exchange: drives a handler's generator (one object per attempt).

    Args:
        name: The mechanism name as sent in ``AUTH`` (upper case).
        handler: The mechanism (see :data:`SASLHandler`).
        credentials: What the handler gets.

    Attributes:
        name: The mechanism name.
        challenges: The decoded challenges received so far, in order.
    """

    __slots__ = ("name", "challenges", "_handler", "_credentials", "_gen", "_started")

    def __init__(self, name: str, handler: SASLHandler, credentials: SASLCredentials) -> None:
        self.name = name
        self.challenges: list[bytes] = []
        self._handler = handler
        self._credentials = credentials
        self._gen: Generator[bytes | str | None, bytes, None] | None = None
        self._started = False

    def start(self) -> bytes:
        """Return the ``AUTH`` command line to write, CRLF included.

        Runs the handler up to its first yield, before anything is written: an error
        there (a missing optional package, bad credentials) leaves the connection as it
        was and propagates unchanged.
        """
        self._started = True
        gen = self._gen = self._handler(self._credentials)
        try:
            initial = next(gen)
        except StopIteration:
            initial = self._gen = None
        if initial is None:
            return b"AUTH " + self.name.encode() + b"\r\n"
        # RFC 4954: an empty initial response is sent as "=".
        encoded = base64.b64encode(_raw(self.name, initial)) or b"="
        return b"AUTH " + self.name.encode() + b" " + encoded + b"\r\n"

    def step(self, challenge: bytes) -> bytes:
        """Answer a 334 challenge (already base64-decoded); return the line to write.

        Raises:
            SMTPAuthError: The mechanism has nothing more to say, or failed on the
                challenge (its error is the cause); the caller cancels with ``*``.
        """
        if not self._started:
            self.start()  # a caller that knows the AUTH line already (tests, proxies)
        gen = self._gen
        if gen is None:
            raise SMTPAuthError(f"unexpected {self.name} challenge from the server")
        self.challenges.append(challenge)
        try:
            answer = gen.send(challenge)
        except StopIteration:
            self._gen = None
            raise SMTPAuthError(f"unexpected {self.name} challenge from the server") from None
        except SMTPAuthError:
            raise
        except Exception as exc:  # a handler's own failure: cancel, keep the connection
            raise SMTPAuthError(f"the {self.name} mechanism failed: {exc}") from exc
        if answer is None:
            answer = b""
        return base64.b64encode(_raw(self.name, answer)) + b"\r\n"

    def close(self) -> None:
        """Release the handler's generator (runs its ``finally`` blocks)."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None


#: The name older code imported; every mechanism is an exchange now.
SASLMechanism = SASLExchange


# -- the built-in mechanisms ------------------------------------------------------------------


def plain(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """PLAIN (RFC 4616): ``authzid NUL authcid NUL password`` as the initial response."""
    yield b"\0" + credentials.user.encode() + b"\0" + (credentials.password or "").encode()


def login(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """LOGIN (obsolete but everywhere): the user name, then the password, on 334 prompts."""
    # The prompts ("Username:", "Password:") are not standardised; answer in order.
    yield None
    yield credentials.user.encode()
    yield (credentials.password or "").encode()


def cram_md5(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """CRAM-MD5 (RFC 2195): ``user SP hex(HMAC-MD5(password, challenge))``."""
    challenge = yield None
    key = (credentials.password or "").encode()
    digest = hmac.new(key, challenge, hashlib.md5).hexdigest()
    yield credentials.user.encode() + b" " + digest.encode()


def xoauth2(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """XOAUTH2 (Google/Microsoft): an OAuth2 bearer token as the initial response.

    On failure the server sends a 334 carrying a base64 JSON error; the client answers
    with an empty line, after which the server sends the final 5xx.
    """
    token = credentials.token or ""
    yield b"user=" + credentials.user.encode() + b"\x01auth=Bearer " + token.encode() + b"\x01\x01"
    yield b""  # acknowledges the JSON error


class _QuietTokens(logging.Filter):
    """Drops pyspnego's DEBUG records that carry NTLM messages in base64.

    pyspnego logs every token it takes and makes ("NTLM step input/output"); the type-3
    message is an offline-crackable NetNTLMv2 response, a secret the traces never show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("NTLM step"))


_QUIET = _QuietTokens()


def load_spnego() -> ModuleType:
    """Import ``spnego`` (pyspnego) for NTLM, silencing its token traces.

    Raises:
        ModuleNotFoundError: pyspnego is not installed; the message names
            :data:`NTLM_EXTRA`.
    """
    try:
        import spnego
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"NTLM needs the pyspnego package: {NTLM_EXTRA}", name="spnego"
        ) from exc
    # Idempotent (a Filterer holds each filter once); process-wide, but it only drops
    # the records that print tokens.
    logging.getLogger("spnego._ntlm").addFilter(_QUIET)
    return spnego


def ntlm_username(user: str, domain: str | None) -> str:
    """The NTLM account name: ``DOMAIN\\user`` or ``user@domain`` as given, else
    ``domain\\user`` when a domain is given, else the bare user name."""
    if domain and "\\" not in user and "@" not in user:
        return f"{domain}\\{user}"
    return user


def ntlm(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """NTLM (MS-NLMP over SMTP AUTH): type 1 as the initial response, type 3 for the
    server's type-2 challenge. Needs pyspnego (:data:`NTLM_EXTRA`)."""
    spnego = load_spnego()
    context = spnego.client(
        ntlm_username(credentials.user, credentials.domain),
        credentials.password,
        hostname=credentials.host or "unspecified",
        protocol="ntlm",
        # The pure-Python NTLM, even where GSSAPI is installed: no MD4 from the system.
        options=spnego.NegotiateOptions.use_ntlm,
    )
    challenge = yield context.step()
    yield context.step(challenge)


#: Every built-in mechanism by name; ``auth_mechanisms=`` adds to (or overrides) these.
MECHANISMS: Mapping[str, SASLHandler] = {
    "PLAIN": plain,
    "LOGIN": login,
    "CRAM-MD5": cram_md5,
    "XOAUTH2": xoauth2,
    "NTLM": ntlm,
}

#: Built-in mechanisms that need a password (and refuse a token).
PASSWORD_MECHANISMS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "NTLM"})
#: Built-in mechanisms that need an OAuth2 token (and refuse a password).
TOKEN_MECHANISMS = frozenset({"XOAUTH2"})


class Plain(SASLExchange):
    """A PLAIN exchange for ``user`` and ``password``."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__("PLAIN", plain, SASLCredentials(user, password))


class Login(SASLExchange):
    """A LOGIN exchange for ``user`` and ``password``."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__("LOGIN", login, SASLCredentials(user, password))


class CramMD5(SASLExchange):
    """A CRAM-MD5 exchange for ``user`` and ``password``."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__("CRAM-MD5", cram_md5, SASLCredentials(user, password))


class XOAuth2(SASLExchange):
    """An XOAUTH2 exchange for ``user`` and an OAuth2 ``token``."""

    def __init__(self, user: str, token: str) -> None:
        super().__init__("XOAUTH2", xoauth2, SASLCredentials(user, token=token))

    @property
    def error(self) -> bytes | None:
        """The JSON error the server sent in its 334, if any."""
        return self.challenges[0] if self.challenges else None


def check_mechanisms(mechanisms: Any) -> dict[str, SASLHandler]:
    """Validate an ``auth_mechanisms`` mapping; return it with upper-case names.

    Raises:
        TypeError: Not a mapping, or a handler that is not callable.
        ValueError: A name that is not a SASL mechanism name (RFC 4422: 1 to 20 of
            A-Z, 0-9, ``-``, ``_``).
    """
    if not isinstance(mechanisms, Mapping):
        raise TypeError('auth_mechanisms must be a mapping {"X-MECH": handler}')
    checked: dict[str, SASLHandler] = {}
    for key, handler in mechanisms.items():
        name = str(key).upper()
        if not _MECH_NAME.fullmatch(name):
            raise ValueError(
                f"auth_mechanisms: {key!r} is not a SASL mechanism name "
                "(1 to 20 of A-Z, 0-9, '-', '_')"
            )
        if not callable(handler):
            raise TypeError(
                f"auth_mechanisms[{key!r}] must be a handler: a generator function "
                "handler(credentials) (see fastsmtp.auth)"
            )
        checked[name] = handler
    return checked


def choose_mechanism(
    offered: Iterable[str], *, preferred: str | None = None, token: bool = False
) -> str:
    """Pick the SASL mechanism to use.

    Args:
        offered: Mechanisms the server announced (upper case).
        preferred: The caller's choice (``auth_method`` or ``login(mechanism=)``); used
            if the server offers it.
        token: The caller gave an OAuth2 token (or provider) rather than a password.

    Returns:
        The mechanism name.

    Raises:
        SMTPAuthNotSupported: No usable mechanism is offered (an ``SMTPAuthError``).
        SMTPInvalidAuth: A built-in mechanism asked for with the wrong kind of secret
            (XOAUTH2 needs a token; PLAIN, LOGIN, CRAM-MD5 and NTLM a password).
    """
    offered = frozenset(offered)
    if not offered:
        raise SMTPAuthNotSupported("the server does not offer authentication (no AUTH in EHLO)")
    if preferred is not None:
        if preferred not in offered:
            raise SMTPAuthNotSupported(
                f"the server does not offer {preferred} (offers {', '.join(sorted(offered))})"
            )
        if (token and preferred in PASSWORD_MECHANISMS) or (
            not token and preferred in TOKEN_MECHANISMS
        ):
            raise SMTPInvalidAuth(
                "XOAUTH2 needs an xoauth2 token, the other mechanisms a password"
            )
        return preferred
    if token:
        if "XOAUTH2" not in offered:
            raise SMTPAuthNotSupported("an xoauth2 token was given but the server does not offer XOAUTH2")
        return "XOAUTH2"
    for name in PREFERENCE:
        if name in offered:
            return name
    hint = " (for NTLM set auth_method='NTLM')" if "NTLM" in offered else ""
    raise SMTPAuthNotSupported(
        f"no mechanism to choose among {', '.join(sorted(offered))}: name one with "
        f"auth_method=, registering a custom one with auth_mechanisms={{name: handler}}{hint}"
    )
