"""Envelopes: recipients of any iterable, and the envelope smtplib's send_message builds.

The unit tests compare with smtplib's rules (Sender/From; To, Cc, Bcc; one Resent- block;
Bcc and Resent-Bcc never transmitted); the socket test checks what a real fastsmtp
server receives.
"""

from __future__ import annotations

import dataclasses
import email
from email.message import EmailMessage, Message
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPEnvelopeError, SMTPInvalidEnvelope
from fastsmtp.message import Envelope, envelope_from_message, message_payload
from fastsmtp.server import SMTPServer

# -- Envelope(rcpt_to=...) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "rcpt_to",
    [["b@y.test", "c@y.test"], ("b@y.test", "c@y.test"), iter(["b@y.test", "c@y.test"]),
     {"b@y.test": 1, "c@y.test": 2}.keys(), (a for a in ("b@y.test", "c@y.test"))],
    ids=["list", "tuple", "iterator", "keys", "generator"],
)
def test_recipients_from_any_iterable_are_stored_as_a_tuple(rcpt_to: Any) -> None:
    envelope = Envelope("a@x.test", rcpt_to)
    assert envelope.rcpt_to == ("b@y.test", "c@y.test")
    assert type(envelope.rcpt_to) is tuple


def test_one_address_and_the_tuple_itself() -> None:
    assert Envelope("a@x.test", "b@y.test").rcpt_to == ("b@y.test",)
    rcpt = ("b@y.test",)
    assert Envelope("a@x.test", rcpt).rcpt_to is rcpt  # the common case copies nothing


