"""SMTP server replies: code, text lines and RFC 3463 enhanced status."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = ["Reply", "ReplyCode"]


class ReplyCode(enum.IntEnum):
    """The reply codes RFC 5321 (and RFC 4954, RFC 3207, RFC 2033) give a meaning to.

    An :class:`int` enum, so ``reply.code == ReplyCode.OK`` and ``ReplyCode(250)`` both
    work; a server may send a code that is not listed here, which stays a plain ``int``
    in :attr:`Reply.code`.
    """

    SYSTEM_STATUS = 211
    HELP = 214
    READY = 220  #: greeting; also "ready to start TLS"
    CLOSING = 221
    AUTH_OK = 235
    OK = 250
    WILL_FORWARD = 251
    CANNOT_VRFY = 252
    AUTH_CHALLENGE = 334
    START_DATA = 354
    UNAVAILABLE = 421  #: the server is closing the connection
    MAILBOX_BUSY = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    TLS_UNAVAILABLE = 454
    PARAMETERS_UNAVAILABLE = 455
    SYNTAX_ERROR = 500
    ARGUMENT_ERROR = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    PARAMETER_NOT_IMPLEMENTED = 504
    AUTH_REQUIRED = 530
    AUTH_FAILED = 535
    ENCRYPTION_REQUIRED = 538
    MAILBOX_UNAVAILABLE = 550
    USER_NOT_LOCAL = 551
    EXCEEDED_STORAGE = 552
    MAILBOX_NAME_INVALID = 553
    TRANSACTION_FAILED = 554
    PARAMETERS_NOT_RECOGNIZED = 555

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
