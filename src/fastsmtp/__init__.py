"""fastsmtp: a fast asyncio SMTP client, connection pool and server.

* :class:`SMTPPool` sends many messages over a pool of connections (nodemailer-smtp-pool);
  :class:`SyncSMTPPool` is its blocking facade.
* :class:`SMTPConnection` is one client connection (smtp-connection); :func:`send`
  connects, sends one message and says QUIT.
* :class:`SMTPServer` (and the threaded :class:`SMTPServerThread`) is the server
  (simplesmtp's server), taking aiosmtpd-style handlers.

``fastsmtp.IMPLEMENTATION`` tells which byte codec runs: ``"cython"`` (compiled) or
``"python"`` (the pure-Python twin); ``FASTSMTP_IMPLEMENTATION`` chooses it.
"""

from __future__ import annotations

import logging

# A library's loggers stay silent unless the application configures logging: without
# this, Python's last-resort handler prints the pool's retry warnings to stderr.
logging.getLogger("fastsmtp").addHandler(logging.NullHandler())

from ._codec import IMPLEMENTATION  # noqa: E402
from ._send import send
from .connection import SendResult, SMTPConnection
from .errors import (
    SMTPAuthError,
    SMTPAuthNotSupported,
    SMTPAuthRefused,
    SMTPConnectionError,
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPEnvelopeNotSupported,
    SMTPError,
    SMTPGreetingRefused,
    SMTPHeloRefused,
    SMTPInvalidAuth,
    SMTPInvalidEnvelope,
    SMTPInvalidMessage,
    SMTPLocalError,
    SMTPMaybeDelivered,
    SMTPMessageError,
    SMTPNotSupported,
    SMTPPoolClosed,
    SMTPProtocolError,
    SMTPProxyError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPRequireTLSNotSupported,
    SMTPResponseError,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceClosing,
    SMTPSocketError,
    SMTPStartTLSRefused,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPTLSNotSupported,
    SMTPUnexpectedReply,
)
from .handlers import Maildir, Printing, Sink, StreamingHandler
from .message import DSN, Envelope
from .options import ConnectionOptions
from .pool import Auth, PoolOptions, SMTPPool, parse_url
from .reply import Reply, ReplyCode
from .retry import Verdict, is_retryable, verdict
from .server import SMTPServer, SMTPServerThread, make_server_ssl_context
from .services import lookup_service
from .sync import SyncSMTPPool

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "Auth",
    "ConnectionOptions",
    "DSN",
    "Envelope",
    "Maildir",
    "PoolOptions",
    "Printing",
    "Reply",
    "ReplyCode",
    "SMTPConnection",
    "SMTPPool",
    "SMTPServer",
    "SMTPServerThread",
    "SendResult",
    "Sink",
    "StreamingHandler",
    "SyncSMTPPool",
    "lookup_service",
    "make_server_ssl_context",
    "parse_url",
    "Verdict",
    "is_retryable",
    "verdict",
    "send",
    "SMTPAuthError",
    "SMTPAuthNotSupported",
    "SMTPAuthRefused",
    "SMTPConnectionError",
    "SMTPDataRefused",
    "SMTPEnvelopeError",
    "SMTPEnvelopeNotSupported",
    "SMTPError",
    "SMTPGreetingRefused",
    "SMTPHeloRefused",
    "SMTPInvalidAuth",
    "SMTPInvalidEnvelope",
    "SMTPInvalidMessage",
    "SMTPLocalError",
    "SMTPMaybeDelivered",
    "SMTPMessageError",
    "SMTPNotSupported",
    "SMTPPoolClosed",
    "SMTPProtocolError",
    "SMTPProxyError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPRequireTLSNotSupported",
    "SMTPResponseError",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPServiceClosing",
    "SMTPSocketError",
    "SMTPStartTLSRefused",
    "SMTPTLSError",
    "SMTPTLSNotSupported",
    "SMTPTimeoutError",
    "SMTPUnexpectedReply",
    "__version__",
]
