"""The fastsmtp exception tree.

Every error the library raises derives from :class:`SMTPError` and carries a short string
``code`` in the style of nodemailer's ``smtp-connection`` (``EAUTH``, ``ECONNECTION``, ...),
plus the server's ``response`` text and ``response_code`` when a reply caused it.

Errors also subclass the builtin they refine, so ``except ConnectionError`` or
``except TimeoutError`` keep working for code that does not know fastsmtp.

Two families, as in h11: *local* errors are misuse of the API or bad input found before
anything was written (``SMTPEnvelopeError`` for a bad address, ``SMTPMessageError`` for an
oversized message); *remote* errors are a peer that misbehaves or refuses
(``SMTPProtocolError``, ``SMTPResponseError`` and its subclasses).

The codes, as in nodemailer:

* ``ESMTP``: :class:`SMTPError` itself (no finer category);
* ``EPROTOCOL``: the peer broke the protocol, e.g. answered with an unexpected reply;
* ``ECONNECTION``: the connection could not be made, or the server closed it;
* ``ESOCKET``: an OS-level socket error (``ECONNRESET``, ...) broke an established
  connection (:class:`SMTPSocketError`);
* ``ETIMEDOUT``: a connect, greeting or socket inactivity timeout expired;
* ``ETLS``: TLS could not be set up or failed;
* ``EAUTH``: authentication failed or is impossible;
* ``EENVELOPE``: a bad or refused sender or recipient;
* ``EMESSAGE``: a bad, oversized or refused message;
* ``EMAYBE``: the connection was lost after the final dot (maybe delivered);
* ``EPOOLCLOSED``: the pool closed before the message could be sent.

Every error pickles (``SMTPError.__reduce__``), so it can cross a process boundary
(``concurrent.futures``, ``multiprocessing``) with its reply and attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .reply import Reply

__all__ = [
    "SMTPError",
    "SMTPProtocolError",
    "SMTPConnectionError",
    "SMTPServerDisconnected",
    "SMTPSocketError",
    "SMTPTimeoutError",
    "SMTPTLSError",
    "SMTPAuthError",
    "SMTPResponseError",
    "SMTPEnvelopeError",
    "SMTPSenderRefused",
    "SMTPRecipientsRefused",
    "SMTPMessageError",
    "SMTPDataRefused",
    "SMTPMaybeDelivered",
    "SMTPPoolClosed",
]


class SMTPError(Exception):
    """Base class of every fastsmtp error.

    Attributes:
        code: A short machine-readable category, e.g. ``"EAUTH"``.
        reply: The server :class:`~fastsmtp.reply.Reply` that caused the error, if any.
    """

    code: str = "ESMTP"

    def __init__(self, message: str, *, reply: Reply | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.reply = reply
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException pickles as cls(*args) plus __dict__; a subclass whose __init__
        # requires keyword-only arguments (SMTPRecipientsRefused) cannot be rebuilt that
        # way. Build the object without __init__ and restore args and attributes instead.
        return (_rebuild, (type(self), self.args), self.__dict__)

    @property
    def response(self) -> str | None:
        """The last server reply as text (``"550 5.1.1 No such user"``), if any."""
        return str(self.reply) if self.reply is not None else None

    @property
    def response_code(self) -> int | None:
        """The numeric code of the reply that caused the error, if any."""
        return self.reply.code if self.reply is not None else None

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed (a 4xx reply or a lost connection)."""
        return self.reply is not None and self.reply.is_transient


def _rebuild(cls: type[SMTPError], args: tuple[Any, ...]) -> SMTPError:
    """Unpickle an error: a bare instance with its ``args``; ``__setstate__`` adds the rest."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class SMTPProtocolError(SMTPError):
    """The peer broke the protocol: a malformed, over-long or unexpected reply or command."""

    code = "EPROTOCOL"


class SMTPConnectionError(SMTPError, ConnectionError):
    """The TCP connection could not be made or was lost."""

    code = "ECONNECTION"

    @property
    def transient(self) -> bool:
        return True


class SMTPServerDisconnected(SMTPConnectionError):
    """The server closed the connection (possibly in the middle of a reply)."""


class SMTPSocketError(SMTPServerDisconnected):
    """An OS-level socket error (``ECONNRESET``, ``EPIPE``, ...) broke an established connection.

    A subclass of :class:`SMTPServerDisconnected` (so code that handles a lost connection
    keeps working) with its own code, ``ESOCKET``, as in nodemailer; the ``OSError`` is
    the ``__cause__``.
    """

    code = "ESOCKET"


class SMTPTimeoutError(SMTPError, TimeoutError):
    """A connect, greeting or socket inactivity timeout expired."""

    code = "ETIMEDOUT"

    @property
    def transient(self) -> bool:
        return True


class SMTPTLSError(SMTPError, ConnectionError):
    """TLS could not be set up (STARTTLS missing or refused, handshake or verification failed).

    Also a :class:`ConnectionError`: the connection is unusable. It is not an
    :class:`SMTPConnectionError`, whose failures are transient: a TLS failure is a
    configuration problem that a retry does not fix.
    """

    code = "ETLS"


class SMTPAuthError(SMTPError):
    """Authentication failed, was refused, or is not possible (no mechanism, no TLS)."""

    code = "EAUTH"


class SMTPResponseError(SMTPError):
    """The server answered a command with an error reply."""

    code = "EPROTOCOL"


class SMTPEnvelopeError(SMTPResponseError, ValueError):
    """The envelope is invalid (local) or was refused (remote)."""

    code = "EENVELOPE"


class SMTPSenderRefused(SMTPEnvelopeError):
    """The server refused ``MAIL FROM``."""


class SMTPRecipientsRefused(SMTPEnvelopeError):
    """The server refused every recipient; no message body was sent.

    Attributes:
        rejected: The refused addresses.
        rejected_errors: One :class:`SMTPEnvelopeError` per refused address.
    """

    def __init__(
        self,
        message: str,
        *,
        rejected: list[str],
        rejected_errors: list[SMTPEnvelopeError],
        reply: Reply | None = None,
    ):
        super().__init__(message, reply=reply)
        self.rejected = rejected
        self.rejected_errors = rejected_errors


class SMTPMessageError(SMTPResponseError):
    """The message itself is invalid (local) or its data was refused (remote)."""

    code = "EMESSAGE"


class SMTPDataRefused(SMTPMessageError):
    """The server refused ``DATA`` or the message after the final dot."""


class SMTPMaybeDelivered(SMTPConnectionError):
    """The connection was lost after the final dot was written but before its reply.

    The server may or may not have accepted the message; resending risks a duplicate.
    """

    code = "EMAYBE"

    @property
    def transient(self) -> bool:
        return False


class SMTPPoolClosed(SMTPError):
    """The pool was closed before this message could be sent."""

    code = "EPOOLCLOSED"
