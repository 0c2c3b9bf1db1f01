"""The client transaction, sans-IO: envelope -> command lines; replies -> result or error.

Theory of operation
-------------------
No asyncio and no sockets here (h11's rule): :class:`Transaction` is built from a message,
its envelope and the server's capabilities, and holds the exact bytes to write
(:attr:`Transaction.commands`: ``MAIL``, every ``RCPT``, ``DATA``). The connection writes
them, then feeds the replies back and gets told what to do next:

* :meth:`Transaction.envelope_replies` (MAIL/RCPT[/DATA] replies) -> one of
  :data:`BODY` (354: write the message), :data:`SEND_DATA` (no PIPELINING: write
  ``DATA`` and feed its reply to :meth:`Transaction.data_reply`), :data:`RSET_FAIL`
  (write RSET, then raise :attr:`Transaction.error`), :data:`DOT_RSET_FAIL` (the server
  wrongly accepted DATA with no recipient: end the empty message with a dot first);
  an error that needs no clean-up is raised at once.
* :meth:`Transaction.result` (the reply to the dot; LMTP: one per accepted recipient) ->
  a :class:`SendResult`, or raises.

Under CHUNKING (``Transaction(..., chunking=True)``, RFC 3030) there is no DATA and no
wait: :attr:`Transaction.commands` is ``MAIL`` and every ``RCPT``, the connection adds
:func:`bdat` lines with the chunk data (normalized, never dot-stuffed) and writes it all
at once, and only then reads every reply of the transaction together:
:meth:`Transaction.chunk_result` (replies to MAIL and the RCPTs, then one per BDAT
chunk) -> a :class:`SendResult`, or raises. Only the reply to ``BDAT ... LAST`` says
whether the message was delivered, so the rule is: LAST answered 250 and nothing else
wrong -> delivered; LAST not answered 250 -> not delivered, with the first refusal as the
error (sender, every recipient, a chunk); LAST answered 250 although an earlier command
of the transaction failed -> the server took data we cannot account for:
:class:`~fastsmtp.errors.SMTPMaybeDelivered` (and the session is over).

An error is *fatal* (:func:`breaks_session`: a 421, or a 3xx where none is expected)
when client and server can no longer agree on where the dialogue is; the connection must
then be closed: the caller checks ``breaks_session(error)``. Every other refusal leaves
the session usable.

Every user value becomes protocol bytes in :func:`command` and every address in
:func:`path`, checked against the injection rules of :mod:`fastsmtp._syntax`.
"""

from __future__ import annotations

from email.message import Message
from typing import TYPE_CHECKING, Any

# data_size straight from the codec: message.data_size is its documented public wrapper,
# one call more per message on the hot path.
from ._codec import data_size
from ._syntax import CONTROL_CHARS, path_error
from .ehlo import Capabilities
from .errors import (
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPEnvelopeNotSupported,
    SMTPError,
    SMTPInvalidEnvelope,
    SMTPInvalidMessage,
    SMTPMaybeDelivered,
    SMTPProtocolError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPRequireTLSNotSupported,
    SMTPResponseError,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceClosing,
    SMTPUnexpectedReply,
    reply_error_class,
)
from .message import (
    Envelope,
    MessageSource,
    envelope_from_message,
    file_size_floor,
    message_payload,
)
from .reply import Reply

if TYPE_CHECKING:  # pragma: no cover - the signer's module imports dkimpy lazily anyway
    from .dkim import DKIMSigner

__all__ = [
    "BODY",
    "bdat",
    "DOT_RSET_FAIL",
    "MAX_COMMAND",
    "RSET_FAIL",
    "SEND_DATA",
    "RawReply",
    "SendResult",
    "Transaction",
    "breaks_session",
    "command",
    "path",
    "positive_or_negative",
    "reply_error",
    "resolve_envelope",
    "split_item",
]

#: A reply as the core returns it: ``(code, [line bytes])``.
RawReply = tuple[int, list[bytes]]

#: Longest command line built (RFC 5321 allows 512, but SIZE, DSN and SMTPUTF8 parameters
#: legitimately extend MAIL and RCPT; anything longer is a bug or an attack).
MAX_COMMAND = 2048

DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
DOT = b".\r\n"

def bdat(size: int, last: bool) -> bytes:
    """A ``BDAT <size> [LAST]`` command line (RFC 3030): ``size`` octets of data follow."""
    return (b"BDAT %d LAST\r\n" if last else b"BDAT %d\r\n") % size