def test_envelope_is_frozen_compared_and_replaceable() -> None:
    envelope = Envelope("a@x.test", ["b@y.test"], size=10, use_8bit_mime=True)
    assert envelope == Envelope("a@x.test", ("b@y.test",), 10, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.mail_from = "x@x.test"  # type: ignore[misc]
    bigger = dataclasses.replace(envelope, size=20)
    assert bigger.size == 20 and bigger.rcpt_to == ("b@y.test",) and bigger.use_8bit_mime
    assert not hasattr(envelope, "__dict__")  # slots: no per-instance dict
    assert Envelope("ü@x.test", "b@y.test").smtputf8 and not envelope.smtputf8


@pytest.mark.parametrize(
    ("args", "match"),
    [(("a@x.test", []), "no recipient"), (("a@x.test", 42), "iterable of addresses"),
     (("a@x.test", ["b@y.test", ""]), "invalid recipient"), ((None, ["b@y.test"]), "mail_from"),
     (("a@x.test", ["b@y.test"], -1), "size")],
)
def test_bad_envelopes_are_local_value_errors(args: Any, match: str) -> None:
    with pytest.raises(SMTPInvalidEnvelope, match=match) as info:
        Envelope(*args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SMTPEnvelopeError)


# -- envelope_from_message: smtplib's send_message rules --------------------------------------


def _message(*headers: tuple[str, str]) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers:
        message[name] = value
    message.set_content("Hello\n")
    return message


def test_sender_header_wins_over_from_and_bcc_is_a_recipient() -> None:
    message = _message(("From", "Ann <ann@x.test>"), ("Sender", "list@x.test"),
                       ("To", "b@y.test, C <c@y.test>"), ("Cc", "d@y.test"), ("Bcc", "e@y.test"))
    envelope = envelope_from_message(message)
    assert envelope.mail_from == "list@x.test"
    assert envelope.rcpt_to == ("b@y.test", "c@y.test", "d@y.test", "e@y.test")
    assert envelope_from_message(_message(("From", "ann@x.test"), ("To", "b@y.test"))) \
        .mail_from == "ann@x.test"


def test_one_resent_block_gives_the_envelope() -> None:
    message = _message(
        ("From", "ann@x.test"), ("To", "b@y.test"), ("Bcc", "hidden@y.test"),
        ("Resent-Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Resent-From", "fwd@x.test"),
        ("Resent-To", "new@z.test"), ("Resent-Cc", "cc@z.test"), ("Resent-Bcc", "blind@z.test"),
    )
    envelope = envelope_from_message(message)
    assert envelope.mail_from == "fwd@x.test"
    assert envelope.rcpt_to == ("new@z.test", "cc@z.test", "blind@z.test")
    message["Resent-Sender"] = "robot@x.test"
    assert envelope_from_message(message).mail_from == "robot@x.test"


def test_resent_headers_without_resent_date_are_ignored_as_smtplib_does() -> None:
    message = _message(("From", "ann@x.test"), ("To", "b@y.test"), ("Resent-To", "new@z.test"))
    assert envelope_from_message(message).rcpt_to == ("b@y.test",)


def test_several_resent_blocks_are_an_error_as_in_smtplib() -> None:
    message = _message(
        ("From", "ann@x.test"), ("To", "b@y.test"),
        ("Resent-Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Resent-To", "one@z.test"),
        ("Resent-Date", "Tue, 1 Dec 2026 10:00:00 +0000"), ("Resent-To", "two@z.test"),
    )
    with pytest.raises(SMTPInvalidEnvelope, match="2 Resent- header blocks") as info:
        envelope_from_message(message)
    assert isinstance(info.value, ValueError)  # smtplib's send_message raises ValueError


def test_a_resent_block_needs_its_own_addresses() -> None:
    only_date = _message(("From", "ann@x.test"), ("To", "b@y.test"),
                         ("Resent-Date", "Mon, 30 Nov 2026 10:00:00 +0000"))
    with pytest.raises(SMTPInvalidEnvelope, match="Resent-From or Resent-Sender"):
        envelope_from_message(only_date)
    only_date["Resent-From"] = "fwd@x.test"
    with pytest.raises(SMTPInvalidEnvelope, match="Resent-To, Resent-Cc or Resent-Bcc"):
        envelope_from_message(only_date)


def test_neither_bcc_nor_resent_bcc_is_transmitted_and_the_callers_message_keeps_both() -> None:
    message = _message(("From", "ann@x.test"), ("To", "b@y.test"), ("Bcc", "hidden@y.test"),
                       ("Resent-Date", "Mon, 30 Nov 2026 10:00:00 +0000"),
                       ("Resent-From", "fwd@x.test"), ("Resent-To", "new@z.test"),
                       ("Resent-Bcc", "blind@z.test"))
    data = bytes(message_payload(message))  # type: ignore[arg-type]
    parsed = email.message_from_bytes(data)
    assert parsed["Bcc"] is None and parsed["Resent-Bcc"] is None
    assert b"hidden@y.test" not in data and b"blind@z.test" not in data
    assert parsed["Resent-To"] == "new@z.test" and parsed["To"] == "b@y.test"
    assert message["Bcc"] == "hidden@y.test" and message["Resent-Bcc"] == "blind@z.test"
    legacy = Message()  # the compat32 Message class too
    legacy["From"], legacy["To"], legacy["Resent-Bcc"] = "a@x.test", "b@y.test", "c@y.test"
    legacy.set_payload("x\n")
    assert b"c@y.test" not in bytes(message_payload(legacy))  # type: ignore[arg-type]


# -- end to end: a real fastsmtp server ---------------------------------------------------------


class Capture:
    """Records each transaction's envelope and data."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              bytes(envelope.original_content)))
        return "250 2.0.0 queued"


async def test_resent_bcc_receives_the_message_but_is_not_transmitted() -> None:
    handler = Capture()
    server = SMTPServer(handler, host="127.0.0.1", port=0)
    await server.start()
    try:
        message = _message(
            ("From", "ann@x.test"), ("To", "b@y.test"), ("Subject", "forwarded"),
            ("Resent-Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Resent-From", "fwd@x.test"),
            ("Resent-To", "new@z.test"), ("Resent-Bcc", "blind@z.test"),
        )
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True) as conn:
            # Keywords: the positional order of send() is being changed to (message, ...).
            result = await conn.send(envelope=None, message=message)
    finally:
        await server.close()
    assert result.accepted == ["new@z.test", "blind@z.test"]
    [(mail_from, rcpt_tos, data)] = handler.received
    assert mail_from == "fwd@x.test" and rcpt_tos == ["new@z.test", "blind@z.test"]
    assert b"blind@z.test" not in data and b"Resent-Bcc" not in data
    received = email.message_from_bytes(data)
    assert received["Resent-To"] == "new@z.test" and received["Subject"] == "forwarded"
    assert message["Resent-Bcc"] == "blind@z.test"  # the caller's object is untouched
