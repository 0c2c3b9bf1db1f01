"""The client's CHUNKING/BDAT (RFC 3030) against scripted peers checking exact bytes.

Each peer reads a whole window of transactions before it answers anything: that is the
proof that the client waits for no reply (no 354, no MAIL reply) inside a transaction
or between transactions. Failures in the middle of a window check every message's
outcome: delivered, refused (not delivered), or "maybe delivered" only for a message
whose ``BDAT ... LAST`` left the client and got no reply.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import (
    SMTPConnectionError,
    SMTPDataRefused,
    SMTPEnvelopeNotSupported,
    SMTPMaybeDelivered,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServiceClosing,
)
from fastsmtp.message import Envelope
from fastsmtp.protocol import SMTPClientProtocol

from support.peer import Close, Expect, ExpectData, Reset, ScriptedPeer, Send, greet, reset
from support.ports import listening_socket
from support.wait import wait_until

CHUNK_EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
QUIT = [Expect(b"QUIT\r\n"), Send(b"221 bye\r\n")]
OK = b"250 ok\r\n"


def conn_for(peer: ScriptedPeer, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    kwargs.setdefault("socket_timeout", 10)
    return SMTPConnection("127.0.0.1", peer.port, **kwargs)


def env(n: int) -> Envelope:
    return Envelope(f"s{n}@x.test", [f"r{n}@x.test"])


def body(n: int) -> bytes:
    return b"Subject: %d\r\n\r\nmessage %d\r\n" % (n, n)


def tx(n: int, rset: bool = False, rcpts: int = 1) -> bytes:
    """Message ``n``'s transaction as the client must write it (``rset``: behind another)."""
    data = body(n)
    lines = [b"RSET\r\n"] if rset else []
    lines.append(b"MAIL FROM:<s%d@x.test>\r\n" % n)
    lines += [b"RCPT TO:<r%d@x.test>\r\n" % n] * rcpts
    lines.append(b"BDAT %d LAST\r\n" % len(data) + data)
    return b"".join(lines)


def ok(n: int, rset: bool = False) -> bytes:
    """The replies of a delivered transaction ``n``."""
    return (OK if rset else b"") + OK + OK + b"250 2.0.0 queued as %d\r\n" % n


def careful(wire: bytes, replies: bytes) -> list[object]:
    """Slow start: until the connection has delivered a message, a transaction's data
    goes only after its envelope was accepted. ``wire`` is the whole transaction,
    ``replies`` its replies (one line each); split at the first BDAT."""
    cut = wire.index(b"BDAT ")
    envelope_lines = wire[:cut].count(b"\r\n")
    lines = replies.split(b"\r\n")
    head = b"".join(line + b"\r\n" for line in lines[:envelope_lines])
    return [Expect(wire[:cut]), Send(head), Expect(wire[cut:]), Send(replies[len(head):])]


#: The connection's first transaction goes alone, in two steps (slow start: the window
#: opens once the connection has delivered a message); these tests send message 0 first.
WARM = careful(tx(0), ok(0))


async def warm_up(conn: SMTPConnection) -> None:
    assert (await conn.send(body(0), env(0))).response.code == 250


async def send_all(conn: SMTPConnection, count: int) -> list[Any]:
    return [outcome async for _, outcome in conn.send_many(
        [(body(n), env(n)) for n in range(1, count + 1)])]


async def test_one_message_exact_bytes_no_stuffing_no_wait() -> None:
    # SIZE= and BDAT agree: the normalized size, no dot doubled, the last line ended.
    data = b"a\n.\r\n..b\r.c"
    wire = b"a\r\n.\r\n..b\r\n.c\r\n"
    script = greet(CHUNK_EHLO.replace(b"250 8BITMIME", b"250 SIZE 1000")) + [
        *careful(b"MAIL FROM:<a@x.test> SIZE=%d\r\nRCPT TO:<b@x.test>\r\nBDAT %d LAST\r\n"
                 % (len(wire), len(wire)) + wire, OK + OK + b"250 2.0.0 queued\r\n"),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            result = await conn.send(data, Envelope("a@x.test", ["b@x.test"]))
    peer.check()
    assert result.accepted == ["b@x.test"] and result.size == len(wire)
    assert str(result.response) == "250 2.0.0 queued"
    assert result.message_time >= result.envelope_time >= 0


async def test_transactions_pipelined_behind_each_other_with_rset() -> None:
    # The whole window before any reply; every transaction behind an unanswered one
    # starts with RSET (the previous one may have failed and left its state open).
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1) + ok(2, True) + ok(3, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await warm_up(conn)
            outcomes = await send_all(conn, 3)
            assert conn.messages_sent == 4
    peer.check()
    assert [str(o.response) for o in outcomes] == [
        f"250 2.0.0 queued as {n}" for n in (1, 2, 3)]


async def test_concurrent_sends_share_the_window() -> None:
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1) + ok(2, True) + ok(3, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await warm_up(conn)
            results = await asyncio.gather(*(conn.send(body(n), env(n)) for n in (1, 2, 3)))
    peer.check()
    assert [r.response.code for r in results] == [250, 250, 250]


async def test_window_bounds_what_a_cut_leaves_maybe_delivered() -> None:
    # pipeline_window=3: three transactions go out; the fourth only once the first is
    # answered. The peer then cuts the connection: the three unanswered ones whose
    # LAST was written may have been delivered, the fifth was never written.
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1)),
        Expect(tx(4, rset=True)),
        Reset(),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, pipeline_window=3)
        await conn.connect()
        await warm_up(conn)
        outcomes = await send_all(conn, 5)
        conn.close()
    peer.check()
    assert outcomes[0].response.code == 250
    for maybe in outcomes[1:4]:
        assert isinstance(maybe, SMTPMaybeDelivered), maybe
    assert isinstance(outcomes[4], SMTPConnectionError)
    assert not isinstance(outcomes[4], SMTPMaybeDelivered)