#: What :meth:`Transaction.envelope_replies` / :meth:`Transaction.data_reply` ask for.
BODY, SEND_DATA, RSET_FAIL, DOT_RSET_FAIL = 0, 1, 2, 3


# -- items and envelopes -------------------------------------------------------------------


def split_item(item: Any) -> tuple[MessageSource, Envelope | None]:
    """One ``send_many`` item as ``(message, envelope)``.

    The rule: an item is a ``(message, envelope)`` pair when it is a tuple of exactly two
    elements whose second is an :class:`~fastsmtp.message.Envelope` or None. Anything
    else is a message on its own, so a tuple or list of bytes chunks stays a message
    (give it an envelope as ``(chunks, envelope)``; on its own it has no headers to take
    one from).
    """
    if isinstance(item, tuple) and len(item) == 2:
        envelope = item[1]
        if envelope is None or isinstance(envelope, Envelope):
            return item[0], envelope
    return item, None


def resolve_envelope(message: MessageSource, envelope: Envelope | None) -> Envelope:
    """The envelope to send ``message`` with: ``envelope``, or one built from its headers.

    Raises:
        TypeError: No envelope, and the message is not an :class:`email.message.Message`
            whose headers could give one.
    """
    if envelope is not None:
        return envelope
    if not isinstance(message, Message):
        raise TypeError(
            f"a {type(message).__name__} message has no headers to take the envelope from: "
            "pass envelope=Envelope(mail_from, rcpt_to), or send an "
            "email.message.EmailMessage (sender from Sender/From, recipients from "
            "To/Cc/Bcc)"
        )
    return envelope_from_message(message)


# -- command lines -------------------------------------------------------------------------


def command(*parts: str, utf8: bool = False) -> bytes:
    """Build one command line: the only place where user values become protocol bytes.

    Args:
        *parts: Joined with single spaces.
        utf8: Allow non-ASCII (only after SMTPUTF8 was negotiated for this transaction).

    Raises:
        SMTPEnvelopeError: A control character, non-ASCII text without ``utf8``, or an
            over-long line. Nothing has been written.
    """
    line = " ".join(parts)
    if line.isascii() and line.isprintable():
        data = line.encode("ascii")  # the common case: no control character possible
    else:
        if CONTROL_CHARS.search(line) is not None:
            raise SMTPInvalidEnvelope(f"control character in command {line[:60]!r}")
        try:
            data = line.encode("utf-8" if utf8 else "ascii")
        except UnicodeEncodeError:
            raise SMTPInvalidEnvelope(
                f"non-ASCII text needs SMTPUTF8 in command {line[:60]!r}"
            ) from None
    if len(data) > MAX_COMMAND:
        raise SMTPInvalidEnvelope(f"command longer than {MAX_COMMAND} bytes")
    return data + b"\r\n"


def path(address: str) -> str:
    """``<address>`` for MAIL FROM / RCPT TO: the one place where addresses are checked.

    Checked here rather than in :class:`Envelope` because this is the only place an
    address becomes protocol bytes: every envelope passes here, however it was built
    (a subclass, an attribute set behind the frozen dataclass's back), just before
    anything of its transaction is written.

    Raises:
        SMTPEnvelopeError: The address could break out of the angle brackets (see
            :func:`~fastsmtp._syntax.path_error`). Nothing has been written.
    """
    why = path_error(address)
    if why is not None:
        raise SMTPInvalidEnvelope(f"invalid address {address[:60]!r}: {why}")
    return "<" + address + ">"


def check_size(caps: Capabilities, size: int, at_least: str = "") -> None:
    """Refuse a message over the server's SIZE limit, before anything is written."""
    limit = caps.size
    if limit and size > limit:
        raise SMTPInvalidMessage(
            f"the message ({at_least}{size} bytes) exceeds the server's SIZE limit "
            f"({limit} bytes)"
        )


