"""The fastsmtp exception tree.

Every error the library raises derives from :class:`SMTPError` and carries a short string
``code`` in the style of nodemailer's ``smtp-connection`` (``EAUTH``, ``ECONNECTION``, ...),
plus the server's ``reply`` (``response`` text, ``response_code``) when a reply caused it.

Errors are also smtplib's, so code written for :mod:`smtplib` keeps working:
``SMTPError`` is an :class:`smtplib.SMTPException` (hence an :class:`OSError`), every
error caused by a server reply is an :class:`smtplib.SMTPResponseException` with
``smtp_code`` and ``smtp_error`` (the reply text as bytes, as smtplib has it), and the
refusals are smtplib's ``SMTPSenderRefused`` (``.sender``), ``SMTPRecipientsRefused``
(``.recipients = {address: (code, reply bytes)}``), ``SMTPDataError``,
``SMTPAuthenticationError`` and so on. Errors also subclass the builtin they refine, so
``except ConnectionError``, ``except TimeoutError`` or ``except ValueError`` keep working
for code that knows neither fastsmtp nor smtplib.

Three families, in the spirit of h11's local/remote split:

* *local* errors (:class:`SMTPLocalError`): bad input or API misuse, found before
  anything of the failed operation was written; never caused by a reply;
* *reply* errors (:class:`SMTPResponseError`): the server answered with a reply the
  operation cannot go on with; ``reply`` is set;
* the others are remote failures without a reply: the connection was lost or timed out,
  TLS failed, the peer broke the protocol (``SMTPConnectionError``, ``SMTPTimeoutError``,
  ``SMTPTLSError``, ``SMTPProtocolError``).

The categories (``SMTPEnvelopeError``, ``SMTPAuthError``, ...) span the families: ``except
SMTPAuthError`` catches a refused login (:class:`SMTPAuthRefused`, a reply error) as well
as a login that cannot be attempted (:class:`SMTPInvalidAuth`, local).

Every class, its ``code``, its kind (*local*, *reply*, *remote* without a reply, or *any*:
a category whose subclasses span the kinds) and its nearest smtplib and builtin parents:

| class                      | code          | kind   | smtplib parent                                | builtin parent  |
|----------------------------|---------------|--------|-----------------------------------------------|-----------------|
| SMTPError                  | ESMTP         | any    | SMTPException                                 | OSError         |
| SMTPLocalError             | ESMTP         | local  | SMTPException                                 | OSError         |
| SMTPResponseError          | EPROTOCOL     | reply  | SMTPResponseException                         | OSError         |
| SMTPProtocolError          | EPROTOCOL     | remote | SMTPException                                 | OSError         |
| SMTPUnexpectedReply        | EPROTOCOL     | reply  | SMTPResponseException                         | OSError         |
| SMTPHeloRefused            | EPROTOCOL     | reply  | SMTPHeloError                                 | OSError         |
| SMTPConnectionError        | ECONNECTION   | remote | SMTPException                                 | ConnectionError |
| SMTPGreetingRefused        | ECONNECTION   | reply  | SMTPConnectError                              | ConnectionError |
| SMTPServerDisconnected     | ECONNECTION   | remote | SMTPServerDisconnected                        | ConnectionError |
| SMTPServiceClosing         | ECONNECTION   | reply  | SMTPServerDisconnected, SMTPResponseException | ConnectionError |
| SMTPSocketError            | ESOCKET       | remote | SMTPServerDisconnected                        | ConnectionError |
| SMTPMaybeDelivered         | EMAYBE        | remote | SMTPException                                 | ConnectionError |
| SMTPProxyError             | EPROXY        | remote | SMTPException                                 | ConnectionError |
| SMTPTimeoutError           | ETIMEDOUT     | remote | SMTPException                                 | TimeoutError    |
| SMTPTLSError               | ETLS          | any    | SMTPException                                 | ConnectionError |
| SMTPStartTLSRefused        | ETLS          | reply  | SMTPResponseException                         | ConnectionError |
| SMTPTLSNotSupported        | ETLS          | local  | SMTPNotSupportedError                         | ConnectionError |
| SMTPAuthError              | EAUTH         | any    | SMTPException                                 | OSError         |
| SMTPAuthRefused            | EAUTH         | reply  | SMTPAuthenticationError                       | OSError         |
| SMTPInvalidAuth            | EAUTH         | local  | SMTPException                                 | OSError         |
| SMTPAuthNotSupported       | EAUTH         | local  | SMTPNotSupportedError                         | OSError         |
| SMTPEnvelopeError          | EENVELOPE     | any    | SMTPException                                 | ValueError      |
| SMTPInvalidEnvelope        | EENVELOPE     | local  | SMTPException                                 | ValueError      |
| SMTPEnvelopeNotSupported   | EENVELOPE     | local  | SMTPNotSupportedError                         | ValueError      |
| SMTPSenderRefused          | EENVELOPE     | reply  | SMTPSenderRefused                             | ValueError      |
| SMTPRecipientRefused       | EENVELOPE     | reply  | SMTPResponseException                         | ValueError      |
| SMTPRecipientsRefused      | EENVELOPE     | reply  | SMTPResponseException, SMTPRecipientsRefused  | ValueError      |
| SMTPMessageError           | EMESSAGE      | any    | SMTPException                                 | OSError         |
| SMTPInvalidMessage         | EMESSAGE      | local  | SMTPException                                 | OSError         |
| SMTPDataRefused            | EMESSAGE      | reply  | SMTPDataError                                 | OSError         |
| SMTPNotSupported           | ENOTSUPPORTED | local  | SMTPNotSupportedError                         | OSError         |
| SMTPRequireTLSNotSupported | EREQUIRETLS   | local  | SMTPNotSupportedError                         | OSError         |
| SMTPPoolClosed             | EPOOLCLOSED   | local  | SMTPException                                 | OSError         |

What the codes mean (as in nodemailer, plus ``ENOTSUPPORTED``):

* ``ESMTP``: no finer category;
* ``EPROTOCOL``: the peer broke the protocol, or answered with an unexpected reply;
* ``ECONNECTION``: the connection could not be made, or the server closed it;
* ``ESOCKET``: an OS-level socket error (``ECONNRESET``, ...) broke an established
  connection;
* ``ETIMEDOUT``: a connect, greeting or socket inactivity timeout expired;
* ``ETLS``: TLS could not be set up or failed;
* ``EAUTH``: authentication failed or is impossible;
* ``EENVELOPE``: a bad or refused sender or recipient;
* ``EMESSAGE``: a bad, oversized or refused message;
* ``EMAYBE``: the connection was lost after the final dot (maybe delivered);
* ``EPROXY``: the proxy (``proxy=``) could not be reached or refused the tunnel;
* ``ENOTSUPPORTED``: the server lacks an extension the operation needs;
* ``EREQUIRETLS``: the envelope has ``require_tls`` and the server does not offer
  REQUIRETLS over TLS (RFC 8689; nodemailer's code);
* ``EPOOLCLOSED``: the pool closed before the message could be sent.

``args`` is ``(message,)`` and ``str(e)`` the message, which names the addresses and
the server's reply. Whether an error is worth retrying is decided in one place,
:func:`fastsmtp.retry.verdict` (``SMTPError.transient`` asks it).

Every error pickles (``SMTPError.__reduce__``), so it can cross a process boundary
(``concurrent.futures``, ``multiprocessing``) with its reply and attributes.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .reply import Reply

__all__ = [
    "SMTPError",
    "SMTPLocalError",
    "SMTPResponseError",
    "SMTPProtocolError",
    "SMTPUnexpectedReply",
    "SMTPHeloRefused",
    "SMTPConnectionError",
    "SMTPGreetingRefused",
    "SMTPServerDisconnected",
    "SMTPServiceClosing",
    "SMTPSocketError",
    "SMTPMaybeDelivered",
    "SMTPProxyError",
    "SMTPTimeoutError",
    "SMTPTLSError",
    "SMTPStartTLSRefused",
    "SMTPTLSNotSupported",
    "SMTPAuthError",
    "SMTPAuthRefused",
    "SMTPInvalidAuth",
    "SMTPAuthNotSupported",
    "SMTPEnvelopeError",
    "SMTPInvalidEnvelope",
    "SMTPEnvelopeNotSupported",
    "SMTPSenderRefused",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPMessageError",
    "SMTPInvalidMessage",
    "SMTPDataRefused",
    "SMTPNotSupported",
    "SMTPRequireTLSNotSupported",
    "SMTPPoolClosed",
    "reply_error_class",
]

#: How many refused recipients ``str(SMTPRecipientsRefused)`` names before "N more".
MAX_NAMED_RECIPIENTS = 20


def _one_line(reply: Reply) -> str:
    # A multi-line reply on one line: the message of an error lands in one log record.
    return " / ".join(str(reply).splitlines())


class SMTPError(smtplib.SMTPException):
    """Base class of every fastsmtp error.

    Args:
        message: What happened, for people (``str(error)``).
        reply: The server reply that caused the error, if any.
        code: Overrides the class's ``code``.

    Attributes:
        code: A short machine-readable category, e.g. ``"EAUTH"``.
        message: ``str(error)``.
        reply: The server :class:`~fastsmtp.reply.Reply` that caused the error, if any.
    """

    code: str = "ESMTP"

    def __init__(self, message: str, *, reply: Reply | None = None, code: str | None = None):
        # OSError.__init__ directly: the cooperative chain would reach smtplib's
        # __init__(code, msg) signatures, which fastsmtp's errors do not share.
        OSError.__init__(self, message)
        self.message = message
        self.reply = reply
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

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
        """True when another attempt may succeed (see :func:`fastsmtp.retry.verdict`)."""
        # Imported here: retry.py imports this module (imports point one way).
        from .retry import is_retryable

        return is_retryable(self)


def _rebuild(cls: type[SMTPError], args: tuple[Any, ...]) -> SMTPError:
    """Unpickle an error: a bare instance with its ``args``; ``__setstate__`` adds the rest."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


