"""Server capabilities, parsed from the reply to EHLO (or LHLO).

The first line of a 250 EHLO reply is the server's greeting text; every later line is one
extension keyword with optional parameters (RFC 5321 section 4.1.1.1). Keywords are
case-insensitive. ``AUTH=LOGIN PLAIN`` is an obsolete spelling some servers still send
alongside ``AUTH``; both are merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Capabilities", "parse_ehlo"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server announced in its EHLO reply.

    Attributes:
        greeting: The first line of the EHLO reply (usually the server's name).
        size: The SIZE limit in bytes; 0 when SIZE is offered without a limit, None when
            SIZE is not offered.
        pipelining: PIPELINING (RFC 2920).
        starttls: STARTTLS (RFC 3207).
        auth: SASL mechanisms offered (upper case), empty when AUTH is absent.
        eightbitmime: 8BITMIME (RFC 6152).
        smtputf8: SMTPUTF8 (RFC 6531).
        dsn: DSN (RFC 3461).
        enhancedstatuscodes: ENHANCEDSTATUSCODES (RFC 2034).
        chunking: CHUNKING, i.e. BDAT (RFC 3030).
        binarymime: BINARYMIME (RFC 3030; usable only together with CHUNKING).
        extensions: Every keyword (upper case) mapped to its parameter text.
    """

    greeting: str = ""
    size: int | None = None
    pipelining: bool = False
    starttls: bool = False
    auth: frozenset[str] = frozenset()
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    enhancedstatuscodes: bool = False
    chunking: bool = False
    binarymime: bool = False
    extensions: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.extensions


def parse_ehlo(lines: Iterable[str]) -> Capabilities:
    """Parse the text lines of a 250 EHLO/LHLO reply.

    Args:
        lines: The reply's lines without code and separator (``Reply.lines``); the first
            is the greeting.

    Returns:
        The announced :class:`Capabilities`. A malformed SIZE parameter is read as
        "SIZE offered, limit unknown" (0) rather than failing the connection.
    """
    it = iter(lines)
    greeting = next(it, "")
    extensions: dict[str, str] = {}
    auth: set[str] = set()
    for line in it:
        keyword, _, params = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword.startswith("AUTH="):
            # Obsolete form: "AUTH=LOGIN PLAIN".
            auth.update(m.upper() for m in (keyword[5:] + " " + params).split() if m)
            continue
        if not keyword:
            continue
        params = params.strip()
        extensions[keyword] = params
        if keyword == "AUTH":
            auth.update(m.upper() for m in params.split())
    size: int | None = None
    if "SIZE" in extensions:
        raw = extensions["SIZE"]
        size = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 20 else 0
    return Capabilities(
        greeting=greeting,
        size=size,
        pipelining="PIPELINING" in extensions,
        starttls="STARTTLS" in extensions,
        auth=frozenset(auth),
        eightbitmime="8BITMIME" in extensions,
        smtputf8="SMTPUTF8" in extensions,
        dsn="DSN" in extensions,
        enhancedstatuscodes="ENHANCEDSTATUSCODES" in extensions,
        chunking="CHUNKING" in extensions,
        binarymime="BINARYMIME" in extensions,
        extensions=MappingProxyType(extensions),
    )
