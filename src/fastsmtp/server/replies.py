"""Server replies: the precomputed wire form of every fixed reply, and :func:`encode_reply`.

Every reply that can be computed ahead is a module constant, so the common path (MAIL,
RCPT, DATA without hooks) allocates almost nothing. Replies a handler returns go through
:func:`encode_reply`, which guarantees they are *one* reply on the wire.
"""

from __future__ import annotations

import re
from typing import Any

from .._syntax import has_control

__all__ = [
    "R_354",
    "R_ALREADY_AUTH",
    "R_AUTH_FAIL",
    "R_AUTH_IN_MAIL",
    "R_AUTH_MECH",
    "R_AUTH_NEEDS_TLS",
    "R_AUTH_OK",
    "R_BAD_PARAM",
    "R_BAD_UTF8",
    "R_BARE_EOL",
    "R_BARE_EOL_DATA",
    "R_BYE",
    "R_CTL",
    "R_DATA_OK",
    "R_LINE_TOO_LONG",
    "R_LOCAL_ERROR",
    "R_MAIL_OK",
    "R_NEED_AUTH",
    "R_NEED_HELO",
    "R_NEED_LHLO",
    "R_NEED_MAIL",
    "R_NEED_RCPT",
    "R_NEED_TLS",
    "R_NESTED_MAIL",
    "R_NON_ASCII",
    "R_NOT_IMPL",
    "R_NO_ARGS",
    "R_OK",
    "R_RCPT_OK",
    "R_STARTTLS",
    "R_SYNTAX_AUTH",
    "R_SYNTAX_EHLO",
    "R_SYNTAX_HELO",
    "R_SYNTAX_LHLO",
    "R_SYNTAX_MAIL",
    "R_SYNTAX_RCPT",
    "R_SYNTAX_VRFY",
    "R_TLS_ACTIVE",
    "R_TLS_UNAVAILABLE",
    "R_TOO_BIG",
    "R_TOO_MANY_RCPT",
    "R_VRFY",
    "R_BAD_DSN",
    "R_NOT_AUTHORIZED",
    "R_IN_MAIL",
    "R_XFORWARD_OK",
    "R_SYNTAX_XCLIENT",
    "R_SYNTAX_XFORWARD",
    "R_SYNTAX_BDAT",
    "R_NO_VALID_RCPT",
    "R_DATA_AFTER_BDAT",
    "R_DATA_BINARYMIME",
    "chunk_received",
    "encode_reply",
]

_REPLY_LINE = re.compile(r"[2-5][0-9][0-9](?:[ -]|$)")

R_OK = b"250 2.0.0 OK\r\n"
R_MAIL_OK = b"250 2.1.0 OK\r\n"
R_RCPT_OK = b"250 2.1.5 OK\r\n"
R_DATA_OK = b"250 2.0.0 OK: message accepted\r\n"
R_354 = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_STARTTLS = b"220 2.0.0 Ready to start TLS\r\n"
R_AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
R_AUTH_FAIL = b"535 5.7.8 Authentication credentials invalid\r\n"
R_VRFY = b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
R_LINE_TOO_LONG = b"500 5.5.2 Error: line too long\r\n"
R_BARE_EOL = b"500 5.5.2 Error: bare <CR> or <LF> in command\r\n"
R_CTL = b"501 5.5.2 Error: control characters are not allowed\r\n"
R_BAD_UTF8 = b"501 5.5.2 Error: invalid UTF-8\r\n"
R_NEED_HELO = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
R_NEED_LHLO = b"503 5.5.1 Error: send LHLO first\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
R_NESTED_MAIL = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NOT_IMPL = b"502 5.5.1 Error: command not implemented\r\n"
R_NEED_TLS = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
R_NEED_AUTH = b"530 5.7.0 Authentication required\r\n"
R_AUTH_NEEDS_TLS = b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
R_ALREADY_AUTH = b"503 5.5.1 Error: already authenticated\r\n"
R_AUTH_IN_MAIL = b"503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n"
R_AUTH_MECH = b"504 5.5.4 Error: unrecognized authentication type\r\n"
R_TLS_ACTIVE = b"503 5.5.1 Error: TLS already active\r\n"
R_TLS_UNAVAILABLE = b"454 4.7.0 TLS not available\r\n"
R_TOO_MANY_RCPT = b"452 4.5.3 Error: too many recipients\r\n"
R_TOO_BIG = b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
R_BARE_EOL_DATA = b"550 5.6.0 Error: bare <CR> or <LF> in message data\r\n"
R_BAD_PARAM = b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"
R_NON_ASCII = b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n"
R_LOCAL_ERROR = b"451 4.3.0 Error: local error in processing\r\n"
R_NO_ARGS = b"501 5.5.4 Error: no arguments allowed\r\n"
R_BAD_DSN = b"501 5.5.4 Error: malformed DSN parameter\r\n"
R_NOT_AUTHORIZED = b"550 5.7.0 Error: insufficient authorization\r\n"
R_IN_MAIL = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
R_XFORWARD_OK = b"250 2.0.0 Ok\r\n"
# CHUNKING (RFC 3030 section 2: 554 or 503 for a BDAT without a valid recipient).
R_NO_VALID_RCPT = b"554 5.5.1 Error: no valid recipients\r\n"
R_DATA_AFTER_BDAT = b"503 5.5.1 Error: DATA after BDAT; end the message with BDAT <size> LAST\r\n"
R_DATA_BINARYMIME = b"503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA\r\n"


