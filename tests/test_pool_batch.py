"""SMTPPool's two sending paths.

By default a connection sends runs of messages (``batch_size=FAST_BATCH_SIZE``); with a
rate limit, or ``batch_size=1``, it keeps ``PIPELINE_DEPTH`` ``send()`` tasks in flight
instead. ``test_pool.py`` covers the default; here the whole of it runs again with
``batch_size=1`` (so retries, maybe-delivered, cancellation, max_messages, idle and
back-pressure rules hold on that path too), plus tests specific to runs: the next
envelope rides with the dot, a loss mid-run, runs and max_messages.
"""

from __future__ import annotations

import asyncio

import pytest
import test_pool
from test_pool import *  # noqa: F401,F403 - the default pool's tests, run batched here
from test_pool import ENV, body

from fastsmtp.errors import SMTPMaybeDelivered
from fastsmtp.pool import SMTPPool

_make_pool = test_pool.make_pool


@pytest.fixture(autouse=True)
def one_task_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """test_pool's tests, rerun here, get pools on the one-task-per-message path."""

    def make_pool(port: int, **options: object) -> SMTPPool:
        options.setdefault("batch_size", 1)
        return _make_pool(port, **options)

    monkeypatch.setattr(test_pool, "make_pool", make_pool)


async def test_next_envelope_rides_with_the_dot() -> None:
    """The next message's MAIL arrives before the dot's reply is sent (in the same
    read as the dot or right after it), and every message is answered."""
    events: list[str] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 pipe.test\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-pipe.test\r\n250 PIPELINING\r\n")
        buffered = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffered += chunk
            while True:
                if buffered.startswith(b"MAIL"):
                    end = buffered.find(b"DATA\r\n")
                    if end < 0:
                        break
                    count = buffered[:end].count(b"\r\n")
                    writer.write(b"250 ok\r\n" * count + b"354 go\r\n")
                    buffered = buffered[end + 6:]
                elif b"\r\n.\r\n" in buffered:
                    _, buffered = buffered.split(b"\r\n.\r\n", 1)
                    events.append("dot")
                    try:  # give a client that writes separately the time to do so
                        buffered += await asyncio.wait_for(reader.read(65536), 0.05)
                    except asyncio.TimeoutError:
                        pass
                    if buffered.startswith(b"MAIL FROM"):
                        events.append("next-envelope-before-reply")
                    writer.write(b"250 accepted\r\n")
                elif buffered.startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    writer.close()
                    return
                else:
                    break

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        async with _make_pool(port, max_connections=1) as pool:
            results = await asyncio.gather(*(pool.send(body(i), ENV) for i in range(5)))
    finally:
        srv.close()
        await srv.wait_closed()
    assert all(r.response.code == 250 for r in results)
    assert events.count("dot") == 5
    assert events.count("next-envelope-before-reply") >= 3


async def test_loss_mid_batch_splits_maybe_delivered_from_retried(recorder) -> None:
    """A connection lost after message 3's dot: 3 is maybe delivered (never resent);
    the messages batched behind it were not written, so they are retried."""
    recorder.data_action[3] = "drop"
    async with _make_pool(recorder.port, max_connections=1) as pool:
        results = await asyncio.gather(
            *(pool.send(body(i), ENV) for i in range(1, 9)), return_exceptions=True
        )
    assert isinstance(results[2], SMTPMaybeDelivered)
    assert all(r.response.code == 250 for i, r in enumerate(results) if i != 2)
    assert sorted(recorder.delivered) == [1, 2, 4, 5, 6, 7, 8]
    assert recorder.attempts[3] == 1  # never resent


async def test_batches_respect_max_messages(recorder) -> None:
    """A batch never runs a connection past max_messages."""
    async with _make_pool(recorder.port, max_connections=1, max_messages=4) as pool:
        await asyncio.gather(*(pool.send(body(i), ENV) for i in range(10)))
    assert sorted(recorder.delivered) == list(range(10))
    assert recorder.ehlo == 3  # 4 + 4 + 2
