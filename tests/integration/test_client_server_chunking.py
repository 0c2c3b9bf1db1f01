"""Our client against our server, over BDAT (CHUNKING) and over DATA.

The same batch of messages, with refusals in the middle of the pipeline (a refused
sender, a message whose every recipient is refused, a message refused after its data),
goes once with BDAT windows and once with DATA: the outcomes must be the same, message
by message, and the server must have received exactly the accepted messages, byte for
byte (normalized, never stuffed or unstuffed wrongly).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastsmtp.connection import SendResult, SMTPConnection
from fastsmtp.errors import SMTPDataRefused, SMTPRecipientsRefused, SMTPSenderRefused
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool

from support.server import Recorder, serve


class Picky(Recorder):
    """Refuses the sender ``no@x.org``, the recipient ``nobody@y.org`` and any message
    containing ``REJECT``."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address == "no@x.org":
            return "550 5.7.1 not you"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address == "nobody@y.org":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"REJECT" in envelope.content:
            return "554 5.6.0 rejected"
        return await super().handle_DATA(server, session, envelope)


def batch() -> list[tuple[bytes, Envelope, type[Exception] | None]]:
    """(message, envelope, expected error or None) in the order sent."""
    items: list[tuple[bytes, Envelope, type[Exception] | None]] = []
    for n in range(30):
        data = b"Subject: %d\r\n\r\n.leading dot\n.\r\nline %d\r\n" % (n, n)
        sender, rcpts, error = "a@x.org", ["b@y.org"], None
        if n % 7 == 3:
            sender, error = "no@x.org", SMTPSenderRefused
        elif n % 7 == 5:
            rcpts, error = ["nobody@y.org"], SMTPRecipientsRefused
        elif n % 7 == 6:
            data += b"REJECT\r\n"
            error = SMTPDataRefused
        items.append((data, Envelope(sender, rcpts), error))
    return items


def normalized(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize(("chunking", "window"), [(True, 10), (True, 1), (True, 3),
                                                   (False, 10)])
async def test_batch_outcomes_are_the_same_over_bdat_and_data(chunking: bool,
                                                             window: int) -> None:
    handler = Picky()
    items = batch()
    async with serve(handler) as server:
        async with SMTPConnection("127.0.0.1", server.port, name="client.test",
                                  chunking=chunking, pipeline_window=window) as conn:
            assert conn.capabilities.chunking
            outcomes = [o async for _, o in conn.send_many([(d, e) for d, e, _ in items])]
            assert conn.is_usable
    expected_bodies = []
    for (data, envelope, error), outcome in zip(items, outcomes):
        if error is None:
            assert isinstance(outcome, SendResult), outcome
            assert outcome.response.code == 250
            expected_bodies.append((envelope.mail_from, list(envelope.rcpt_to),
                                    normalized(data)))
        else:
            assert isinstance(outcome, error), (error, outcome)
    assert handler.messages == expected_bodies


async def test_concurrent_sends_over_bdat() -> None:
    handler = Picky()
    items = batch()
    async with serve(handler) as server:
        async with SMTPConnection("127.0.0.1", server.port, name="client.test") as conn:
            outcomes = await asyncio.gather(*(conn.send(d, e) for d, e, _ in items),
                                            return_exceptions=True)
    for (_, _, error), outcome in zip(items, outcomes):
        assert isinstance(outcome, error or SendResult), (error, outcome)
    assert len(handler.messages) == sum(1 for *_, error in items if error is None)


async def test_pool_over_bdat() -> None:
    handler = Picky()
    items = batch()
    async with serve(handler) as server:
        async with SMTPPool(host="127.0.0.1", port=server.port, name="client.test",
                            max_connections=2, max_attempts=1) as pool:
            pairs = [(d, e) for d, e, _ in items]
            # The pool yields in completion order: match by item.
            by_item = {id(item): o async for item, o in pool.send_many(pairs)}
    outcomes = [by_item[id(pair)] for pair in pairs]
    for (_, _, error), outcome in zip(items, outcomes):
        assert isinstance(outcome, error or SendResult), (error, outcome)
    assert sorted(handler.messages) == sorted(
        (e.mail_from, list(e.rcpt_to), normalized(d)) for d, e, error in items if error is None)


async def test_binary_mime_to_our_server() -> None:
    handler = Recorder()
    data = b"Subject: raw\r\n\r\n\x00\xff bare\nlone\r.\r\n"
    async with serve(handler) as server:
        async with SMTPConnection("127.0.0.1", server.port, name="client.test") as conn:
            result = await conn.send(data, Envelope("a@x.org", ["b@y.org"], binary_mime=True))
    assert result.size == len(data)
    assert handler.messages == [("a@x.org", ["b@y.org"], data)]
