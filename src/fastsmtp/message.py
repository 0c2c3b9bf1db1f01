"""Envelopes, DSN parameters and message sources.

An :class:`Envelope` is what goes into ``MAIL FROM`` and ``RCPT TO``; the message is what
goes after ``DATA``. Both are checked before anything is written, but *control
characters* are refused in one place only: where the connection builds command lines
(``SMTPConnection._command``), so no field can slip past a forgotten per-field check.
Addresses are checked (:func:`fastsmtp._syntax.path_error`) in one place too: where the connection
puts them between angle brackets (``SMTPConnection._mail_commands``), the only place an
address becomes protocol bytes, so every envelope is checked however it was made.

A message may be given as ``bytes`` (or any bytes-like object), ``str`` (UTF-8),
:class:`email.message.EmailMessage`, a binary file object, or a sync or async iterable
of bytes chunks. Streams are never read whole: :func:`message_payload` returns either
one bytes object (for the in-memory kinds) or an iterable the connection pulls chunk by
chunk under write backpressure.
"""

from __future__ import annotations

import copy
import email.utils
import io
import os
import re
import stat
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import IO, cast

from . import _codec
from ._syntax import xtext
from .errors import SMTPInvalidEnvelope

__all__ = [
    "DSN",
    "data_size",
    "file_size_floor",
    "Envelope",
    "MessageSource",
    "Payload",
    "envelope_from_message",
    "message_payload",
    "FILE_CHUNK",
]

#: Bytes read at a time from a file object message.
FILE_CHUNK = 64 * 1024

#: RFC 3461 addr-type of ORCPT (an atom, e.g. ``rfc822``).
_ADDR_TYPE = re.compile(r"[A-Za-z0-9-]+")

NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})
RET_VALUES = frozenset({"FULL", "HDRS"})

#: What ``SMTPConnection.send`` accepts as a message.
MessageSource = (
    bytes | bytearray | memoryview | str | Message
    | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]
)
#: What :func:`message_payload` returns: whole bytes, or chunks to stream.
Payload = bytes | bytearray | memoryview | Iterable[bytes] | AsyncIterable[bytes]


def data_size(data: bytes | bytearray | memoryview) -> int:
    """The size a server counts for in-memory message data (RFC 1870 ``SIZE``).

    That is the octets after line endings are normalized to CRLF (a bare LF or CR grows
    by one) and a final CRLF is added when missing, but before dot-stuffing. The
    compiled core counts it in one vectorized pass without a copy (the twin takes three
    ``bytes.count`` scans).

    Args:
        data: The message as given to ``SMTPConnection.send``.
    """
    return _codec.data_size(data)


