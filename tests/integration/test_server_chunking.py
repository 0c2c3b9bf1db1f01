"""CHUNKING / BDAT (RFC 3030) on our server, over real sockets, exact bytes in and out.

A raw client sends ``BDAT <size> [LAST]`` lines with their octets, often many commands in
one write (pipelining), and checks every reply. What a handler receives is checked
byte for byte: inside a chunk nothing is unstuffed nor rewritten.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.server import Recorder, greeted, serve, wait_until

ENVELOPE = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n"
ENVELOPE_OK = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
QUEUED = b"250 2.0.0 OK: queued\r\n"
TOO_BIG = b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
NO_RCPT = b"554 5.5.1 Error: no valid recipients\r\n"
NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
LOCAL_ERROR = b"451 4.3.0 Error: local error in processing\r\n"
SYNTAX = b"501 5.5.4 Syntax: BDAT chunk-size [LAST] (chunk-size: up to 18 digits); closing connection\r\n"
#: A body no DATA could carry as it is: a "." line, the DATA terminator, a bare LF, a
#: lone CR, a doubled dot, a NUL and 8-bit octets.
BINARY = b"Subject: raw\r\n\r\n.\r\n..dots\r\nbare\nlone\rcr\r\n.\r\n\x00\xff\xfe end"


def bdat(data: bytes, last: bool = False) -> bytes:
    """One BDAT command with its chunk."""
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


def received(n: int) -> bytes:
    return b"250 2.0.0 OK: %d octets received\r\n" % n


class Streamer:
    """A streaming handler: records every piece, start, ready and abort, in order."""

    def __init__(self, fail_chunk: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fail_chunk = fail_chunk

    async def start_data(self, session: Any, envelope: Any) -> None:
        self.events.append(("start", envelope.mail_from))

    async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
        await asyncio.sleep(0)  # really suspends: reading must wait for it
        if self.fail_chunk:
            raise RuntimeError("storage broke")
        self.events.append(("chunk", chunk))

    async def data_ready(self, session: Any, envelope: Any) -> str:
        self.events.append(("ready", envelope.mail_from))
        return "250 2.0.0 stored"

    async def data_abort(self, session: Any, envelope: Any) -> None:
        self.events.append(("abort", envelope.mail_from))

    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "chunk")


async def test_ehlo_advertises_chunking_and_binarymime() -> None:
    async with serve() as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"250-8BITMIME\r\n250-CHUNKING\r\n250-BINARYMIME\r\n" in ehlo
        assert b" BDAT" in await client.command(b"HELP")
        await client.close()


async def test_hide_chunking_is_a_server_without_rfc3030() -> None:
    async with serve(hide_chunking=True) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"CHUNKING" not in ehlo and b"BINARYMIME" not in ehlo
        assert await client.command(b"MAIL FROM:<a@x.org> BODY=BINARYMIME") == (
            b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"
        )
        assert await client.command(b"BDAT 0 LAST") == b'500 5.5.2 Error: command "BDAT" not recognized\r\n'
        await client.close()


async def test_pipelined_chunks_arrive_byte_exact_and_in_order() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        # Two whole transactions and the next MAIL in one write: no wait for any reply.
        a, b, c = BINARY[:10], BINARY[10:31], BINARY[31:]
        await client.send(
            ENVELOPE + bdat(a) + bdat(b) + bdat(c, last=True)
            + ENVELOPE + bdat(b"second\r\n", last=True)
            + b"MAIL FROM:<third@x.org>\r\nNOOP\r\n"
        )
        await client.expect(
            ENVELOPE_OK + received(len(a)) + received(len(b)) + QUEUED
            + ENVELOPE_OK + QUEUED
            + b"250 2.1.0 OK\r\n250 2.0.0 OK\r\n"
        )
        await client.close()
    assert handler.messages == [
        ("a@x.org", ["b@y.org"], BINARY),
        ("a@x.org", ["b@y.org"], b"second\r\n"),
    ]


async def test_chunk_split_across_packets() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE)
        await client.expect(ENVELOPE_OK)
        wire = bdat(BINARY, last=True) + b"NOOP\r\n"
        for i in range(0, len(wire), 7):  # the command line and the chunk cut anywhere
            await client.send(wire[i : i + 7])
        await client.expect(QUEUED + b"250 2.0.0 OK\r\n")
        await client.close()
    assert [m[2] for m in handler.messages] == [BINARY]


async def test_bdat_0_last_ends_the_message() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE + bdat(b"body") + bdat(b"", last=True) + ENVELOPE + b"BDAT 0 LAST\r\n")
        await client.expect(ENVELOPE_OK + received(4) + QUEUED + ENVELOPE_OK + QUEUED)
        await client.close()
    assert [m[2] for m in handler.messages] == [b"body", b""]


async def test_refused_chunks_are_read_never_obeyed() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        # Before EHLO, and without MAIL: refused, and the commands inside are data.
        evil = b"RSET\r\nQUIT\r\n"
        await client.send(bdat(evil) + b"EHLO me\r\n")
        assert await client.reply() == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        assert (await client.reply()).startswith(b"250-test.local\r\n")
        await client.send(bdat(evil, last=True) + b"NOOP\r\n")
        await client.expect(NEED_MAIL + b"250 2.0.0 OK\r\n")
        # MAIL without an accepted recipient: 554 for every chunk; LAST ends the transaction.
        await client.send(
            b"MAIL FROM:<a@x.org>\r\nRCPT TO:<>\r\n" + bdat(evil) + bdat(evil, last=True)
            + ENVELOPE + bdat(b"ok", last=True)
        )
        await client.expect(
            b"250 2.1.0 OK\r\n501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"
            + NO_RCPT + NO_RCPT + ENVELOPE_OK + QUEUED
        )
        await client.close()
    assert [m[2] for m in handler.messages] == [b"ok"]


@pytest.mark.parametrize(
    "line",
    [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1e3", b"BDAT 5 FIRST", b"BDAT 5 LAST x",
     b"BDAT  5", b"BDAT " + b"9" * 19],
)
async def test_bdat_syntax_error_501_and_close(line: bytes) -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE)
        await client.expect(ENVELOPE_OK)
        # The octets after it cannot be framed: none of them is read as a command.
        await client.send(line + b"\r\nNOOP\r\n")
        assert await client.eof() == SYNTAX
        await client.close()


async def test_bdat_control_character_closes() -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(b"BDAT 6\x00\r\nNOOP\r\n")
        assert await client.eof() == b"501 5.5.2 Error: control characters are not allowed\r\n"
        await client.close()


async def test_data_after_bdat_and_binarymime_need_bdat() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE + bdat(b"part") + b"DATA\r\n" + bdat(b"end", last=True))
        await client.expect(
            ENVELOPE_OK + received(4)
            + b"503 5.5.1 Error: DATA after BDAT; end the message with BDAT <size> LAST\r\n"
            + QUEUED
        )
        await client.send(
            b"MAIL FROM:<a@x.org> BODY=BINARYMIME\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"
            + bdat(b"\x00bin\n", last=True)
        )
        await client.expect(
            ENVELOPE_OK + b"503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA\r\n" + QUEUED
        )
        # DATA clients are unaffected: a plain transaction, dot-unstuffed as ever.
        await client.send(ENVELOPE + b"DATA\r\n..x\r\n.\r\n")
        await client.expect(ENVELOPE_OK + b"354 End data with <CR><LF>.<CR><LF>\r\n" + QUEUED)
        await client.close()
    assert [m[2] for m in handler.messages] == [b"partend", b"\x00bin\n", b".x\r\n"]
    assert handler.envelopes[1].mail_options == ["BODY=BINARYMIME"]


async def test_max_size_enforced_as_chunks_arrive() -> None:
    handler = Recorder()
    async with serve(handler, max_size=1000) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"MAIL FROM:<a@x.org> SIZE=1001") == TOO_BIG
        # 600 + 600 > 1000: the second chunk fails, the third and LAST are refused alike,
        # their octets read (a megabyte, never held) and dropped; then a new transaction.
        await client.send(
            ENVELOPE + bdat(b"a" * 600) + bdat(b"b" * 600) + bdat(b"RSET\r\n" * 200_000)
            + bdat(b"c", last=True) + ENVELOPE + bdat(b"d" * 1000, last=True)
        )
        await client.expect(
            ENVELOPE_OK + received(600) + TOO_BIG + TOO_BIG + TOO_BIG + ENVELOPE_OK + QUEUED
        )
        await client.close()
    assert [m[2] for m in handler.messages] == [b"d" * 1000]


async def test_rset_mid_chunks_discards_the_data() -> None:
    handler = Recorder()
    streamer = Streamer()
    for h in (handler, streamer):
        async with serve(h) as server:
            client = await greeted(server.port)
            await client.command(b"EHLO me")
            await client.send(ENVELOPE + bdat(b"dropped") + b"RSET\r\n" + ENVELOPE + bdat(b"kept", last=True))
            last = b"250 2.0.0 stored\r\n" if h is streamer else QUEUED
            await client.expect(ENVELOPE_OK + received(7) + b"250 2.0.0 OK\r\n" + ENVELOPE_OK + last)
            await client.close()
    assert [m[2] for m in handler.messages] == [b"kept"]
    assert streamer.events == [
        ("start", "a@x.org"), ("chunk", b"dropped"), ("abort", "a@x.org"),
        ("start", "a@x.org"), ("chunk", b"kept"), ("ready", "a@x.org"),
    ]


async def test_streaming_handler_gets_the_chunks_in_order() -> None:
    streamer = Streamer()
    async with serve(streamer) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        pieces = [BINARY[:5], BINARY[5:40], BINARY[40:]]
        await client.send(ENVELOPE + bdat(pieces[0]) + bdat(pieces[1]) + bdat(pieces[2], last=True) + b"NOOP\r\n")
        await client.expect(
            ENVELOPE_OK + received(5) + received(35) + b"250 2.0.0 stored\r\n250 2.0.0 OK\r\n"
        )
        await client.close()
    assert streamer.body() == BINARY
    assert streamer.events[0] == ("start", "a@x.org") and streamer.events[-1] == ("ready", "a@x.org")


async def test_failing_chunk_hook_refuses_the_rest_of_the_transaction() -> None:
    streamer = Streamer(fail_chunk=True)
    async with serve(streamer) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE + bdat(b"one") + bdat(b"two") + bdat(b"end", last=True) + ENVELOPE)
        await client.expect(ENVELOPE_OK + LOCAL_ERROR + LOCAL_ERROR + LOCAL_ERROR + ENVELOPE_OK)
        await client.close()
    assert streamer.events == [("start", "a@x.org"), ("abort", "a@x.org")]  # told once


@pytest.mark.parametrize("where", ["mid-chunk", "between-chunks"])
async def test_connection_lost_mid_message_fires_the_abort_hook(where: str) -> None:
    streamer = Streamer()
    handler = Recorder()
    for h in (streamer, handler):
        async with serve(h) as server:
            client = await greeted(server.port)
            await client.command(b"EHLO me")
            await client.send(ENVELOPE + bdat(b"first"))
            await client.expect(ENVELOPE_OK + received(5))
            if where == "mid-chunk":
                await client.send(b"BDAT 100 LAST\r\nonly part of it")
            await client.close()
            await wait_until(lambda: server.connections == 0)  # noqa: B023 - server is current
    assert streamer.events[-1] == ("abort", "a@x.org")
    assert [e for e in streamer.events if e[0] == "ready"] == []
    assert handler.messages == []


async def test_lmtp_last_chunk_gets_one_reply_per_recipient() -> None:
    handler = Recorder()
    async with serve(handler, lmtp=True, max_size=100) as server:
        client = await greeted(server.port)
        await client.command(b"LHLO me")
        two = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\n"
        two_ok = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n"
        await client.send(two + bdat(b"to both ") + bdat(b"of them", last=True))
        await client.expect(two_ok + received(8) + QUEUED * 2)
        await client.send(two + bdat(b"x" * 60) + bdat(b"y" * 60) + bdat(b"z", last=True))
        await client.expect(two_ok + received(60) + TOO_BIG + TOO_BIG * 2)
        await client.close()
    assert [m[2] for m in handler.messages] == [b"to both of them"]


async def test_bare_newline_reject_holds_for_text_chunks_not_binarymime() -> None:
    handler = Recorder()
    async with serve(handler, bare_newline="reject") as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        bare = b"550 5.6.0 Error: bare <CR> or <LF> in message data\r\n"
        # A CRLF cut between two chunks is one line ending; a CR ending the message is bare.
        await client.send(
            ENVELOPE + bdat(b"a\r") + bdat(b"\nb\r\n", last=True)
            + ENVELOPE + bdat(b"c\r\n") + bdat(b"d\ne") + bdat(b"", last=True)
            + ENVELOPE + bdat(b"e\r", last=True)
            + b"MAIL FROM:<a@x.org> BODY=BINARYMIME\r\nRCPT TO:<b@y.org>\r\n" + bdat(b"f\ng\r", last=True)
        )
        await client.expect(
            ENVELOPE_OK + received(2) + QUEUED
            + ENVELOPE_OK + received(3) + bare + bare
            + ENVELOPE_OK + bare
            + ENVELOPE_OK + QUEUED
        )
        await client.close()
    assert [m[2] for m in handler.messages] == [b"a\r\nb\r\n", b"f\ng\r"]


async def test_ehlo_mid_chunks_drops_the_message() -> None:
    streamer = Streamer()
    async with serve(streamer) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(ENVELOPE + bdat(b"gone") + b"EHLO again\r\n" + ENVELOPE + bdat(b"x", last=True))
        await client.expect(ENVELOPE_OK + received(4))
        assert (await client.reply()).startswith(b"250-test.local\r\n")
        await client.expect(ENVELOPE_OK + b"250 2.0.0 stored\r\n")
        await client.close()
    assert streamer.events == [
        ("start", "a@x.org"), ("chunk", b"gone"), ("abort", "a@x.org"),
        ("start", "a@x.org"), ("chunk", b"x"), ("ready", "a@x.org"),
    ]