def mail_commands(
    envelope: Envelope, caps: Capabilities, size: int | None, secure: bool = False,
    chunking: bool = False,
) -> list[bytes]:
    """``MAIL FROM`` and every ``RCPT TO`` line, with the parameters the server offers.

    ``secure``: the connection is TLS-protected (REQUIRETLS is only ever sent over TLS).
    ``chunking``: the message goes with BDAT (needed for ``envelope.binary_mime``).

    Raises:
        SMTPRequireTLSNotSupported: ``envelope.require_tls`` and the server did not
            offer REQUIRETLS over TLS (RFC 8689 section 4.1: the message must not go
            out without it).
        SMTPEnvelopeNotSupported: ``envelope.binary_mime`` without BDAT and BINARYMIME,
            or a non-ASCII address without SMTPUTF8.
    """
    # Addresses first: an injection attempt is reported as such, whatever the server.
    sender = path(envelope.mail_from)
    recipients = [path(rcpt) for rcpt in envelope.rcpt_to]
    utf8 = envelope.smtputf8
    params = ""
    if utf8:
        if not caps.smtputf8:
            raise SMTPEnvelopeNotSupported(
                "an address is not ASCII and the server does not offer SMTPUTF8"
            )
        params = " SMTPUTF8"
    if size is not None and caps.size is not None:
        check_size(caps, size)
        params += " SIZE=" + str(size)
    if envelope.binary_mime:
        if not (chunking and caps.binarymime):
            raise SMTPEnvelopeNotSupported(
                "the envelope has binary_mime but the connection does not send with BDAT "
                "to a server offering CHUNKING and BINARYMIME (RFC 3030): use such a "
                "server with chunking=True, or encode the message's binary parts as "
                "base64 or quoted-printable and send without binary_mime"
            )
        params += " BODY=BINARYMIME"
    elif envelope.use_8bit_mime and caps.eightbitmime:
        params += " BODY=8BITMIME"
    dsn = envelope.dsn
    rcpt_params = ""
    if dsn is not None and caps.dsn:
        params += dsn.mail_params()
        rcpt_params = dsn.rcpt_params()
    if envelope.require_tls:
        # A plaintext EHLO offering REQUIRETLS is not trusted: an attacker on the path
        # could add it as easily as strip STARTTLS.
        if not secure:
            raise SMTPRequireTLSNotSupported(
                "the envelope has require_tls (RFC 8689) but the connection is not TLS: "
                "connect with secure=True or STARTTLS (require_tls=True on the connection)"
            )
        if "REQUIRETLS" not in caps.extensions:
            raise SMTPRequireTLSNotSupported(
                "the envelope has require_tls (RFC 8689) but the server does not offer "
                "REQUIRETLS: send without require_tls or through a server that offers it"
            )
        params += " REQUIRETLS"
    lines = [command("MAIL FROM:" + sender + params, utf8=utf8)]
    for rcpt in recipients:
        lines.append(command("RCPT TO:" + rcpt + rcpt_params, utf8=utf8))
    return lines


# -- replies -------------------------------------------------------------------------------


def positive_or_negative(code: int) -> bool:
    """A 2xx, 4xx or 5xx reply: what every command may get (3xx only where expected)."""
    return 200 <= code < 300 or 400 <= code < 600


def reply_error(
    raw: RawReply, what: str, cls: type[SMTPError] = SMTPResponseError, **attrs: Any
) -> SMTPError:
    """The error for a reply that is not the one a command wanted.

    ``cls`` names the category: its reply flavour is raised (see
    :func:`~fastsmtp.errors.reply_error_class`), with ``attrs`` (``sender=``,
    ``recipient=``) given to its constructor.

    A 421 and a reply outside 2xx/4xx/5xx (a 3xx where none is expected, e.g. 354 to
    MAIL) give a fatal error (:func:`breaks_session`) instead of ``cls``: after a 421 the
    server is gone, and after an unexpected 3xx client and server disagree on where the
    dialogue is (the server may be reading message data).
    """
    reply = Reply.from_core(*raw)
    if raw[0] == 421:
        return SMTPServiceClosing(f"{what}: {reply}", reply=reply)
    if not positive_or_negative(raw[0]):
        return SMTPUnexpectedReply(f"{what}: unexpected reply {reply}", reply=reply)
    return reply_error_class(cls)(f"{what}: {reply}", reply=reply, **attrs)


def breaks_session(error: BaseException) -> bool:
    """Must the connection be closed after ``error``, a reply error from this module?"""
    return isinstance(error, (SMTPServerDisconnected, SMTPProtocolError, SMTPMaybeDelivered))



