"""SMTP server replies: code, text lines and RFC 3463 enhanced status."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Reply"]

# RFC 3463: class.subject.detail, class 2, 4 or 5, subject up to 3 digits, detail up to 3.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply.

    Attributes:
        code: The three-digit reply code, e.g. ``250``.
        lines: The text of each line, without the code, separator and line ending.
    """

    code: int
    lines: tuple[str, ...] = field(default=())

    @classmethod
    def from_core(cls, code: int, lines: list[bytes]) -> Reply:
        """Build a reply from what the core's ``ReplyParser.feed`` returns."""
        # Servers are allowed 8-bit text after SMTPUTF8; never fail on decoding a reply.
        return cls(code, tuple(line.decode("utf-8", "replace") for line in lines))

    @property
    def message(self) -> str:
        """All lines joined with newlines."""
        return "\n".join(self.lines)

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 enhanced status code of the first line (``"5.1.1"``), if present."""
        if not self.lines:
            return None
        match = _ENHANCED.match(self.lines[0])
        if match is None or match.group(1) != str(self.code)[0]:
            return None
        return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"

    @property
    def is_positive(self) -> bool:
        """2xx or 3xx."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        """4xx: a temporary failure, retrying later may succeed."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: a permanent failure."""
        return self.code >= 500

    def __str__(self) -> str:
        if not self.lines:
            return str(self.code)
        return "\n".join(f"{self.code} {line}" for line in self.lines)
