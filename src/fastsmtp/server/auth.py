"""Server-side SASL decoding (sans-IO): PLAIN, LOGIN, CRAM-MD5 and XOAUTH2.

Theory of operation
-------------------
``AUTH <mechanism> [initial-response]`` creates a :class:`SaslExchange`. The session feeds
it the client's lines (``step``) and gets back either a challenge to send (``334 ...``),
decoded credentials for the authenticator, or an error reply. The exchange never decides
whether credentials are *valid*: that is the authenticator's job (the seed's
``authorizeUser`` event). Credentials are never logged; ``repr`` of every credential
object hides the secret.

The credential objects match aiosmtpd's: PLAIN and LOGIN give a ``LoginPassword``
(``login``, ``password`` as bytes). When the application has imported ``aiosmtpd.smtp``
(it wrote its authenticator against aiosmtpd), aiosmtpd's own ``LoginPassword`` class is
used, so an ``isinstance(auth_data, LoginPassword)`` check in such an authenticator holds.
"""

from __future__ import annotations

import binascii
import hmac
import os
import sys
import time
from base64 import b64decode, b64encode
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "AUTH_MECHANISMS",
    "AuthResult",
    "LoginPassword",
    "CramMD5Credentials",
    "XOAuth2Credentials",
    "SaslExchange",
    "SaslChallenge",
    "SaslError",
]

#: Mechanisms the server can decode, in the order they are advertised.
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")

#: Longest decoded SASL response accepted (RFC 4954 lines are bounded by the reader anyway).
MAX_SASL_RESPONSE = 4096


class LoginPassword(NamedTuple):
    """Credentials from PLAIN or LOGIN (the same shape as aiosmtpd's).

    Attributes:
        login: The authentication identity (user name), raw bytes.
        password: The password, raw bytes.
    """

    login: bytes
    password: bytes

    def __repr__(self) -> str:
        return f"LoginPassword(login={self.login!r}, password=...)"

    def __str__(self) -> str:
        return repr(self)  # never the tuple's fields: the secret stays hidden


class CramMD5Credentials(NamedTuple):
    """Credentials from CRAM-MD5 (RFC 2195): check them with :meth:`verify`.

    The password never crosses the wire, so the authenticator must know it and call
    ``verify(password)``.

    Attributes:
        login: The user name, raw bytes.
        challenge: The challenge the server sent (decoded).
        digest: The hex HMAC-MD5 digest the client sent, lower case.
    """

    login: bytes
    challenge: bytes
    digest: bytes

    def verify(self, password: bytes | str) -> bool:
        """Return True when ``digest`` is HMAC-MD5(password, challenge)."""
        if isinstance(password, str):
            password = password.encode("utf-8")
        expected = hmac.new(password, self.challenge, "md5").hexdigest().encode("ascii")
        return hmac.compare_digest(expected, self.digest)

    def __repr__(self) -> str:
        return f"CramMD5Credentials(login={self.login!r}, digest=...)"

    def __str__(self) -> str:
        return repr(self)  # never the tuple's fields: the secret stays hidden


class XOAuth2Credentials(NamedTuple):
    """Credentials from XOAUTH2 (Google's SASL profile for OAuth 2.0 bearer tokens).

    Attributes:
        login: The user name, raw bytes.
        token: The bearer token, raw bytes.
    """

    login: bytes
    token: bytes

    def __repr__(self) -> str:
        return f"XOAuth2Credentials(login={self.login!r}, token=...)"

    def __str__(self) -> str:
        return repr(self)  # never the tuple's fields: the secret stays hidden


@dataclass(frozen=True)
class AuthResult:
    """What an authenticator returns (the same attributes as aiosmtpd's ``AuthResult``).

    Attributes:
        success: True when the credentials are valid.
        handled: Kept for aiosmtpd compatibility; fastsmtp always sends a reply itself.
        message: A reply to send instead of the default 235 / 535.
        auth_data: Stored in ``session.auth_data`` on success (default: the credentials).
    """

    success: bool
    handled: bool = True
    message: str | None = None
    auth_data: Any = None


class SaslChallenge(NamedTuple):
    """The exchange wants one more client line; send ``reply`` (a full ``334`` line)."""

    reply: bytes


class SaslError(NamedTuple):
    """The exchange failed before reaching the authenticator; send ``reply``."""

    reply: bytes