class SendResult:
    """What happened to one message.

    Attributes:
        accepted: Recipients the server accepted (LMTP: accepted after the data too).
        rejected: Recipients refused at RCPT (and, LMTP, after the data).
        rejected_errors: One :class:`~fastsmtp.errors.SMTPEnvelopeError` per refused
            recipient, with the server's reply.
        size: Bytes of message data written (on the wire), dot-stuffing and terminator
            included. Under BDAT: the chunks' data, the sum of the ``BDAT`` sizes (no
            stuffing, no terminator; the message's RFC 1870 size).
        envelope_time: Seconds from writing MAIL to the reply to DATA (nodemailer's
            ``envelopeTime``; pipelined behind the previous message, from the write that
            carried it). Under BDAT: from that write to the replies to MAIL and the
            RCPTs (as read by the connection, in order behind the earlier messages).
        message_time: Seconds from the first byte of data written to the reply to the
            final dot (nodemailer's ``messageTime``). Under BDAT the data leaves in the
            same write as MAIL: from that write to the reply to ``BDAT ... LAST``.
        response: The server's reply to the final dot (LMTP: the last one), as a
            :class:`~fastsmtp.reply.Reply` (built on first access). Under BDAT: the
            reply to ``BDAT ... LAST``.
    """

    __slots__ = ("accepted", "rejected", "rejected_errors", "size", "envelope_time",
                 "message_time", "_raw", "_reply")

    def __init__(
        self,
        accepted: list[str],
        rejected: list[str],
        rejected_errors: list[SMTPEnvelopeError],
        size: int,
        raw: RawReply,
        envelope_time: float = 0.0,
        message_time: float = 0.0,
    ) -> None:
        self.accepted = accepted
        self.rejected = rejected
        self.rejected_errors = rejected_errors
        self.size = size
        self.envelope_time = envelope_time
        self.message_time = message_time
        self._raw = raw
        self._reply: Reply | None = None

    @property
    def response(self) -> Reply:
        """The server's final reply."""
        if self._reply is None:
            self._reply = Reply.from_core(*self._raw)
        return self._reply

    def __repr__(self) -> str:
        return (
            f"SendResult(accepted={self.accepted!r}, rejected={self.rejected!r}, "
            f"size={self.size}, response={str(self.response)!r})"
        )