# -- the family bases -------------------------------------------------------------------------


class SMTPLocalError(SMTPError):
    """Bad input or API misuse, found before anything of the operation was written.

    Never caused by a reply. Retrying the same call cannot help: fix the input.
    """


class SMTPResponseError(SMTPError, smtplib.SMTPResponseException):
    """The server answered a command with a reply the operation cannot go on with.

    Base of every reply error; ``reply`` is set.

    Attributes:
        smtp_code: The reply's code (smtplib's name); -1 without a reply (smtplib's
            convention; only an error built by hand lacks one).
        smtp_error: The reply's text as bytes, lines joined by ``\\n`` (as smtplib has
            it); without a reply, the message.
    """

    code = "EPROTOCOL"

    def __init__(self, message: str, *, reply: Reply | None = None, code: str | None = None):
        super().__init__(message, reply=reply, code=code)
        # Plain attributes, as smtplib declares them; they travel in __dict__ when pickled.
        if reply is None:
            self.smtp_code = -1
            self.smtp_error = message.encode("utf-8", "replace")
        else:
            self.smtp_code = reply.code
            self.smtp_error = reply.message.encode("utf-8", "replace")


class SMTPNotSupported(SMTPLocalError, smtplib.SMTPNotSupportedError):
    """The server lacks an extension the operation needs; nothing was written for it.

    Raised through a category subclass (:class:`SMTPAuthNotSupported`,
    :class:`SMTPEnvelopeNotSupported`, :class:`SMTPTLSNotSupported`).
    """

    code = "ENOTSUPPORTED"