_ABORTED = SaslError(b"501 5.7.0 Authentication aborted\r\n")
_BAD_BASE64 = SaslError(b"501 5.5.2 Cannot decode base64 response\r\n")
_MALFORMED = SaslError(b"501 5.5.2 Malformed authentication response\r\n")
_EMPTY_CHALLENGE = SaslChallenge(b"334 \r\n")
_USERNAME = SaslChallenge(b"334 " + b64encode(b"Username:") + b"\r\n")
_PASSWORD = SaslChallenge(b"334 " + b64encode(b"Password:") + b"\r\n")


def _login_password(login: bytes, password: bytes) -> Any:
    # Build aiosmtpd's class when the application already uses aiosmtpd (see module doc);
    # looking in sys.modules costs nothing and never imports aiosmtpd ourselves.
    module = sys.modules.get("aiosmtpd.smtp")
    cls = getattr(module, "LoginPassword", None) if module is not None else None
    if cls is None:
        return LoginPassword(login, password)
    return cls(login, password)


def _decode(line: bytes) -> bytes | SaslError:
    line = line.strip()
    if line == b"*":
        return _ABORTED
    if line == b"=":  # RFC 4954: "=" is an empty initial response
        return b""
    try:
        data = b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return _BAD_BASE64
    if len(data) > MAX_SASL_RESPONSE:
        return _MALFORMED
    return data


class SaslExchange:
    """One server-side SASL exchange; see the module docstring.

    Args:
        mechanism: One of :data:`AUTH_MECHANISMS` (upper case).
        hostname: The server name, used in the CRAM-MD5 challenge.
    """

    __slots__ = ("mechanism", "_hostname", "_step", "_login", "_challenge")

    def __init__(self, mechanism: str, hostname: str) -> None:
        if mechanism not in AUTH_MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._hostname = hostname
        self._step = 0
        self._login = b""
        self._challenge = b""

    def start(self, initial: bytes | None) -> SaslChallenge | SaslError | Any:
        """Begin with the optional initial response from the ``AUTH`` line.

        Returns:
            A :class:`SaslChallenge`, a :class:`SaslError`, or the decoded credentials.
        """
        mech = self.mechanism
        if mech == "CRAM-MD5":
            if initial is not None:
                return _MALFORMED  # CRAM-MD5 has no initial response
            # A unique, unpredictable challenge (RFC 2195 suggests a msg-id style token).
            token = f"<{int.from_bytes(os.urandom(8), 'big')}.{int(time.time())}@{self._hostname}>"
            self._challenge = token.encode("ascii", "replace")
            self._step = 1
            return SaslChallenge(b"334 " + b64encode(self._challenge) + b"\r\n")
        if initial is None:
            self._step = 1
            return _USERNAME if mech == "LOGIN" else _EMPTY_CHALLENGE
        self._step = 1
        return self.step(initial)

    def step(self, line: bytes) -> SaslChallenge | SaslError | Any:
        """Consume one client line (base64); see :meth:`start` for the result."""
        data = _decode(line)
        if isinstance(data, SaslError):
            return data
        mech = self.mechanism
        if mech == "PLAIN":
            parts = data.split(b"\x00")
            if len(parts) != 3 or not parts[1]:
                return _MALFORMED
            # authzid (parts[0]) is ignored: acting for another identity is not supported.
            return _login_password(parts[1], parts[2])
        if mech == "LOGIN":
            if self._step == 1:
                self._login = data
                self._step = 2
                return _PASSWORD
            return _login_password(self._login, data)
        if mech == "CRAM-MD5":
            user, sep, digest = data.rpartition(b" ")
            if not sep or not user or len(digest) != 32:
                return _MALFORMED
            return CramMD5Credentials(user, self._challenge, digest.lower())
        # XOAUTH2: "user=" user "\x01auth=Bearer " token "\x01\x01"
        fields = data.split(b"\x01")
        oauth_user: bytes | None = None
        token: bytes | None = None
        for item in fields:
            if item.startswith(b"user="):
                oauth_user = item[5:]
            elif item[:12].lower() == b"auth=bearer ":
                token = item[12:]
        if not oauth_user or not token:
            return _MALFORMED
        return XOAuth2Credentials(oauth_user, token)


#: XOAUTH2 failure: a 334 carrying a JSON error, to which the client answers an empty line.
XOAUTH2_FAILURE = (
    b"334 " + b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}') + b"\r\n"
)
