"""A user's program, checked by strict mypy in ``make lint`` (never run: no server here).

It uses the public API the way the README does; a change that breaks a user's types
(an argument order, a return type, an exception's attributes) fails ``make lint``.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import TYPE_CHECKING

import fastsmtp
from fastsmtp import (
    DSN,
    Envelope,
    SendResult,
    SMTPConnection,
    SMTPError,
    SMTPPool,
    SMTPRecipientsRefused,
    SyncSMTPPool,
)

if TYPE_CHECKING:
    from typing_extensions import assert_type


def build() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "me@example.com", "you@example.org", "Hi"
    msg.set_content("Hello")
    return msg


def envelopes() -> list[Envelope]:
    # rcpt_to: one address, a list, a tuple or any iterable; stored as a tuple.
    one = Envelope("me@example.com", "you@example.org")
    many = Envelope("me@example.com", ["a@example.org", "b@example.org"])
    lazy = Envelope("me@example.com", (f"r{i}@example.org" for i in range(3)),
                    dsn=DSN(notify=("FAILURE",), ret="HDRS"))
    assert_type(many.rcpt_to, tuple[str, ...])
    return [one, many, lazy]


async def items() -> AsyncIterator[EmailMessage | tuple[bytes, Envelope]]:
    yield build()
    yield b"Subject: raw\r\n\r\nbody\r\n", Envelope("me@example.com", ["you@example.org"])


async def with_pool() -> int:
    async with SMTPPool("smtp://localhost:2525", max_connections=4) as pool:
        result = await pool.send(build())
        assert_type(result, SendResult)
        await pool.send(b"raw", Envelope("me@example.com", ["you@example.org"]))
        sent = 0
        async for item, outcome in pool.send_many(items()):
            if isinstance(outcome, SendResult):
                sent += len(outcome.accepted)
            else:
                assert_type(outcome, Exception)
        return sent


async def with_connection() -> list[str]:
    async with SMTPConnection("localhost", 2525, ignore_tls=True) as conn:
        result = await conn.send(build())
        await conn.send(b"raw", Envelope("me@example.com", ["you@example.org"]))
        async for _item, outcome in conn.send_many([build(), build()]):
            print(outcome)
        return result.accepted


async def one_call() -> None:
    try:
        result = await fastsmtp.send(build(), host="localhost", port=2525)
        print(result.response.code)
    except SMTPRecipientsRefused as exc:
        for address, (code, text) in exc.recipients.items():
            print(address, code, text.decode())
    except smtplib.SMTPResponseException as exc:
        print(exc.smtp_code, exc.smtp_error)
    except SMTPError as exc:
        print(exc.code, exc.transient)


def sync() -> None:
    with SyncSMTPPool(host="localhost", port=2525) as pool:
        result = pool.send(build())
        assert_type(result, SendResult)
        for _item, outcome in pool.send_many([build()]):
            print(outcome)