# -- protocol ---------------------------------------------------------------------------------


class SMTPProtocolError(SMTPError):
    """The peer broke the protocol: a malformed, over-long or unexpected reply or command."""

    code = "EPROTOCOL"


class SMTPUnexpectedReply(SMTPProtocolError, SMTPResponseError):
    """A reply the dialogue cannot go on with, e.g. a 3xx to MAIL, or RSET refused.

    The connection is closed: client and server disagree on where the dialogue is.
    """

    code = "EPROTOCOL"


class SMTPHeloRefused(SMTPProtocolError, SMTPResponseError, smtplib.SMTPHeloError):
    """The server refused EHLO/LHLO (and HELO)."""

    code = "EPROTOCOL"


# -- connection -------------------------------------------------------------------------------


class SMTPConnectionError(SMTPError, ConnectionError):
    """The TCP connection could not be made or was lost."""

    code = "ECONNECTION"


class SMTPGreetingRefused(SMTPConnectionError, SMTPResponseError, smtplib.SMTPConnectError):
    """The server's greeting was not 220: it refuses the session."""

    code = "ECONNECTION"


class SMTPServerDisconnected(SMTPConnectionError, smtplib.SMTPServerDisconnected):
    """The server closed the connection (possibly in the middle of a reply)."""

    code = "ECONNECTION"


class SMTPServiceClosing(SMTPServerDisconnected, SMTPResponseError):
    """The server answered 421: it is closing the connection."""

    code = "ECONNECTION"