async def test_slow_start_until_the_first_delivery() -> None:
    # A server refusing every MAIL (530: no AUTH) gets one transaction at a time: the
    # window opens only once the connection has delivered a message.
    # Each refused one never had its data written: not delivered, whatever follows.
    refused = b"530 5.7.0 Authentication required\r\n503 5.5.1 no MAIL\r\n"
    no_data = len(b"BDAT %d LAST\r\n" % len(body(1))) + len(body(1))
    script = greet(CHUNK_EHLO) + [
        Expect(tx(1)[:-no_data]), Send(refused),
        Expect(tx(2, rset=True)[:-no_data]), Send(OK + refused),
        *careful(tx(3, rset=True), ok(3, True)),
        Expect(tx(4) + tx(5, rset=True)), Send(ok(4) + ok(5, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            outcomes = await send_all(conn, 5)
    peer.check()
    assert isinstance(outcomes[0], SMTPSenderRefused)
    assert isinstance(outcomes[1], SMTPSenderRefused)
    assert [o.response.code for o in outcomes[2:]] == [250, 250, 250]


async def test_window_of_one_is_one_transaction_at_a_time() -> None:
    script = greet(CHUNK_EHLO) + [
        *careful(tx(1), ok(1)),
        # Answered and delivered before the next is written: no RSET needed.
        Expect(tx(2)), Send(ok(2)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, pipeline_window=1) as conn:
            outcomes = await send_all(conn, 2)
    peer.check()
    assert [o.response.code for o in outcomes] == [250, 250]


@pytest.mark.parametrize(
    ("replies2", "error"),
    [
        # Sender refused: the server answers the RCPT and the BDAT with 503.
        (b"550 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n",
         SMTPSenderRefused),
        # Every recipient refused: the chunk gets 554 (its bytes are consumed).
        (OK + b"550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
         SMTPRecipientsRefused),
        # The data refused.
        (OK + OK + b"554 5.6.0 content rejected\r\n", SMTPDataRefused),
    ],
    ids=["sender", "recipients", "data"],
)
async def test_refusal_in_the_middle_of_a_window_changes_no_other_outcome(
    replies2: bytes, error: type[Exception]
) -> None:
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1) + OK + replies2 + ok(3, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await warm_up(conn)
            outcomes = await send_all(conn, 3)
            assert conn.is_usable
            # The last transaction failed: the next one, alone, still starts with RSET.
    peer.check()
    assert outcomes[0].response.code == 250 and outcomes[2].response.code == 250
    assert isinstance(outcomes[1], error)
    assert not isinstance(outcomes[1], SMTPMaybeDelivered)


async def test_after_a_failed_transaction_the_next_one_resets() -> None:
    script = greet(CHUNK_EHLO) + [
        *careful(tx(1), OK + OK + b"554 5.6.0 no\r\n"),
        # A server that keeps the failed transaction open would take this MAIL as a
        # nested one (503): RSET closes it first.
        *careful(tx(2, rset=True), ok(2, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPDataRefused):
                await conn.send(body(1), env(1))
            assert (await conn.send(body(2), env(2))).response.code == 250
    peer.check()


async def test_421_in_the_middle_of_a_window() -> None:
    # A 421 answers message 2's MAIL and the server closes: it processed nothing after,
    # so neither 2 nor 3 was delivered (both may be retried), though 3's LAST was sent.
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1) + OK + b"421 4.3.2 shutting down\r\n"),
        Close(),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await warm_up(conn)
        outcomes = await send_all(conn, 3)
        conn.close()
    peer.check()
    assert outcomes[0].response.code == 250
    for lost in outcomes[1:]:
        assert isinstance(lost, SMTPServiceClosing), lost
        assert not isinstance(lost, SMTPMaybeDelivered)


async def test_silent_cut_after_the_kth_last() -> None:
    # Message 1 answered, 2 answered in part (its envelope), then the connection drops:
    # 2 and 3 were written with LAST and never answered.
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True) + tx(3, rset=True)),
        Send(ok(1) + OK + OK + OK),
        Close(),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await warm_up(conn)
        outcomes = await send_all(conn, 3)
        conn.close()
    peer.check()
    assert outcomes[0].response.code == 250
    assert isinstance(outcomes[1], SMTPMaybeDelivered)
    assert isinstance(outcomes[2], SMTPMaybeDelivered)


async def test_data_accepted_for_a_refused_transaction_is_maybe_delivered() -> None:
    # A broken server refuses MAIL yet answers LAST with 250: the message is not
    # reported as refused (something was delivered), and the session ends.
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True)),
        Send(b"550 no\r\n" + OK + OK + ok(2, True)),
        Close(),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await warm_up(conn)
        outcomes = await send_all(conn, 2)
        assert not conn.is_connected
    peer.check()
    assert isinstance(outcomes[0], SMTPMaybeDelivered)
    assert isinstance(outcomes[1], SMTPMaybeDelivered)  # written, its replies unread


