"""Sans-IO client SASL for SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5 and XOAUTH2.

A mechanism object never touches a socket. The connection writes what ``start()`` returns
(the whole ``AUTH ...`` command line), and for every ``334`` challenge writes what
``step(challenge)`` returns (one base64 line), until the server answers 235 (success) or
an error. Credentials only ever leave as base64 (or an HMAC), so a CR or LF inside a user
name or password cannot inject an SMTP command.

NTLM is deliberately not implemented: it is a proprietary, multi-round scheme built on
MD4/HMAC-MD5 that modern Microsoft servers replace with OAuth2 (XOAUTH2), and it cannot be
tested against a real peer here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from .errors import SMTPAuthError, SMTPAuthNotSupported, SMTPInvalidAuth

__all__ = [
    "SASLMechanism",
    "Plain",
    "Login",
    "CramMD5",
    "XOAuth2",
    "MECHANISMS",
    "PREFERENCE",
    "choose_mechanism",
    "decode_challenge",
]

#: Mechanisms tried, strongest first, when the caller does not pick one. CRAM-MD5 first
#: because the password itself never crosses the wire (even a TLS-terminating proxy does
#: not see it); PLAIN before LOGIN because it takes one round trip instead of three.
PREFERENCE: tuple[str, ...] = ("CRAM-MD5", "PLAIN", "LOGIN")

#: Most 334 challenges a mechanism answers before the exchange is abandoned.
MAX_STEPS = 4


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def decode_challenge(text: bytes) -> bytes:
    """Decode the base64 text of a 334 reply.

    Raises:
        SMTPAuthError: The text is not valid base64.
    """
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SMTPAuthError("server sent a challenge that is not base64") from None


class SASLMechanism:
    """Base class: one authentication exchange (create a new object per attempt).

    Attributes:
        name: The mechanism name as sent in ``AUTH``.
        secret_steps: True when every line this mechanism writes carries a secret (all of
            them here); the connection masks such lines in debug logs.
    """

    name = ""
    secret_steps = True

    def start(self) -> bytes:
        """Return the ``AUTH`` command line to write, CRLF included."""
        initial = self.initial_response()
        if initial is None:
            return b"AUTH " + self.name.encode() + b"\r\n"
        # RFC 4954: an empty initial response is sent as "=".
        return b"AUTH " + self.name.encode() + b" " + (_b64(initial) or b"=") + b"\r\n"

    def initial_response(self) -> bytes | None:
        """Raw (not yet base64) initial response, or None to wait for a challenge."""
        return None

    def step(self, challenge: bytes) -> bytes:
        """Answer a 334 challenge (already base64-decoded); return the line to write.

        Raises:
            SMTPAuthError: The mechanism expected no (further) challenge.
        """
        raise SMTPAuthError(f"unexpected {self.name} challenge from the server")


class Plain(SASLMechanism):
    """PLAIN (RFC 4616): ``authzid NUL authcid NUL password`` in the AUTH command."""

    name = "PLAIN"

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password

    def initial_response(self) -> bytes:
        return b"\0" + self._user.encode() + b"\0" + self._password.encode()


class Login(SASLMechanism):
    """LOGIN (obsolete but everywhere): user name, then password, each on a 334 prompt."""

    name = "LOGIN"

    def __init__(self, user: str, password: str) -> None:
        self._answers = [user.encode(), password.encode()]

    def step(self, challenge: bytes) -> bytes:
        # The prompts ("Username:", "Password:") are not standardised; answer in order.
        if not self._answers:
            return super().step(challenge)
        return _b64(self._answers.pop(0)) + b"\r\n"


class CramMD5(SASLMechanism):
    """CRAM-MD5 (RFC 2195): ``user SP hex(HMAC-MD5(password, challenge))``."""

    name = "CRAM-MD5"

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password
        self._done = False

    def step(self, challenge: bytes) -> bytes:
        if self._done:
            return super().step(challenge)
        self._done = True
        digest = hmac.new(self._password.encode(), challenge, hashlib.md5).hexdigest()
        return _b64(self._user.encode() + b" " + digest.encode()) + b"\r\n"


class XOAuth2(SASLMechanism):
    """XOAUTH2 (Google/Microsoft): an OAuth2 bearer token in the AUTH command.

    On failure the server sends a 334 carrying a base64 JSON error; the client must answer
    with an empty line, after which the server sends the final 5xx.
    """

    name = "XOAUTH2"

    def __init__(self, user: str, token: str) -> None:
        self._user = user
        self._token = token
        self.error: bytes | None = None  # the JSON error the server sent, if any

    def initial_response(self) -> bytes:
        return b"user=" + self._user.encode() + b"\x01auth=Bearer " + self._token.encode() + b"\x01\x01"

    def step(self, challenge: bytes) -> bytes:
        if self.error is not None:
            return super().step(challenge)
        self.error = challenge
        return b"\r\n"


MECHANISMS: dict[str, type[SASLMechanism]] = {
    "PLAIN": Plain,
    "LOGIN": Login,
    "CRAM-MD5": CramMD5,
    "XOAUTH2": XOAuth2,
}


def choose_mechanism(
    offered: Iterable[str], *, preferred: str | None = None, token: bool = False
) -> str:
    """Pick the SASL mechanism to use.

    Args:
        offered: Mechanisms the server announced (upper case).
        preferred: The caller's choice (``auth_method``); used if the server offers it.
        token: The caller gave an OAuth2 token (or provider) rather than a password.

    Returns:
        The mechanism name.

    Raises:
        SMTPAuthNotSupported: No usable mechanism is offered (an ``SMTPAuthError``).
        SMTPInvalidAuth: XOAUTH2 asked for without a token, or a token for another
            mechanism.
    """
    offered = frozenset(offered)
    if not offered:
        raise SMTPAuthNotSupported("the server does not offer authentication (no AUTH in EHLO)")
    if preferred is not None:
        if preferred not in offered:
            raise SMTPAuthNotSupported(
                f"the server does not offer {preferred} (offers {', '.join(sorted(offered))})"
            )
        if (preferred == "XOAUTH2") != token:
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
    raise SMTPAuthNotSupported(
        f"no supported mechanism among {', '.join(sorted(offered))} (NTLM is not supported)"
    )