class SMTPSocketError(SMTPServerDisconnected):
    """An OS-level socket error (``ECONNRESET``, ``EPIPE``, ...) broke an established connection.

    A subclass of :class:`SMTPServerDisconnected` (so code that handles a lost connection
    keeps working) with its own code, ``ESOCKET``, as in nodemailer; the ``OSError`` is
    the ``__cause__``.
    """

    code = "ESOCKET"


class SMTPMaybeDelivered(SMTPConnectionError):
    """The connection was lost after the final dot was written but before its reply.

    The server may or may not have accepted the message; resending risks a duplicate.
    """

    code = "EMAYBE"


class SMTPProxyError(SMTPConnectionError):
    """The proxy given as ``proxy=`` could not be reached, or refused the tunnel.

    The message names the proxy (host and port, never its credentials) and its reply
    (an HTTP status line, a SOCKS reply), e.g. bad proxy credentials.
    """

    code = "EPROXY"


class SMTPTimeoutError(SMTPError, TimeoutError):
    """A connect, greeting or socket inactivity timeout expired."""

    code = "ETIMEDOUT"


# -- TLS --------------------------------------------------------------------------------------


class SMTPTLSError(SMTPError, ConnectionError):
    """TLS could not be set up (STARTTLS missing or refused, handshake or verification failed).

    Also a :class:`ConnectionError`: the connection is unusable. It is not an
    :class:`SMTPConnectionError`, whose failures are transient: a TLS failure is a
    configuration problem that a retry does not fix.
    """

    code = "ETLS"


class SMTPStartTLSRefused(SMTPTLSError, SMTPResponseError):
    """The server refused STARTTLS (or answered it with neither 220 nor a refusal)."""

    code = "ETLS"


class SMTPTLSNotSupported(SMTPTLSError, SMTPNotSupported):
    """``require_tls`` was set and the server does not offer STARTTLS."""

    code = "ETLS"


# -- authentication ---------------------------------------------------------------------------


class SMTPAuthError(SMTPError):
    """Authentication failed, was refused, or is not possible (no mechanism, no TLS)."""

    code = "EAUTH"


class SMTPAuthRefused(SMTPAuthError, SMTPResponseError, smtplib.SMTPAuthenticationError):
    """The server refused the credentials (or the SASL exchange) with a reply."""

    code = "EAUTH"


class SMTPInvalidAuth(SMTPAuthError, SMTPLocalError):
    """Login cannot be attempted as asked: no user, both or neither of password and
    token, plaintext without ``allow_plaintext_auth``, a provider that returned nothing."""

    code = "EAUTH"


class SMTPAuthNotSupported(SMTPAuthError, SMTPNotSupported):
    """The server offers no AUTH, or not the mechanism asked for."""

    code = "EAUTH"


# -- envelope ---------------------------------------------------------------------------------


class SMTPEnvelopeError(SMTPError, ValueError):
    """The envelope is invalid (local) or was refused (remote)."""

    code = "EENVELOPE"


class SMTPInvalidEnvelope(SMTPEnvelopeError, SMTPLocalError):
    """An invalid envelope: a bad address or DSN parameter, a control character, no
    recipient. Nothing was written."""

    code = "EENVELOPE"


class SMTPEnvelopeNotSupported(SMTPEnvelopeError, SMTPNotSupported):
    """The envelope needs an extension the server lacks (SMTPUTF8 for a non-ASCII address)."""

    code = "EENVELOPE"


class SMTPSenderRefused(SMTPEnvelopeError, SMTPResponseError, smtplib.SMTPSenderRefused):
    """The server refused ``MAIL FROM``.

    Attributes:
        sender: The refused reverse path (``""`` for the null sender).
    """

    def __init__(
        self,
        message: str,
        *,
        sender: str = "",
        reply: Reply | None = None,
        code: str | None = None,
    ):
        super().__init__(message, reply=reply, code=code)
        self.sender = sender


class SMTPRecipientRefused(SMTPEnvelopeError, SMTPResponseError):
    """The server refused one recipient (at RCPT, or for LMTP after the data).

    One per refused address in ``SendResult.rejected_errors`` and
    ``SMTPRecipientsRefused.rejected_errors``.

    Attributes:
        recipient: The refused address.
    """

    def __init__(
        self,
        message: str,
        *,
        recipient: str = "",
        reply: Reply | None = None,
        code: str | None = None,
    ):
        super().__init__(message, reply=reply, code=code)
        self.recipient = recipient


