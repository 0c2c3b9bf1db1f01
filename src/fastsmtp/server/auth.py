"""Server-side SASL decoding (sans-IO): PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and NTLM.

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

NTLM (optional, ``pip install "aiofastsmtp[ntlm]"``) is different: the password check is
pyspnego's NTLM acceptor, against a user file of ``DOMAIN:USER:PASSWORD`` lines (or
smbpasswd lines). The exchange runs ``AUTH NTLM [type 1]``, ``334 [type 2]``, ``type 3``
and yields :class:`NTLMCredentials` only when the type-3 response proves the password;
the authenticator then only decides authorisation (the server's default one accepts
verified NTLM credentials).

pyspnego reads the user file from the ``NTLM_USER_FILE`` environment variable, when the
acceptor is made and again when it checks the type-3 message. That variable is
process-global, so with ``ntlm_user_file=`` each NTLM step sets it, runs (synchronously,
a few microseconds of CPU and a small file read) and restores the previous value, under
a lock shared by every server in the process: servers with different user files in
several threads do not see each other's file. Code elsewhere in the process that reads
``NTLM_USER_FILE`` at that very moment would see ours; without ``ntlm_user_file`` the
variable is only read, never changed.
"""

from __future__ import annotations

import binascii
import hmac
import logging
import os
import sys
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ..auth import load_spnego
from .replies import R_AUTH_FAIL

__all__ = [
    "AUTH_MECHANISMS",
    "AuthResult",
    "LoginPassword",
    "CramMD5Credentials",
    "XOAuth2Credentials",
    "NTLMCredentials",
    "NTLM_USER_FILE",
    "check_ntlm_user_file",
    "ntlm_authenticator",
    "SaslExchange",
    "SaslChallenge",
    "SaslError",
]

#: Mechanisms the server can decode, in the order they are advertised.
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "NTLM")

#: The environment variable pyspnego's NTLM acceptor reads its user file from.
NTLM_USER_FILE = "NTLM_USER_FILE"

log = logging.getLogger("fastsmtp.server")

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


class NTLMCredentials(NamedTuple):
    """Credentials from NTLM, already verified against the user file by pyspnego.

    Attributes:
        login: The account as the acceptor matched it, ``DOMAIN\\user`` (or ``user``
            when the client sent no domain), raw bytes.
        verified: Always True: unverified NTLM never reaches the authenticator.
    """

    login: bytes
    verified: bool = True


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
_NTLM_FAILED = SaslError(R_AUTH_FAIL)
_NTLM_UNAVAILABLE = SaslError(b"454 4.7.0 Temporary authentication failure\r\n")
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
        ntlm_user_file: NTLM's user file (None: the ``NTLM_USER_FILE`` environment
            variable as it is); see the module docstring.
    """

    __slots__ = ("mechanism", "_hostname", "_step", "_login", "_challenge", "_ntlm_file",
                 "_acceptor")

    def __init__(self, mechanism: str, hostname: str, ntlm_user_file: str | None = None) -> None:
        if mechanism not in AUTH_MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._hostname = hostname
        self._step = 0
        self._login = b""
        self._challenge = b""
        self._ntlm_file = ntlm_user_file
        self._acceptor: Any = None

    def start(self, initial: bytes | None) -> SaslChallenge | SaslError | Any:
        """Begin with the optional initial response from the ``AUTH`` line.

        Returns:
            A :class:`SaslChallenge`, a :class:`SaslError`, or the decoded credentials.
        """
        mech = self.mechanism
        if mech == "NTLM":
            try:
                self._acceptor = _with_user_file(self._ntlm_file, _new_acceptor)
            except Exception as exc:  # no user file any more, pyspnego gone: not the client's fault
                log.error("AUTH NTLM unavailable: %s", exc)
                return _NTLM_UNAVAILABLE
            self._step = 1
            return _EMPTY_CHALLENGE if initial is None else self.step(initial)
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
        if mech == "NTLM":
            return self._ntlm_step(data)
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

    def _ntlm_step(self, data: bytes) -> SaslChallenge | SaslError | NTLMCredentials:
        # Type 1 (negotiate) gets the type-2 challenge; type 3 (authenticate) is checked.
        # Any pyspnego error is a bad message or bad credentials: 535, never details.
        expected = b"\x01\x00\x00\x00" if self._step == 1 else b"\x03\x00\x00\x00"
        if data[:8] != b"NTLMSSP\x00" or data[8:12] != expected:
            return _MALFORMED
        try:
            out = _with_user_file(self._ntlm_file, self._acceptor.step, data)
        except Exception:
            return _NTLM_FAILED
        if self._step == 1:
            self._step = 2
            return SaslChallenge(b"334 " + b64encode(out or b"") + b"\r\n")
        principal = self._acceptor.client_principal
        if not self._acceptor.complete or not principal:
            return _NTLM_FAILED
        return NTLMCredentials(str(principal).encode("utf-8"))


_T = TypeVar("_T")
#: Serialises every NTLM step that sets NTLM_USER_FILE (see the module docstring).
_ENV_LOCK = threading.Lock()


def _new_acceptor() -> Any:
    spnego = load_spnego()
    # The pure-Python NTLM acceptor (never a system GSSAPI one): it is the one that reads
    # the user file.
    return spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)


def _with_user_file(path: str | None, func: Callable[..., _T], *args: Any) -> _T:
    """Run ``func(*args)`` with ``NTLM_USER_FILE`` set to ``path`` (unchanged if None)."""
    if path is None:
        return func(*args)
    with _ENV_LOCK:
        previous = os.environ.get(NTLM_USER_FILE)
        os.environ[NTLM_USER_FILE] = path
        try:
            return func(*args)
        finally:
            if previous is None:
                del os.environ[NTLM_USER_FILE]
            else:
                os.environ[NTLM_USER_FILE] = previous


def check_ntlm_user_file(path: str | None) -> str | None:
    """Validate the NTLM set-up of a server offering AUTH NTLM; return ``path``.

    Args:
        path: The ``ntlm_user_file`` option, or None to rely on ``NTLM_USER_FILE``.

    Raises:
        ModuleNotFoundError: pyspnego is missing (the message names the extra).
        ValueError: No user file: neither ``ntlm_user_file`` nor the environment
            variable names an existing file.
    """
    load_spnego()
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"ntlm_user_file {path!r} is not a file")
        return path
    if not os.path.isfile(os.environ.get(NTLM_USER_FILE, "")):
        raise ValueError(
            "AUTH NTLM needs a user file of DOMAIN:USER:PASSWORD lines: pass "
            f"ntlm_user_file=, or set the {NTLM_USER_FILE} environment variable"
        )
    return None


def ntlm_authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """The default authenticator of a server offering NTLM without one of its own.

    Accepts :class:`NTLMCredentials` (pyspnego verified the password against the user
    file) and refuses every other mechanism's credentials, which nothing could check.
    """
    if isinstance(auth_data, NTLMCredentials) and auth_data.verified:
        return AuthResult(success=True)
    log.warning("AUTH %s refused: no authenticator configured (only NTLM checks itself)",
                mechanism)
    return AuthResult(success=False)


#: XOAUTH2 failure: a 334 carrying a JSON error, to which the client answers an empty line.
XOAUTH2_FAILURE = (
    b"334 " + b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}') + b"\r\n"
)
