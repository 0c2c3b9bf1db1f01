"""fastsmtp: a fast asyncio SMTP client, connection pool and server.

``fastsmtp.IMPLEMENTATION`` tells which byte codec runs: ``"cython"`` (compiled) or
``"python"`` (the pure-Python twin); ``FASTSMTP_IMPLEMENTATION`` chooses it.
"""

from __future__ import annotations

from ._codec import IMPLEMENTATION
from .errors import (
    SMTPAuthError,
    SMTPConnectionError,
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPError,
    SMTPMaybeDelivered,
    SMTPMessageError,
    SMTPPoolClosed,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPResponseError,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .reply import Reply

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "Reply",
    "SMTPAuthError",
    "SMTPConnectionError",
    "SMTPDataRefused",
    "SMTPEnvelopeError",
    "SMTPError",
    "SMTPMaybeDelivered",
    "SMTPMessageError",
    "SMTPPoolClosed",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPResponseError",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTimeoutError",
    "SMTPTLSError",
    "__version__",
]
