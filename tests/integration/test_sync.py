"""The blocking facade: plain threads, many messages, and a caller inside a running loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fastsmtp.errors import SMTPPoolClosed, SMTPRecipientsRefused
from fastsmtp.message import Envelope
from fastsmtp.server import SMTPServerThread
from fastsmtp.sync import SyncSMTPPool

ENV = Envelope("sender@example.com", ["rcpt@example.com"])


class Collect:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(envelope.content)
        return "250 OK"


@pytest.fixture
def server():
    handler = Collect()
    with SMTPServerThread(handler, port=0) as runner:
        runner.handler = handler
        yield runner


def test_send_from_plain_threads(server):
    with SyncSMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True) as pool:
        results = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(
                pool.send(b"Subject: %d\r\n\r\nhello\r\n" % i, ENV)))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and all(r.response.code == 250 for r in results)
        with pytest.raises(SMTPRecipientsRefused):
            pool.send(b"x\r\n", Envelope("a@example.com", ["nobody@example.com"]))
    assert sorted(server.handler.contents) == sorted(
        b"Subject: %d\r\n\r\nhello\r\n" % i for i in range(8))
    with pytest.raises(SMTPPoolClosed):
        pool.send(b"late\r\n", ENV)


def test_send_many_yields_each_result(server):
    with SyncSMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True) as pool:
        items = [(b"n %d\r\n" % i, ENV) for i in range(50)]
        outcomes = list(pool.send_many(items))
        assert pool.is_idle()
    assert sorted(item[0] for item, _ in outcomes) == sorted(m for m, _ in items)
    assert all(r.response.code == 250 for _, r in outcomes)
    assert len(server.handler.contents) == 50


def test_works_from_inside_a_running_loop(server):
    async def inside() -> int:
        with SyncSMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True) as pool:
            pool.verify()
            return pool.send(b"from a coroutine\r\n", ENV).response.code

    assert asyncio.run(inside()) == 250
    assert server.handler.contents == [b"from a coroutine\r\n"]


def test_sync_pool_stats_count_what_was_sent() -> None:
    from fastsmtp import Envelope, SMTPServerThread, SyncSMTPPool
    from fastsmtp.handlers import Sink

    server = SMTPServerThread(Sink(), host="127.0.0.1", port=0)
    server.start()
    try:
        with SyncSMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True) as pool:
            for _ in range(3):
                pool.send(b"Subject: x\r\n\r\nx\r\n", Envelope("a@example.com", "b@example.com"))
            stats = pool.stats()
    finally:
        server.stop()
    assert stats["sent"] == 3 and stats["failed"] == 0 and stats["queued"] == 0