# type: ignore: smtplib types args as (recipients,), fastsmtp's errors as (message,).
class SMTPRecipientsRefused(  # type: ignore[misc]
    SMTPEnvelopeError, SMTPResponseError, smtplib.SMTPRecipientsRefused
):
    """The server refused every recipient; no message body was sent.

    ``str(error)`` names each refused address with the server's reply; ``reply``,
    ``smtp_code`` and ``smtp_error`` are those of the last refusal.

    Attributes:
        rejected: The refused addresses.
        rejected_errors: One :class:`SMTPEnvelopeError` per refused address (in order).
        recipients: ``{address: (code, reply bytes)}``, as smtplib has it.
    """

    def __init__(
        self,
        message: str,
        *,
        rejected: Sequence[str],
        rejected_errors: Sequence[SMTPEnvelopeError],
        reply: Reply | None = None,
        code: str | None = None,
    ):
        errors = list(rejected_errors)
        if reply is None and errors:
            reply = errors[-1].reply
        recipients: dict[str, tuple[int, bytes]] = {}
        named: list[str] = []
        for i, address in enumerate(rejected):
            # The lists are parallel; an address without its own error gets the last reply.
            cause = errors[i].reply if i < len(errors) else reply
            if cause is None:
                recipients[address] = (-1, b"")
                named.append(address)
            else:
                recipients[address] = (cause.code, cause.message.encode("utf-8", "replace"))
                named.append(f"{address} ({_one_line(cause)})")
        if named:
            more = len(named) - MAX_NAMED_RECIPIENTS
            message += ": " + ", ".join(named[:MAX_NAMED_RECIPIENTS])
            if more > 0:
                message += f" and {more} more"
        super().__init__(message, reply=reply, code=code)
        self.rejected = list(rejected)
        self.rejected_errors = errors
        self.recipients = recipients


# -- message ----------------------------------------------------------------------------------


class SMTPMessageError(SMTPError):
    """The message itself is invalid (local) or its data was refused (remote)."""

    code = "EMESSAGE"


class SMTPInvalidMessage(SMTPMessageError, SMTPLocalError):
    """The message cannot be sent as it is, e.g. it exceeds the server's SIZE (nothing
    was written)."""

    code = "EMESSAGE"


class SMTPDataRefused(SMTPMessageError, SMTPResponseError, smtplib.SMTPDataError):
    """The server refused ``DATA`` or the message after the final dot."""

    code = "EMESSAGE"


class SMTPRequireTLSNotSupported(SMTPNotSupported):
    """``Envelope(require_tls=True)`` and the server does not offer REQUIRETLS over TLS.

    RFC 8689: the message must only travel over verified TLS, so it is refused before
    ``MAIL`` rather than sent without the guarantee (nodemailer's ``EREQUIRETLS``).
    Connect with TLS (``secure=True`` or STARTTLS) to a server that offers REQUIRETLS,
    or send without ``require_tls``.
    """

    code = "EREQUIRETLS"


# -- pool -------------------------------------------------------------------------------------


class SMTPPoolClosed(SMTPLocalError):
    """The pool was closed before this message could be sent."""

    code = "EPOOLCLOSED"


# The reply flavour of each category: a reply that refuses an operation of category
# ``cls`` raises ``_REPLY_CLASSES[cls]``, so call sites name the category only.
_REPLY_CLASSES: dict[type[SMTPError], type[SMTPResponseError]] = {
    SMTPError: SMTPResponseError,
    SMTPProtocolError: SMTPUnexpectedReply,
    SMTPConnectionError: SMTPGreetingRefused,
    SMTPServerDisconnected: SMTPServiceClosing,
    SMTPTLSError: SMTPStartTLSRefused,
    SMTPAuthError: SMTPAuthRefused,
    SMTPEnvelopeError: SMTPRecipientRefused,
    SMTPMessageError: SMTPDataRefused,
}


def reply_error_class(cls: type[SMTPError]) -> type[SMTPError]:
    """The class of an error a reply caused, for an operation of category ``cls``.

    A reply error class (a :class:`SMTPResponseError`) is returned as is; a category
    (``SMTPAuthError``, ``SMTPTLSError``, ...) maps to its reply flavour
    (``SMTPAuthRefused``, ``SMTPStartTLSRefused``, ...), so that every error carrying a
    reply is an :class:`smtplib.SMTPResponseException`.
    """
    if issubclass(cls, SMTPResponseError):
        return cls
    return _REPLY_CLASSES.get(cls, cls)
