"""The injection rules: what may become protocol bytes, decided in one place.

Every rule about characters that could break the SMTP framing lives here, for the client
and the server alike, so that no field can slip past a forgotten per-field copy:

* :data:`CONTROL_CHARS`: characters never allowed in a command line, a reply, a banner, a
  DSN value or a header value we generate (C0 controls, DEL, C1 controls and the Unicode
  line separators);
* :func:`path_error`: why an address cannot go between ``<`` and ``>`` (the client side:
  nothing that could add parameters or commands);
* :func:`mailbox_error`: why a string is not a usable ``local@domain`` mailbox (the
  stricter check the campaign applies to a recipient list before anything is sent);
* :func:`xtext` / :func:`xtext_decode`: RFC 3461 xtext encoding of DSN values, and its
  strict decoding on the server side;
* :func:`is_param_keyword`: the ESMTP parameter keyword syntax (RFC 5321 ``esmtp-keyword``);
* :data:`COMMAND_CONTROL_BYTES` / :data:`HEADER_UNSAFE`: the byte and header variants.

No asyncio, no sockets: values in, verdicts out.
"""

from __future__ import annotations

import re

from .errors import SMTPInvalidEnvelope

__all__ = [
    "CONTROL_CHARS",
    "COMMAND_CONTROL_BYTES",
    "HEADER_UNSAFE",
    "MAX_PATH",
    "has_control",
    "is_param_keyword",
    "mailbox_error",
    "path_error",
    "xtext",
    "xtext_decode",
]

#: Longest forward-path or reverse-path (RFC 5321 section 4.5.3.1.3).
MAX_PATH = 256

#: Characters never allowed in a command line, a reply line, a banner, a name or a DSN
#: value: C0 controls, DEL, C1 controls and the Unicode line separators (a terminal or a
#: log viewer may break a line at U+2028/U+2029).
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: The same rule on a received command line (bytes): C0 controls and DEL. 8-bit bytes are
#: judged later, as UTF-8, where SMTPUTF8 allows them.
COMMAND_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")

#: A header value that would break the header block: any control character but TAB
#: (folding whitespace), so a CR or LF can never start a header of its own.
HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")

# A quoted local part (RFC 5321 Quoted-string) followed by "@": any character but the
# quote and backslash, or a backslash pair. Angle brackets are refused even here: they are
# legal inside quotes, but a server that finds the path's end at the first ">" would read
# what follows as ESMTP parameters. (Control characters are refused before this runs.)
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\<>]|\\[^<>])*"(?=@)')
# Outside a quoted local part: whitespace ends the path and starts a parameter, and an
# angle bracket ends or opens one.
_PATH_BREAK = re.compile(r"[\s<>]")

# RFC 5322 atext; non-ASCII is allowed too (SMTPUTF8, RFC 6531).
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-\u0080-\U0010ffff]{1,63}(?<!-)")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')


def has_control(text: str) -> bool:
    """True when ``text`` holds a character of :data:`CONTROL_CHARS`."""
    if text.isascii() and text.isprintable():
        return False  # the common case, decided without a regex
    return CONTROL_CHARS.search(text) is not None


def is_param_keyword(key: str) -> bool:
    """True when ``key`` is an ESMTP parameter keyword (``SIZE``, ``X-FOO``, ...)."""
    return _PARAM_KEY.match(key) is not None


def xtext(value: str) -> str:
    """Encode ``value`` as RFC 3461 xtext.

    Every character outside ``!``..``~``, and ``+`` and ``=`` themselves, becomes ``+XX``
    (upper-case hex of each UTF-8 byte). Control characters are refused rather than
    encoded: RFC 3461 values are printable text, so a CR or LF here is an injection
    attempt, not data.

    Raises:
        SMTPInvalidEnvelope: ``value`` contains a control character.
    """
    if value.isascii() and value.isprintable():
        if "+" not in value and "=" not in value and " " not in value:
            return value  # the common case: nothing to escape, no copy
    elif CONTROL_CHARS.search(value) is not None:
        raise SMTPInvalidEnvelope(f"control character in DSN value {value[:60]!r}")
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte != 43 and byte != 61:
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 xtext (``a+2Bb`` -> ``a+b``), strictly: the server side of :func:`xtext`.

    Only printable ASCII but ``+`` and ``=`` may appear as is; ``+`` must be followed by
    two upper-case hex digits. The decoded bytes are read as UTF-8; a decoded control
    character (an encoded CR or LF) is refused, so a decoded value is as safe as a plain one.

    Raises:
        ValueError: ``value`` is not valid xtext, or decodes to a control character or
            to bytes that are not UTF-8.
    """
    if _XTEXT.match(value) is None:
        raise ValueError(f"not valid xtext: {value[:60]!r}")
    if "+" not in value:
        return value
    raw = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"xtext does not decode to UTF-8: {value[:60]!r}") from None
    if has_control(text):
        raise ValueError(f"xtext decodes to a control character: {value[:60]!r}")
    return text


def path_error(address: str) -> str | None:
    """Why ``address`` cannot be sent as an SMTP path (``<address>``), or None if it can.

    Only what would break out of the angle brackets is refused, so that no address can
    add ESMTP parameters or commands (``a@x.org> RET=FULL``): any control character,
    ``<`` or ``>`` anywhere, and whitespace outside a quoted local part
    (``"john doe"@example.com`` is fine). Everything else (the syntax of a mailbox, the
    domain) is the server's to judge. The null sender ``""`` is valid here.

    Args:
        address: A sender or recipient address, without angle brackets.
    """
    if address.isascii() and address.isprintable():
        # The common case, decided without a regex: printable ASCII has no control
        # character, so only a space or an angle bracket could break out.
        if " " not in address and "<" not in address and ">" not in address:
            return None
    elif CONTROL_CHARS.search(address) is not None:
        return "control character in the address"
    rest = address
    if address.startswith('"'):
        quoted = _QUOTED_LOCAL.match(address)
        if quoted is not None:
            rest = address[quoted.end():]
    found = _PATH_BREAK.search(rest)
    if found is not None:
        if found.group() in "<>":
            return "angle bracket in the address"
        return "whitespace outside a quoted local part"
    return None


def mailbox_error(address: str) -> str | None:
    """Why ``address`` is not a usable ``local@domain`` mailbox, or None when it is.

    Accepts an RFC 5321 mailbox: a dot-atom or quoted local part and a host name with at
    least one dot, or an address literal; non-ASCII is allowed (SMTPUTF8). Display names
    and angle brackets are refused: this judges bare addresses (a recipient list).
    """
    if not address:
        return "empty address"
    if len(address) > 254:
        return "longer than 254 characters"
    if has_control(address):
        return "contains a control character"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "no local@domain"
    # Only a quoted local part may hold a space.
    if any(c.isspace() for c in (domain if local.startswith('"') else address)):
        return "contains whitespace"
    if len(local.encode("utf-8")) > 64:
        return "local part longer than 64 bytes"
    if not (_QUOTED.fullmatch(local) or all(_ATEXT.fullmatch(p) for p in local.split("."))):
        return "invalid local part"
    if domain.startswith("[") and domain.endswith("]"):
        return None  # an address literal; the server judges it
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return "invalid domain"
    return None
