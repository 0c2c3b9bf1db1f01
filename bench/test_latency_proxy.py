"""The latency proxy itself, over real loopback sockets: bytes, order, delay, closes, memory.

The proxy runs in the test's own loop (:class:`latency_proxy.LatencyProxy`); the servers
behind it are plain asyncio stream servers. No timing upper bound is asserted: only that
nothing arrives before its configured delay.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from latency_proxy import HIGH_WATER, LatencyProxy
from support.ports import listening_socket, refused_port
from support.wait import WAIT, wait_until

DELAY = 0.02  # one way, seconds

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def behind_proxy(handler: Handler, delay: float = DELAY,
                       high_water: int = HIGH_WATER) -> AsyncIterator[LatencyProxy]:
    """A stream server running ``handler``, and a proxy in front of it."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = await asyncio.start_server(handler, sock=sock)
    try:
        async with LatencyProxy(("127.0.0.1", port), delay, high_water=high_water) as proxy:
            yield proxy
    finally:
        server.close()


def chunks(seed: int, count: int) -> list[bytes]:
    """``count`` chunks of random bytes and random lengths (1 byte to 64 KiB)."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice((1, 7, 100, 1500, 65536))) for _ in range(count)]


async def test_bytes_arrive_intact_and_in_order_both_ways_with_half_close() -> None:
    upstream = chunks(1, 300)
    downstream = chunks(2, 300)
    received: list[bytes] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())  # until the client's EOF, forwarded
        for chunk in downstream:  # the half-closed client can still receive
            writer.write(chunk)
        await writer.drain()
        writer.close()

    async with behind_proxy(server) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for chunk in upstream:
            writer.write(chunk)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), WAIT)  # until the server's close
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: not proxy.links)

    assert received == [b"".join(upstream)]
    assert got == b"".join(downstream)


async def test_nothing_arrives_before_the_delay_in_either_direction() -> None:
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1):
            arrivals.append(loop.time())
            writer.write(data)
        writer.close()

    async with behind_proxy(server) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        sent, rtts = [], []
        for i in range(10):
            sent.append(loop.time())
            writer.write(bytes([i]))
            assert await asyncio.wait_for(reader.readexactly(1), WAIT) == bytes([i])
            rtts.append(loop.time() - sent[-1])
        writer.close()
        await writer.wait_closed()

    assert [a - s >= DELAY for a, s in zip(arrivals, sent)] == [True] * 10
    assert [rtt >= 2 * DELAY for rtt in rtts] == [True] * 10


async def test_a_burst_keeps_its_order_and_every_chunk_its_own_delay() -> None:
    # The chunks of a burst are each due at their own arrival plus the delay, so the
    # last one is not held for a delay per chunk before it: 50 chunks sent back to back
    # all arrive, in order, and the server echoes them as one stream.
    loop = asyncio.get_running_loop()
    first: list[float] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(50 * 4)
        first.append(loop.time())
        writer.write(data)
        writer.close()

    async with behind_proxy(server) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        start = loop.time()
        for i in range(50):
            writer.write(i.to_bytes(4, "big"))
            await writer.drain()
        echoed = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        await writer.wait_closed()

    assert echoed == b"".join(i.to_bytes(4, "big") for i in range(50))
    assert first[0] - start >= DELAY


async def test_a_client_close_reaches_the_server_after_its_data() -> None:
    seen: list[bytes] = []
    done = asyncio.Event()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read())  # data, then the EOF of the close
        writer.close()
        done.set()

    async with behind_proxy(server) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"QUIT\r\n")
        writer.close()  # no write_eof: a full close
        await writer.wait_closed()
        await asyncio.wait_for(done.wait(), WAIT)
        await wait_until(lambda: not proxy.links)
    assert seen == [b"QUIT\r\n"]


async def test_a_client_that_closes_before_upstream_connects_leaves_nothing_open() -> None:
    # The upstream connection opens a delay after the client's; a client gone before
    # then still gets its data delivered and the server's side closed.
    seen: list[bytes] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read())
        writer.close()

    async with behind_proxy(server, delay=0.2) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"early")
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: seen and not proxy.links)
    assert seen == [b"early"]


async def test_a_refused_upstream_closes_the_client() -> None:
    with refused_port() as port:
        async with LatencyProxy(("127.0.0.1", port), DELAY) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
            await wait_until(lambda: not proxy.links)


async def test_a_slow_reader_pauses_the_sender_and_memory_stays_bounded() -> None:
    high = 256 * 1024
    total = 16 * 1024 * 1024
    payload = random.Random(3).randbytes(total)
    release = asyncio.Event()
    received: list[bytes] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # read nothing until the proxy had to push back
        received.append(await reader.readexactly(total))
        writer.close()

    async with behind_proxy(server, high_water=high) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(payload)  # no drain: the client's own buffer holds the rest

        def sender_paused() -> bool:
            return any(link.client.out.paused for link in proxy.links)

        await wait_until(sender_paused)
        # Never more than the high-water mark plus one read (at most 256 KiB) is held.
        assert proxy.peak <= high + 256 * 1024
        release.set()
        await wait_until(lambda: received)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    assert received[0] == payload
    assert proxy.peak <= high + 256 * 1024


@pytest.mark.parametrize("target, host", [(("192.0.2.1", 25), "127.0.0.1"),
                                          (("127.0.0.1", 25), "0.0.0.0"),
                                          (("localhost", 25), "127.0.0.1")])
def test_only_loopback_addresses_are_accepted(target: tuple[str, int], host: str) -> None:
    with pytest.raises(ValueError, match="loopback IP address such as 127.0.0.1"):
        LatencyProxy(target, DELAY, host=host)


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more seconds"):
        LatencyProxy(("127.0.0.1", 25), -0.001)


async def test_a_client_that_closes_before_a_refused_upstream_leaves_nothing_open() -> None:
    with refused_port() as port:
        async with LatencyProxy(("127.0.0.1", port), 0.1) as proxy:
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.close()
            await writer.wait_closed()
            await wait_until(lambda: proxy.links)  # accepted, upstream not yet tried
            await wait_until(lambda: not proxy.links)