def chunk_received(size: int) -> bytes:
    """The reply to a BDAT chunk that is not the last one: its octets were taken."""
    return b"250 2.0.0 OK: %d octets received\r\n" % size


def _syntax(text: str) -> bytes:
    return f"501 5.5.4 Syntax: {text}\r\n".encode("ascii")


R_SYNTAX_MAIL = _syntax("MAIL FROM:<address> [parameters]")
R_SYNTAX_RCPT = _syntax("RCPT TO:<address> [parameters]")
R_SYNTAX_HELO = _syntax("HELO hostname")
R_SYNTAX_EHLO = _syntax("EHLO hostname")
R_SYNTAX_LHLO = _syntax("LHLO hostname")
R_SYNTAX_VRFY = _syntax("VRFY address")
R_SYNTAX_BDAT = _syntax("BDAT chunk-size [LAST] (chunk-size: up to 18 digits); closing connection")
R_SYNTAX_AUTH = _syntax("AUTH mechanism [initial-response]")
R_SYNTAX_XCLIENT = _syntax("XCLIENT attribute=value ... (NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT)")
R_SYNTAX_XFORWARD = _syntax("XFORWARD attribute=value ... (NAME ADDR PORT PROTO HELO IDENT SOURCE)")

# Strings returned by hooks repeat ("250 OK"); their wire form is cached, bounded.
_REPLY_CACHE: dict[str, bytes] = {}
_REPLY_CACHE_MAX = 512


def encode_reply(text: Any) -> bytes | None:
    """Turn a reply returned by a hook into wire bytes, or None when it is not one reply.

    ``text`` may hold several lines separated by ``\\n``, ``\\r\\n`` or ``\\r``. It must
    stay *one* reply, whatever the handler wrote: every line must start with the same
    2xx-5xx code, and no line may hold a control character (NUL, ESC, TAB, DEL, C1 ...).
    The separators are rewritten, ``code-`` on every line but the last and ``code `` on the
    last one, and line endings become CRLF, so a handler can never end a reply early (a
    pipelining client would read the rest as the replies to its next commands) nor put a
    bare CR or LF on the wire. The caller answers 451 when None comes back.
    """
    cached = _REPLY_CACHE.get(text) if type(text) is str else None
    if cached is not None:
        return cached
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    code = lines[0][:3]
    for line in lines:
        if _REPLY_LINE.match(line) is None or line[:3] != code or has_control(line):
            return None
    # The handler's own separators are not trusted: only the last line may end the reply.
    wire = [f"{code}-{line[4:]}\r\n" for line in lines[:-1]]
    text_of_last = lines[-1][4:]
    wire.append(f"{code} {text_of_last}\r\n" if text_of_last else f"{code}\r\n")
    out = "".join(wire).encode("utf-8")
    if len(_REPLY_CACHE) < _REPLY_CACHE_MAX:
        _REPLY_CACHE[text] = out
    return out