@dataclass(frozen=True, slots=True)
class DSN:
    """Delivery status notification parameters (RFC 3461).

    Attributes:
        ret: ``"FULL"`` (return the whole message) or ``"HDRS"`` (headers only).
        envid: The sender's envelope identifier (xtext-encoded on the wire).
        notify: When to notify: ``"NEVER"`` alone, or any of ``"SUCCESS"``,
            ``"FAILURE"``, ``"DELAY"``; given as a tuple or a comma-separated string.
        orcpt: The original recipient, sent as ``ORCPT=rfc822;<xtext>`` with each RCPT;
            ``"type;address"`` picks another address type (an atom, ``[A-Za-z0-9-]+``).
    """

    ret: str | None = None
    envid: str | None = None
    notify: tuple[str, ...] | str | None = None
    orcpt: str | None = None

    def __post_init__(self) -> None:
        if self.ret is not None:
            ret = str(self.ret).upper()
            if ret not in RET_VALUES:
                raise SMTPInvalidEnvelope("DSN ret must be FULL or HDRS")
            object.__setattr__(self, "ret", ret)
        notify = self.notify
        if notify is not None:
            items = notify.split(",") if isinstance(notify, str) else list(notify)
            values = tuple(dict.fromkeys(str(v).strip().upper() for v in items if str(v).strip()))
            if not values or not set(values) <= NOTIFY_VALUES:
                raise SMTPInvalidEnvelope(
                    "DSN notify must be NEVER or a list of SUCCESS, FAILURE, DELAY"
                )
            if "NEVER" in values and len(values) > 1:
                raise SMTPInvalidEnvelope("DSN notify NEVER must appear by itself")
            object.__setattr__(self, "notify", values)
        for name in ("envid", "orcpt"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise SMTPInvalidEnvelope(f"DSN {name} must be a non-empty string")
        if self.orcpt is not None:
            kind, value = self._orcpt()
            # The type goes on the wire as is (only the value is xtext-encoded), so it
            # must be an atom: "rfc822 NOTIFY=NEVER;x" would add a parameter.
            if _ADDR_TYPE.fullmatch(kind) is None:
                raise SMTPInvalidEnvelope(
                    f"DSN orcpt address type {kind[:30]!r} is not an atom ([A-Za-z0-9-]+)"
                )
            if not value:
                raise SMTPInvalidEnvelope("DSN orcpt has no address after its type")

    def _orcpt(self) -> tuple[str, str]:
        """``(addr-type, address)`` of ``orcpt``; a bare address is of type ``rfc822``."""
        orcpt = self.orcpt or ""
        if ";" not in orcpt:
            return "rfc822", orcpt
        kind, _, address = orcpt.partition(";")
        return kind, address

    def mail_params(self) -> str:
        """The ``MAIL FROM`` parameters (leading space included), or ``""``."""
        out = ""
        if self.ret:
            out += " RET=" + self.ret
        if self.envid:
            out += " ENVID=" + xtext(self.envid)
        return out

    def rcpt_params(self) -> str:
        """The ``RCPT TO`` parameters (leading space included), or ``""``."""
        out = ""
        if self.notify:
            out += " NOTIFY=" + ",".join(self.notify)
        if self.orcpt:
            kind, address = self._orcpt()
            # xtext refuses control characters in the address and escapes the rest.
            out += " ORCPT=" + kind + ";" + xtext(address)
        return out


@dataclass(frozen=True, slots=True, init=False)
class Envelope:
    """The SMTP envelope of one message.

    ``Envelope("me@example.com", ["you@example.org", "them@example.org"])``: the
    recipients may be one address or any iterable of them (a list, a generator ...);
    they are stored as a tuple.

    Attributes:
        mail_from: The reverse path; ``""`` is the null sender (``MAIL FROM:<>``), used for
            bounces.
        rcpt_to: The recipients, as a tuple.
        size: Predicted message size in bytes (RFC 1870: after CRLF normalization,
            before dot-stuffing): sent as ``SIZE=`` when the server offers SIZE and
            checked against its limit before ``MAIL``. When None, an in-memory message's
            size is computed (:func:`data_size`); a *stream* (file, iterable) has no
            size then, so it is neither declared nor checked against the server's limit
            before sending: the server refuses it after the data instead. Give ``size``
            for large streams.
        use_8bit_mime: Announce ``BODY=8BITMIME`` (when the server offers it).
        binary_mime: The message is binary MIME (RFC 3030 ``BODY=BINARYMIME``: parts in
            ``Content-Transfer-Encoding: binary``): it is sent with ``BDAT`` exactly as
            given, line endings untouched. Needs a connection using CHUNKING
            (``chunking=True``, the default) to a server offering CHUNKING and
            BINARYMIME; otherwise the send fails before ``MAIL`` with
            :class:`~fastsmtp.errors.SMTPEnvelopeNotSupported` (a binary body cannot go
            through ``DATA``: encode its parts as base64 or quoted-printable instead).
        dsn: Delivery status notification parameters (used when the server offers DSN).
        require_tls: RFC 8689 REQUIRETLS: ``MAIL FROM`` carries ``REQUIRETLS``, so every
            hop must relay the message over verified TLS. Sent only over TLS to a server
            that offers it; otherwise the send fails before ``MAIL`` with
            :class:`~fastsmtp.errors.SMTPRequireTLSNotSupported` (nodemailer's
            ``requireTLS`` envelope flag, ``EREQUIRETLS``).
        smtputf8: True when an address is not ASCII (computed).

    Raises:
        SMTPInvalidEnvelope: No recipient, an address that is not a non-empty string, a
            bad ``size`` or ``dsn`` (a ``ValueError`` too).
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    size: int | None
    use_8bit_mime: bool
    dsn: DSN | None
    require_tls: bool
    binary_mime: bool
    smtputf8: bool = field(init=False, repr=False, compare=False)

    # A hand-written __init__ (init=False above) so that the field is typed as what is
    # stored, a tuple, while the argument takes what callers have: a str or any iterable
    # (a list passes strict mypy). Same cost as the generated one: frozen dataclasses set
    # their fields through object.__setattr__ as well.
    def __init__(
        self,
        mail_from: str,
        rcpt_to: str | Iterable[str],
        size: int | None = None,
        use_8bit_mime: bool = False,
        dsn: DSN | None = None,
        require_tls: bool = False,
        binary_mime: bool = False,
    ) -> None:
        set_ = object.__setattr__
        if type(rcpt_to) is tuple:
            rcpt: tuple[str, ...] = rcpt_to
        elif isinstance(rcpt_to, str):
            rcpt = (rcpt_to,)
        else:
            try:
                rcpt = tuple(rcpt_to)
            except TypeError:
                raise SMTPInvalidEnvelope(
                    f"rcpt_to must be an address or an iterable of addresses, "
                    f"not {type(rcpt_to).__name__}"
                ) from None
        if not rcpt:
            raise SMTPInvalidEnvelope("the envelope has no recipient")
        if not isinstance(mail_from, str):
            raise SMTPInvalidEnvelope("mail_from must be a string")
        ascii_ = mail_from.isascii()
        for address in rcpt:
            if not isinstance(address, str) or not address:
                raise SMTPInvalidEnvelope(f"invalid recipient {address!r}")
            ascii_ = ascii_ and address.isascii()
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or size < 0
        ):
            raise SMTPInvalidEnvelope("size must be a non-negative int")
        if dsn is not None and not isinstance(dsn, DSN):
            raise SMTPInvalidEnvelope("dsn must be a DSN")
        if require_tls is not False and require_tls is not True:
            raise SMTPInvalidEnvelope("require_tls must be a bool")
        if binary_mime is not False and binary_mime is not True:
            raise SMTPInvalidEnvelope("binary_mime must be a bool")
        set_(self, "mail_from", mail_from)
        set_(self, "rcpt_to", rcpt)
        set_(self, "size", size)
        set_(self, "use_8bit_mime", use_8bit_mime)
        set_(self, "dsn", dsn)
        set_(self, "require_tls", require_tls)
        set_(self, "binary_mime", binary_mime)
        set_(self, "smtputf8", not ascii_)


def _addresses(message: Message, *headers: str) -> list[str]:
    values: list[str] = []
    for header in headers:
        values.extend(str(v) for v in message.get_all(header, ()))
    # dict.fromkeys: deduplicate and keep the header order.
    return list(dict.fromkeys(addr for _, addr in email.utils.getaddresses(values) if addr))


def _resent_prefix(message: Message) -> str:
    """``"Resent-"`` when the message was resent (one ``Resent-`` block), else ``""``.

    As smtplib's ``send_message``: ``Resent-Date`` is mandatory in each block (RFC 5322
    3.6.6), so it counts the blocks; with several, which one is the latest cannot be
    told in every case, so it is an error rather than a guess.

    Raises:
        SMTPInvalidEnvelope: More than one ``Resent-`` block.
    """
    dates = message.get_all("Resent-Date")
    if not dates:
        return ""
    if len(dates) == 1:
        return "Resent-"
    raise SMTPInvalidEnvelope(
        f"the message has {len(dates)} Resent- header blocks (Resent-Date headers): "
        "which one is the latest is ambiguous; give the envelope explicitly"
    )


def envelope_from_message(message: Message) -> Envelope:
    """Derive the envelope from a message's headers, as smtplib's ``send_message`` does.

    The sender is the first ``Sender`` address, else the first ``From`` address; the
    recipients are every address in ``To``, ``Cc`` and ``Bcc`` (deduplicated). A
    resent message (one ``Resent-Date``) uses ``Resent-Sender`` / ``Resent-From`` and
    ``Resent-To``, ``Resent-Cc``, ``Resent-Bcc`` instead. ``Bcc`` and ``Resent-Bcc``
    themselves are stripped by :func:`message_payload` before sending.

    Raises:
        SMTPInvalidEnvelope: No sender or no recipient could be found, or the message
            has several ``Resent-`` blocks (a ``ValueError``, as in smtplib).
    """
    prefix = _resent_prefix(message)
    senders = _addresses(message, prefix + "Sender") or _addresses(message, prefix + "From")
    if not senders:
        raise SMTPInvalidEnvelope(f"the message has no {prefix}From or {prefix}Sender address")
    recipients = _addresses(message, prefix + "To", prefix + "Cc", prefix + "Bcc")
    if not recipients:
        raise SMTPInvalidEnvelope(
            f"the message has no {prefix}To, {prefix}Cc or {prefix}Bcc address"
        )
    return Envelope(senders[0], tuple(recipients))


def file_size_floor(fileobj: object) -> int | None:
    """The least size a regular file's remaining content can have on the wire, or None.

    That is its byte count from the current position: normalizing line endings only
    ever adds octets, so a file already larger than a server's SIZE limit cannot fit,
    while the exact size would need a full read. None for anything that is not a
    seekable regular file (pipes, sockets, in-memory buffers without a descriptor).
    """
    try:
        status = os.fstat(fileobj.fileno())  # type: ignore[attr-defined]
        if not stat.S_ISREG(status.st_mode):
            return None
        return max(0, status.st_size - int(fileobj.tell()))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _file_chunks(fileobj: IO[bytes]) -> Iterator[bytes]:
    read = fileobj.read
    while True:
        chunk = read(FILE_CHUNK)
        if not chunk:
            return
        if isinstance(chunk, str):
            raise TypeError("a file message must be opened in binary mode")
        yield chunk


def message_payload(message: MessageSource) -> Payload:
    """Turn a message source into bytes or a chunk stream for the DATA phase.

    Args:
        message: bytes-like, ``str`` (encoded as UTF-8), an :class:`email.message.Message`
            (serialized with CRLF line endings, ``Bcc`` and ``Resent-Bcc`` removed from
            a copy, never from the caller's object), a binary file object (read in :data:`FILE_CHUNK` pieces,
            blocking reads: meant for local files), or a sync or async iterable of bytes.

    Returns:
        bytes-like for in-memory sources (sent with one write), else an iterable.

    Raises:
        TypeError: An unsupported source.
    """
    if isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, Message):
        if "Bcc" in message or "Resent-Bcc" in message:
            # Blind copies stay blind (as smtplib's send_message): neither header is
            # transmitted. A shallow copy: Message.__delitem__ rebuilds its header list
            # instead of mutating it, so the caller's message keeps both.
            message = copy.copy(message)
            del message["Bcc"]
            del message["Resent-Bcc"]
        if isinstance(message, EmailMessage):
            return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        return message.as_bytes()
    if hasattr(message, "read"):
        # A file object: typing.IO is no runtime class, so "has read()" is the test.
        return _file_chunks(cast("IO[bytes]", message))
    # A fresh name: on the parameter itself mypy's isinstance below would widen back to
    # the declared union (bytes, str and Message are iterable too).
    stream = message
    if isinstance(stream, (Iterable, AsyncIterable)):
        return stream
    raise TypeError(f"cannot send a message of type {type(message).__name__}")