async def test_chunking_false_uses_data() -> None:
    script = greet(CHUNK_EHLO) + [
        Expect(b"MAIL FROM:<s1@x.test>\r\nRCPT TO:<r1@x.test>\r\nDATA\r\n"),
        Send(OK + OK + b"354 go\r\n"),
        ExpectData(),
        Send(b"250 queued\r\n"),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, chunking=False) as conn:
            result = await conn.send(b".dot\r\n", env(1))
    peer.check()
    assert peer.data == [b"..dot\r\n.\r\n"]
    assert result.size == len(b"..dot\r\n.\r\n")


async def test_chunking_without_pipelining_uses_data() -> None:
    script = greet(b"250-peer.test\r\n250 CHUNKING\r\n") + [
        Expect(b"MAIL FROM:<s1@x.test>\r\n"), Send(OK),
        Expect(b"RCPT TO:<r1@x.test>\r\n"), Send(OK),
        Expect(b"DATA\r\n"), Send(b"354 go\r\n"),
        ExpectData(), Send(b"250 queued\r\n"),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await conn.send(b"x\r\n", env(1))
    peer.check()


async def test_stream_goes_in_chunks() -> None:
    # 64 KiB or more of normalized data per chunk; the last piece carries LAST (and the
    # final CRLF). The non-LAST chunk's reply is read as the window allows.
    piece = b"y" * 40000 + b"\n"
    wire = b"y" * 40000 + b"\r\n"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield piece
        yield b"tail"

    first = 2 * len(wire)
    last = len(wire) + len(b"tail\r\n")
    script = greet(CHUNK_EHLO) + [
        *careful(b"MAIL FROM:<s1@x.test>\r\nRCPT TO:<r1@x.test>\r\n"
                 + b"BDAT %d\r\n" % first + wire * 2
                 + b"BDAT %d LAST\r\n" % last + wire + b"tail\r\n",
                 OK + OK + b"250 2.0.0 chunk\r\n" + b"250 2.0.0 queued\r\n"),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            result = await conn.send(chunks(), env(1))
    peer.check()
    assert result.size == first + last
    assert str(result.response) == "250 2.0.0 queued"


async def test_small_stream_and_empty_stream() -> None:
    script = greet(CHUNK_EHLO) + [
        # Small pieces are joined into one chunk; a CR at a piece's end meets its LF.
        *careful(b"MAIL FROM:<s1@x.test>\r\nRCPT TO:<r1@x.test>\r\nBDAT 10 LAST\r\n"
                 b"a\r\n.b\r\nc\r\n", ok(1)),
        Expect(b"MAIL FROM:<s2@x.test>\r\nRCPT TO:<r2@x.test>\r\nBDAT 0 LAST\r\n"),
        Send(ok(2)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            first = await conn.send([b"a\n", b".b\r", b"\nc"], env(1))
            second = await conn.send([], env(2))
    peer.check()
    assert first.size == 10 and second.size == 0


async def test_refused_chunk_stops_the_stream() -> None:
    # A chunk refused: no more chunks (RFC 3030), the message is not delivered, and the
    # next transaction resets the server's half-done one.
    big = b"z" * 70000 + b"\r\n"
    script = greet(CHUNK_EHLO) + [
        *careful(b"MAIL FROM:<s1@x.test>\r\nRCPT TO:<r1@x.test>\r\nBDAT %d\r\n" % len(big)
                 + big, OK + OK + b"552 5.3.4 too big\r\n"),
        *careful(tx(2, rset=True), ok(2, True)),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, pipeline_window=1) as conn:
            with pytest.raises(SMTPDataRefused, match="552"):
                await conn.send([big, big], env(1))
            assert (await conn.send(body(2), env(2))).response.code == 250
    peer.check()


async def test_binary_mime() -> None:
    data = b"\x00\x01\n\r\xff"  # sent as it is: no line ending touched
    ehlo = CHUNK_EHLO.replace(b"250 8BITMIME", b"250-8BITMIME\r\n250 BINARYMIME")
    script = greet(ehlo) + [
        *careful(b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRCPT TO:<b@x.test>\r\n"
                 b"BDAT 5 LAST\r\n" + data, OK + OK + OK),
        *QUIT,
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            result = await conn.send(data, Envelope("a@x.test", ["b@x.test"],
                                                    binary_mime=True, use_8bit_mime=True))
    peer.check()
    assert result.size == 5


async def test_binary_mime_needs_the_extension() -> None:
    script = greet(CHUNK_EHLO) + [*QUIT]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPEnvelopeNotSupported, match="BINARYMIME"):
                await conn.send(b"x", Envelope("a@x.test", ["b@x.test"], binary_mime=True))
            assert conn.is_usable
    peer.check()


# -- where the ends are: what reached the kernel ---------------------------------------


def small_buffers(sock: socket.socket) -> None:
    # The kernel then holds a few kilobytes of the connection, not megabytes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def test_end_offsets_follow_the_kernel() -> None:
    loop = asyncio.get_running_loop()
    listener = listening_socket()
    small_buffers(listener)
    client = socket.socket()
    small_buffers(client)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, listener.getsockname())
        server, _ = await loop.sock_accept(listener)
        proto = SMTPClientProtocol(loop, 10.0)
        await loop.create_connection(lambda: proto, sock=client)
        proto.write(b"x" * 100)
        first = proto.mark_end(0)
        assert proto.sent(first)  # straight to the kernel
        big = b"y" * 8_000_000
        proto.write(big)
        second = proto.mark_end(0)
        proto.write(b"z" * 10)
        third = proto.mark_end(4)  # 4 bytes of the write follow the end
        assert proto.sent(first) and not proto.sent(second) and not proto.sent(third)
        assert not proto.end_sent
        total, got = 100 + len(big) + 10, 0
        while got < total:  # the peer reads it all: the ends leave, in order
            got += len(await loop.sock_recv(server, 1 << 20))
        await wait_until(lambda: proto.sent(third))
        assert proto.sent(second) and proto.end_sent
        server.close()
        proto.fail(SMTPConnectionError("done"))
    finally:
        listener.close()


async def test_window_cut_before_its_ends_left_the_process_is_not_delivered() -> None:
    # Three transactions of 250 KB, each one write, into a connection whose kernel
    # buffers hold a few KB, to a peer that reads one byte and resets: no LAST reached
    # the kernel, so none of them may be "maybe delivered".
    data = (b"w" * 998 + b"\r\n") * 250
    read: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test\r\n")
        await reader.readline()
        writer.write(CHUNK_EHLO)
        cut = tx(0).index(b"BDAT ")
        await reader.readexactly(cut)  # slow start: the first one alone, in two steps
        writer.write(OK + OK)
        await reader.readexactly(len(tx(0)) - cut)
        writer.write(b"250 2.0.0 queued\r\n")
        await reader.readexactly(1)  # the client wrote its whole window at once
        read.set_result(None)
        reset(writer)

    loop = asyncio.get_running_loop()
    listener = listening_socket()
    small_buffers(listener)
    server = await asyncio.start_server(handle, sock=listener)
    client = socket.socket()
    small_buffers(client)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, listener.getsockname())
        conn = SMTPConnection(sock=client, name="client.test", socket_timeout=10)
        await conn.connect()
        await warm_up(conn)
        outcomes = [outcome async for _, outcome in conn.send_many(
            [(data, env(n)) for n in range(1, 4)])]
        assert read.done()
    finally:
        server.close()
        await server.wait_closed()
    for outcome in outcomes:
        assert isinstance(outcome, SMTPConnectionError), outcome
        assert not isinstance(outcome, SMTPMaybeDelivered), outcome


async def test_cancelled_send_in_a_window_closes_the_connection() -> None:
    script = greet(CHUNK_EHLO) + WARM + [
        Expect(tx(1) + tx(2, rset=True)),
        Send(ok(1)),  # message 2 is never answered
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await warm_up(conn)
        first = asyncio.ensure_future(conn.send(body(1), env(1)))
        second = asyncio.ensure_future(conn.send(body(2), env(2)))
        assert (await first).response.code == 250
        await wait_until(lambda: peer.received.endswith(tx(2, rset=True)))
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert not conn.is_connected
        conn.close()
    peer.check()
