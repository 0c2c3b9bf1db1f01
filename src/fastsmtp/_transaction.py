"""The client transaction, sans-IO: what a message and its envelope become on the wire.

No asyncio and no sockets here: the IO facades (:mod:`fastsmtp.connection`,
:mod:`fastsmtp.pool`) call these functions and do the writing and waiting themselves.
"""

from __future__ import annotations

from email.message import Message
from typing import Any

from .message import Envelope, MessageSource, envelope_from_message

__all__ = ["split_item", "resolve_envelope"]


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