class Transaction:
    """One message's transaction: the bytes to write and the meaning of the replies.

    Args:
        message: The message, as for ``SMTPConnection.send``.
        envelope: Its envelope; None takes it from an EmailMessage's headers.
        caps: The server's capabilities (from the EHLO over TLS, if any).
        lmtp: LMTP: one reply to the dot per accepted recipient.
        dkim: A :class:`~fastsmtp.dkim.DKIMSigner` (the ``dkim`` connection option):
            the payload is signed before anything else looks at it, so ``SIZE`` counts
            the signed bytes.
        secure: The connection is TLS-protected (for ``Envelope.require_tls``).
        chunking: Send with BDAT (the server offers CHUNKING and the ``chunking``
            option is on): no ``DATA`` in ``commands``; read the replies with
            :meth:`chunk_result`.

    Raises:
        TypeError, SMTPEnvelopeError, SMTPMessageError: Bad input (nothing is written).

    Attributes:
        envelope: The envelope used.
        payload: What to write after 354 (see :func:`~fastsmtp.message.message_payload`).
        commands: ``MAIL``, every ``RCPT`` and ``DATA`` (not under BDAT), each a
            CRLF-ended line.
        chunking: The message goes with BDAT.
        binary: ``BODY=BINARYMIME``: the payload is sent exactly as given.
        accepted: Recipients accepted (after :meth:`envelope_replies`).
        rejected: Recipients refused.
        errors: One error per refused recipient.
        error: The error to raise once the clean-up asked for is done.
    """

    __slots__ = ("envelope", "payload", "commands", "lmtp", "accepted", "rejected",
                 "errors", "error", "chunking", "binary")

    def __init__(
        self,
        message: MessageSource,
        envelope: Envelope | None,
        caps: Capabilities,
        lmtp: bool = False,
        dkim: DKIMSigner | None = None,
        secure: bool = False,
        chunking: bool = False,
    ) -> None:
        if envelope is None:
            envelope = resolve_envelope(message, envelope)
        # bytes, the common case, is its own payload: no call for it.
        payload = message if type(message) is bytes else message_payload(message)
        if dkim is not None:
            payload = dkim.sign_payload(message, payload)
        size = envelope.size
        binary = envelope.binary_mime
        if size is None:
            if isinstance(payload, (bytes, bytearray, memoryview)):
                # After CRLF normalization, as the server counts; binary goes as it is.
                size = len(payload) if binary else data_size(payload)
            elif hasattr(message, "read"):
                floor = file_size_floor(message)
                if floor is not None:
                    check_size(caps, floor, at_least="at least ")
        commands = mail_commands(envelope, caps, size, secure, chunking)
        if not chunking:
            commands.append(DATA)
        self.chunking = chunking
        self.binary = binary
        self.envelope = envelope
        self.payload: Any = payload
        self.commands = commands
        self.lmtp = lmtp
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        self.errors: list[SMTPEnvelopeError] = []
        self.error: SMTPError | None = None

    def wants_more(self, replies: list[RawReply]) -> bool:
        """Without PIPELINING: write the next of ``commands[:-1]`` after these replies?

        MAIL must be accepted first; a 421 or an unexpected 3xx ends the session.
        """
        last = replies[-1][0]
        if len(replies) == 1 and last != 250:
            return False
        if last == 421 or not positive_or_negative(last):
            return False
        return len(replies) < len(self.commands) - 1

    def envelope_replies(self, replies: list[RawReply], data_sent: bool) -> int:
        """Read the replies to MAIL, the RCPTs (as far as written) and, if sent, DATA.

        Returns:
            :data:`BODY`, :data:`SEND_DATA`, :data:`RSET_FAIL` or :data:`DOT_RSET_FAIL`.

        Raises:
            SMTPError: A refusal needing no clean-up (sender refused), or a fatal error.
        """
        mail = replies[0]
        data: RawReply | None = replies[-1] if data_sent else None
        if mail[0] != 250:
            if positive_or_negative(mail[0]) and data is not None and data[0] == 354:
                # DATA accepted with no transaction open: the server now takes whatever
                # we write next for message data.
                raise reply_error(data, "DATA accepted although MAIL was refused")
            sender = self.envelope.mail_from
            raise reply_error(mail, f"sender <{sender}> refused", SMTPSenderRefused,
                              sender=sender)
        accepted = self.accepted
        rejected = self.rejected
        errors = self.errors
        for rcpt, raw in zip(self.envelope.rcpt_to, replies[1:]):
            if 200 <= raw[0] < 300:
                accepted.append(rcpt)
            else:
                error = reply_error(raw, f"recipient {rcpt} refused", SMTPRecipientRefused,
                                    recipient=rcpt)
                if not isinstance(error, SMTPEnvelopeError):
                    raise error  # 421 or a 3xx: the session is over
                rejected.append(rcpt)
                errors.append(error)
        if data is not None and data[0] != 354 and not positive_or_negative(data[0]):
            raise reply_error(data, "DATA")  # another 3xx than 354
        if not accepted:
            self.error = SMTPRecipientsRefused(
                "every recipient was refused", rejected=rejected, rejected_errors=errors,
                reply=errors[-1].reply if errors else None,
            )
            # A server must not accept DATA without a recipient; if one does, end the
            # empty message at once rather than leave it waiting for data.
            return DOT_RSET_FAIL if data is not None and data[0] == 354 else RSET_FAIL
        if data is None:
            return SEND_DATA
        if data[0] == 354:
            return BODY  # the common case, without a call
        return self.data_reply(data)

    def data_reply(self, data: RawReply) -> int:
        """Read the reply to DATA: :data:`BODY` or :data:`RSET_FAIL`, else raise."""
        if data[0] == 354:
            return BODY
        error = reply_error(data, "DATA refused", SMTPDataRefused)
        if not isinstance(error, SMTPDataRefused):
            raise error
        self.error = error
        return RSET_FAIL

    def expected_final(self) -> int:
        """Replies the final dot will get: one, or (LMTP) one per accepted recipient."""
        return len(self.accepted) if self.lmtp else 1

    def result(self, replies: list[RawReply], size: int) -> SendResult:
        """The result from the reply (LMTP: replies) to the final dot.

        Raises:
            SMTPDataRefused: The message was refused (LMTP: by every recipient).
            SMTPError: A fatal reply (421, 3xx).
        """
        if self.lmtp:
            return self._lmtp_result(replies, size)
        raw = replies[0]
        if raw[0] != 250:
            raise reply_error(raw, "message refused", SMTPDataRefused)
        return SendResult(self.accepted, self.rejected, self.errors, size, raw)

    def chunk_result(
        self, envelope: list[RawReply], chunks: list[RawReply], size: int, last: bool = True,
    ) -> SendResult:
        """The result of a BDAT transaction from all its replies, in the order written.

        Args:
            envelope: The replies to MAIL and every RCPT.
            chunks: One reply per BDAT chunk written, the last one LAST's if ``last``.
            size: The data's size (the sum of the BDAT sizes).
            last: ``BDAT ... LAST`` was written (False: the chunks stopped at a refused
                one, so the message is not delivered).

        Raises:
            SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataRefused: Not delivered (the
                first refusal, in the order written). The server's transaction may still
                be open: the connection resets before the next one.
            SMTPMaybeDelivered: LAST was accepted although something before it in the
                transaction was refused (the cause is a fatal protocol error).
            SMTPError: A fatal reply (421, a 3xx) to any command of the transaction.
        """
        for raw in envelope:
            if raw[0] == 421 or not positive_or_negative(raw[0]):
                raise reply_error(raw, "MAIL/RCPT")
        for raw in chunks:
            if raw[0] == 421 or not positive_or_negative(raw[0]):
                raise reply_error(raw, "BDAT")
        final = chunks[-1] if last and chunks else None
        error: SMTPError | None = None
        mail = envelope[0]
        if mail[0] != 250:
            sender = self.envelope.mail_from
            error = reply_error(mail, f"sender <{sender}> refused", SMTPSenderRefused,
                                sender=sender)
        else:
            accepted, rejected, errors = self.accepted, self.rejected, self.errors
            for rcpt, raw in zip(self.envelope.rcpt_to, envelope[1:]):
                if 200 <= raw[0] < 300:
                    accepted.append(rcpt)
                else:
                    refusal = reply_error(raw, f"recipient {rcpt} refused",
                                          SMTPRecipientRefused, recipient=rcpt)
                    assert isinstance(refusal, SMTPEnvelopeError)  # 4xx/5xx, checked above
                    rejected.append(rcpt)
                    errors.append(refusal)
            if not accepted:
                error = SMTPRecipientsRefused(
                    "every recipient was refused", rejected=rejected, rejected_errors=errors,
                    reply=errors[-1].reply if errors else None,
                )
            else:
                for raw in chunks:
                    if raw[0] != 250:
                        error = reply_error(raw, "message refused" if raw is final
                                            else "BDAT chunk refused", SMTPDataRefused)
                        break
        if final is not None and final[0] == 250:
            if error is None:
                return SendResult(self.accepted, self.rejected, self.errors, size, final)
            # The server took the message although it refused part of its transaction:
            # whatever it delivered, it is not what we sent. Say so, and stop talking.
            anomaly = SMTPUnexpectedReply(
                f"BDAT LAST accepted after a refusal in its transaction ({error.message})",
                reply=Reply.from_core(*final),
            )
            raise SMTPMaybeDelivered(
                f"the server accepted the data of a transaction it had refused: "
                f"{error.message}", reply=anomaly.reply,
            ) from anomaly
        if error is None:
            # LAST not written: the stream stopped at a refused chunk (found by the caller),
            # or LAST refused: the loop above set the error. Only the former gets here.
            error = SMTPDataRefused("the message data was not all sent")
        raise error

    def _lmtp_result(self, replies: list[RawReply], size: int) -> SendResult:
        for raw in replies:
            if not positive_or_negative(raw[0]):
                raise reply_error(raw, "message")
        delivered: list[str] = []
        rejected, errors = self.rejected, self.errors
        for rcpt, raw in zip(self.accepted, replies):
            if raw[0] == 250:
                delivered.append(rcpt)
            else:
                reply = Reply.from_core(*raw)
                rejected.append(rcpt)
                errors.append(SMTPRecipientRefused(
                    f"recipient {rcpt} refused the message: {reply}", reply=reply,
                    recipient=rcpt,
                ))
        if not delivered:
            # Nobody got the message: a refusal, as when SMTP refuses the dot (and as in
            # nodemailer), not a result; a pool then retries it when every refusal was
            # transient (a permanent one, if any, is the error's reply).
            worst = next((raw for raw in replies if raw[0] >= 500), replies[-1])
            raise reply_error(worst, "message refused by every recipient", SMTPDataRefused)
        return SendResult(delivered, rejected, errors, size, replies[-1])
