"""Adversarial property tests of the SMTP server over real loopback sockets.

Hypothesis generates byte streams (hostile garbage, valid pipelined transactions, floods)
and splits them at random points; each example opens a raw connection to a server started
once per test function. The properties:

1. Whatever a client sends, every reply is well-formed (``^[2-5]\\d\\d[ -]...\\r\\n``, one
   code per reply, no bare CR or LF), nothing is logged at ERROR (no traceback from
   ``data_received`` or a hook chain), connections are released, and the server keeps
   serving new clients.
2. Valid pipelined transactions, however the stream is cut, reach the handler exactly
   once each with the unstuffed, CRLF-normalized body; smuggling sequences (``\\n.\\r\\n``,
   ``\\n.\\n``, ``\\r.\\r``) never end a message early, and the replies are exactly the
   expected sequence.
3. Never-ending lines, bodies beyond ``max_size`` and megabytes of pipelined input sent
   without reading a reply leave the server's per-connection buffers bounded; the client
   is cut off (421) or refused (552) as documented.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.server import WAIT, Recorder, greeted, serve, wait_until

from fastsmtp._codec import core
from fastsmtp.handlers import StreamingHandler
from fastsmtp.server import SMTPServer

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FEW = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*\r\n")
QUEUED = b"250 2.0.0 OK: queued\r\n"
R_MAIL = b"250 2.1.0 OK\r\n"
R_RCPT = b"250 2.1.5 OK\r\n"
R_354 = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_OK = b"250 2.0.0 OK\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_TOO_BIG = b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
R_RUNAWAY = b"421 4.7.0 test.local Error: line too long, closing connection\r\n"


def split(data: bytes, at: list[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length + 1)."""
    points = sorted({a % (len(data) + 1) for a in at})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def check_replies(data: bytes) -> list[bytes]:
    """Assert ``data`` is a sequence of complete, well-formed replies; return their codes."""
    codes: list[bytes] = []
    pos = 0
    open_code: bytes | None = None  # code of a multi-line reply that has not ended
    while pos < len(data):
        m = REPLY_LINE.match(data, pos)
        assert m is not None, f"malformed reply bytes at {pos}: {data[pos:pos + 120]!r}"
        code, sep = m.group(1), m.group(2)
        assert open_code is None or code == open_code, f"code changed inside a reply: {data!r}"
        if sep == b" ":
            codes.append(code)
            open_code = None
        else:
            open_code = code
        pos = m.end()
    assert open_code is None, f"the stream ended inside a multi-line reply: {data[-200:]!r}"
    return codes


def server_errors(caplog: Any) -> list[logging.LogRecord]:
    """ERROR records of the server (hooks never raise here) or of the loop (a crash)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and (r.name.startswith("fastsmtp") or r.name == "asyncio")
    ]


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes; a reset ends the stream too (what came is kept)."""
    got = bytearray()
    with contextlib.suppress(ConnectionError):
        while True:
            block = await reader.read(65536)
            if not block:
                break
            got += block
    return bytes(got)


async def exchange(port: int, chunks: list[bytes]) -> bytes:
    """Send ``chunks`` one write each (reading concurrently), half-close, return all replies."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    replies = asyncio.ensure_future(read_all(reader))
    try:
        for chunk in chunks:
            if replies.done() or writer.is_closing():
                break  # the server closed; the rest would only meet a reset
            try:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), WAIT)
            except (ConnectionError, RuntimeError):
                # uvloop raises RuntimeError for a write on a transport the reset closed.
                break
            # One loop turn, so that the server usually reads this chunk on its own.
            await asyncio.sleep(0)
        with contextlib.suppress(OSError, RuntimeError):
            if not writer.is_closing():
                writer.write_eof()
        return await asyncio.wait_for(replies, WAIT)
    finally:
        replies.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def assert_serving(server: SMTPServer) -> None:
    """A new client is greeted and served; then every connection has been released."""
    client = await greeted(server.port)
    assert await client.command(b"NOOP") == R_OK
    assert await client.command(b"QUIT") == R_BYE
    await client.close()
    await wait_until(lambda: server.connections == 0)


# -- 1. hostile input ------------------------------------------------------------------------

GARBAGE_PIECES = [
    b"EHLO fuzz\r\n",
    b"ehlo fuzz\r\n",
    b"HELO fuzz\r\n",
    b"helo\r\n",
    b"LHLO fuzz\r\n",
    b"EHLO \xff\xfe\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"mail from:<a@example.com> SIZE=10 BODY=8BITMIME\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<\xc3\xa9@example.com> SMTPUTF8\r\n",
    b"MAIL FROM:<a@b> SIZE=99999999999999999999999\r\n",
    b"MAIL FROM:<a@b> SIZE=\r\n",
    b"MAIL FROM:<@a,@b:c@d>\r\n",
    b"MAIL FROM:<@a\r\n",
    b"MAIL FROM:a@b\r\n",
    b"MAIL FROM:<a@b\r\n",
    b"MAIL FROM:<\xff@x>\r\n",
    b"MAIL FROM:<a@b> AUTH=<>\r\n",
    b"RCPT TO:<b@example.com>\r\n",
    b"rcpt to:<b@example.com> NOTIFY=NEVER\r\n",
    b"RCPT TO:<>\r\n",
    b"RCPT TO:<\xc3\xa9@x>\r\n",
    b"DATA\r\n",
    b"data\r\n",
    b"DATA x\r\n",
    b"BDAT 5 LAST\r\nhello",
    b"BDAT 0\r\n",
    b"bdat 99999999999999999999 LAST\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN !!notbase64==\r\n",
    b"AUTH PLAIN AGEAYg==\r\n",
    b"auth login\r\n",
    b"AUTH LOGIN Zm9v\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH XOAUTH2 @@@\r\n",
    b"AUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==\r\n",
    b"AUTH FOO bar baz\r\n",
    b"AUTH\r\n",
    b"*\r\n",
    b"=\r\n",
    b"Zm9vAGJhcgBiYXo=\r\n",
    b"!!!\xff\r\n",
    b"STARTTLS\r\n",
    b"starttls\r\n",
    b"STARTTLS now\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"noop \xff\r\n",
    b"VRFY\r\n",
    b"vrfy a@b\r\n",
    b"EXPN x\r\n",
    b"HELP\r\n",
    b"QUIT\r\n",
    b"GET / HTTP/1.1\r\n",
    b"\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b".\r\n",
    b"..\r\n",
    b".",
    b"\r",
    b"\n",
    b"\x00",
    b"\x1b[31m",
    b"\x7f",
    b"\xc0\xaf",
    b"x" * 600 + b"\r\n",
    b"NOOP " + b"y" * 520 + b"\n",
    b"z" * 70_000,  # over MAX_COMMAND_DISCARD: a runaway line, 421
]
_ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
# Whole openings (per server kind), so that the garbage after them is often message data.
OPEN_SMTP = b"EHLO fuzz\r\n" + _ENVELOPE + b"DATA\r\n"
OPEN_LMTP = b"LHLO fuzz\r\n" + _ENVELOPE + b"DATA\r\n"
OPEN_AUTH = b"EHLO fuzz\r\nAUTH PLAIN AGEAYg==\r\n" + _ENVELOPE + b"DATA\r\n"
garbage = st.tuples(
    st.lists(st.one_of(st.sampled_from(GARBAGE_PIECES), st.binary(max_size=40)), max_size=30),
    st.sampled_from([b"\r\n.\r\n", b""]),  # often end a message the opening started
).map(lambda t: b"".join(t[0]) + t[1])
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=10)


def refuse_all(*args: Any) -> bool:
    """An authenticator that refuses everyone (AUTH paths run to their end)."""
    return False


@pytest.fixture
async def hostile_server() -> AsyncIterator[SMTPServer]:
    """Every command path open: AUTH over plaintext, small max_size, traffic debug log."""
    async with serve(
        Recorder(),
        enable_auth=True,
        auth_require_tls=False,
        auth_methods=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"),
        authenticator=refuse_all,
        max_size=20_000,
        debug=True,
    ) as server:
        yield server


@FAST
@given(data=garbage, at=cuts, opening=st.booleans())
async def test_hostile_input_gets_well_formed_replies_and_server_survives(
    hostile_server: SMTPServer, caplog: Any, data: bytes, at: list[int], opening: bool
) -> None:
    caplog.clear()
    if opening:
        data = OPEN_SMTP + data
    # debug=True only logs when DEBUG is enabled: the masking code sees the garbage too.
    caplog.set_level(logging.DEBUG, logger="fastsmtp.server")
    replies = await exchange(hostile_server.port, split(data, at))
    codes = check_replies(replies)
    assert codes[:1] == [b"220"], replies[:200]
    assert codes.count(b"220") == 1  # no greeting mid-stream: no reply was forged
    await wait_until(lambda: hostile_server.connections == 0)
    await assert_serving(hostile_server)
    assert server_errors(caplog) == []


def only_crlf(data: bytes) -> bool:
    """No CR or LF in ``data`` outside a CRLF pair."""
    rest = data.replace(b"\r\n", b"")
    return b"\r" not in rest and b"\n" not in rest


class Streamer(StreamingHandler):
    """A streaming handler that records its messages (chunks joined) and aborts."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.messages: list[bytes] = []
        self.aborts = 0

    async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
        self.chunks.append(chunk)

    async def data_ready(self, session: Any, envelope: Any) -> str:
        self.messages.append(b"".join(self.chunks))
        self.chunks.clear()
        return "250 2.0.0 OK: streamed"

    def data_abort(self, session: Any, envelope: Any) -> None:  # type: ignore[override]
        self.chunks.clear()
        self.aborts += 1


@pytest.fixture
async def variant_servers() -> AsyncIterator[tuple[SMTPServer, SMTPServer]]:
    """LMTP with bare newlines refused, and a streaming server that requires AUTH."""
    async with serve(
        Recorder(), lmtp=True, bare_newline="reject", max_recipients=2, max_size=3000
    ) as lmtp, serve(
        Streamer(),
        require_auth=True,
        auth_require_tls=False,
        auth_methods=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"),
        authenticator=lambda server, session, envelope, mechanism, data: True,
        max_size=5000,
        disabled_commands=("VRFY", "HELP"),
    ) as streaming:
        yield lmtp, streaming


@FAST
@given(data=garbage, at=cuts, use_streaming=st.booleans(), opening=st.booleans())
async def test_hostile_input_on_lmtp_and_streaming_servers(
    variant_servers: tuple[SMTPServer, SMTPServer],
    caplog: Any,
    data: bytes,
    at: list[int],
    use_streaming: bool,
    opening: bool,
) -> None:
    caplog.clear()
    if opening:
        data = (OPEN_AUTH if use_streaming else OPEN_LMTP) + data
    server = variant_servers[1] if use_streaming else variant_servers[0]
    handler = server.handler
    replies = await exchange(server.port, split(data, at))
    codes = check_replies(replies)
    assert codes[:1] == [b"220"] and codes.count(b"220") == 1, replies[:200]
    await wait_until(lambda: server.connections == 0)
    await assert_serving(server)
    assert server_errors(caplog) == []
    # Whatever came in, no bare line ending and nothing over max_size reaches a handler.
    contents = handler.messages if use_streaming else [m[2] for m in handler.messages]
    for content in contents:
        assert only_crlf(content) and len(content) <= server._config.max_size
    if use_streaming:
        assert handler.chunks == []  # every message ended (ready) or was aborted


# -- 2. valid pipelined sessions ---------------------------------------------------------------

TEXTS = [b"", b".", b"..", b".x", b"hello world", b"From: a@b", b" . ", b"\t.", b"\xc3\xa9t\xc3\xa9"]
TEXTS += [b"x" * 1100, b"\x00nul", b"DATA", b".\x00"]
line_text = st.one_of(st.sampled_from(TEXTS), st.binary(max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
))
ENDINGS = [b"\r\n", b"\r\n", b"\n", b"\r"]
# (text, line ending, stuffed as a compliant client would): a message's lines.
body_lines = st.lists(
    st.tuples(line_text, st.sampled_from(ENDINGS), st.booleans()), max_size=10
)


def encode_body(lines: list[tuple[bytes, bytes, bool]]) -> tuple[bytes, bytes]:
    """The wire form of ``lines`` (terminator included) and the content the handler must get.

    Unstuffed lines are sent as they are: the server removes a leading "." of every line,
    and a "." line counts as the terminator only after a CRLF (smuggling protection), so
    "\\n.\\r\\n", "\\n.\\n" and "\\r.\\r" stay inside the message as empty lines.
    """
    wire: list[bytes] = []
    content: list[bytes] = []
    after_crlf = True  # the DATA command's CRLF
    for i, (text, ending, stuffed) in enumerate(lines):
        if i == len(lines) - 1:
            ending = b"\r\n"  # so that ".\r\n" after it ends the message
        prev = lines[i - 1][1] if i else b"\r\n"
        if prev == b"\r" and not text and ending == b"\n" and wire:
            ending = b"\r\n"  # "\r" + "\n" would be one CRLF, not two line endings
        if text == b"." and ending == b"\r\n" and after_crlf:
            stuffed = True  # unstuffed, this is the real terminator
        if stuffed and text.startswith(b"."):
            wire.append(b"." + text + ending)
            content.append(text + b"\r\n")
        else:
            wire.append(text + ending)
            content.append((text[1:] if text.startswith(b".") else text) + b"\r\n")
        after_crlf = ending == b"\r\n"
    return b"".join(wire) + b".\r\n", b"".join(content)


ADDRESSES = ["a@example.com", "b.c@example.org", "x+y@z.example", "", "u@[127.0.0.1]"]
transaction = st.fixed_dictionaries(
    {
        "sender": st.sampled_from(ADDRESSES),
        "rcpts": st.lists(st.sampled_from([a for a in ADDRESSES if a]), min_size=1, max_size=3),
        "body": body_lines,
        "lower": st.booleans(),
        "noop_before": st.booleans(),
        "abandon": st.integers(0, 5),  # 0: RSET after RCPT instead of DATA
    }
)


class SyncRecorder(Recorder):
    """Like :class:`Recorder`, with a plain (not async) ``handle_DATA``."""

    def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # type: ignore[override]
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.reply


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[SMTPServer, SMTPServer]]:
    """One server with an async ``handle_DATA`` (reading pauses), one with a sync one."""
    async with serve(Recorder()) as one, serve(SyncRecorder()) as two:
        yield one, two


@FAST
@given(
    txs=st.lists(transaction, min_size=1, max_size=5),
    at=cuts,
    use_sync=st.booleans(),
)
async def test_pipelined_transactions_delivered_exactly_once(
    two_servers: tuple[SMTPServer, SMTPServer],
    caplog: Any,
    txs: list[dict[str, Any]],
    at: list[int],
    use_sync: bool,
) -> None:
    caplog.clear()
    server = two_servers[1] if use_sync else two_servers[0]
    handler = server.handler
    wire: list[bytes] = []
    expected_replies: list[bytes] = []
    expected: list[tuple[str, list[str], bytes]] = []
    for tx in txs:
        mail, rcpt, data = (b"mail from:", b"rcpt to:", b"data") if tx["lower"] else (
            b"MAIL FROM:", b"RCPT TO:", b"DATA"
        )
        if tx["noop_before"]:
            wire.append(b"NOOP\r\n")
            expected_replies.append(R_OK)
        wire.append(mail + b"<" + tx["sender"].encode() + b">\r\n")
        expected_replies.append(R_MAIL)
        for r in tx["rcpts"]:
            wire.append(rcpt + b"<" + r.encode() + b">\r\n")
            expected_replies.append(R_RCPT)
        if not tx["abandon"]:
            wire.append(b"RSET\r\n")
            expected_replies.append(R_OK)
            continue
        body_wire, content = encode_body(tx["body"])
        wire.append(data + b"\r\n" + body_wire)
        expected_replies += [R_354, QUEUED]
        expected.append((tx["sender"], tx["rcpts"], content))
    wire.append(b"QUIT\r\n")
    expected_replies.append(R_BYE)

    client = await greeted(server.port)
    await client.command(b"EHLO fuzz")
    before = len(handler.messages)
    for chunk in split(b"".join(wire), at):
        await client.send(chunk)
        await asyncio.sleep(0)
    got = await client.eof()
    await client.close()
    assert got == b"".join(expected_replies)
    assert handler.messages[before:] == expected
    await wait_until(lambda: server.connections == 0)
    assert server_errors(caplog) == []


bdat_transaction = st.fixed_dictionaries(
    {
        "sender": st.sampled_from(ADDRESSES),
        "rcpts": st.lists(st.sampled_from([a for a in ADDRESSES if a]), min_size=1, max_size=3),
        # Any octets (a "." line, CRLF.CRLF, bare CR/LF, commands), cut into chunks.
        "body": st.lists(
            st.one_of(st.binary(max_size=30), st.sampled_from([b"\r\n.\r\n", b"QUIT\r\n", b"BDAT 9\r\n"])),
            max_size=8,
        ).map(b"".join),
        "cuts": st.lists(st.integers(0, 300), max_size=4),
        "empty_last": st.booleans(),  # end with "BDAT 0 LAST"
        "binarymime": st.booleans(),
        "rset_midway": st.booleans(),  # RSET after the first chunk, then the whole again
    }
)


@FAST
@given(txs=st.lists(bdat_transaction, min_size=1, max_size=4), at=cuts, use_sync=st.booleans())
async def test_pipelined_bdat_transactions_delivered_exactly_once(
    two_servers: tuple[SMTPServer, SMTPServer],
    caplog: Any,
    txs: list[dict[str, Any]],
    at: list[int],
    use_sync: bool,
) -> None:
    """BDAT framing: whatever the chunk octets and however the stream is cut, each message
    arrives once, byte for byte, and every command gets its reply, in order."""
    caplog.clear()
    server = two_servers[1] if use_sync else two_servers[0]
    handler = server.handler
    wire: list[bytes] = []
    expected_replies: list[bytes] = []
    expected: list[tuple[str, list[str], bytes]] = []

    def envelope(tx: dict[str, Any]) -> None:
        body = b" BODY=BINARYMIME" if tx["binarymime"] else b""
        wire.append(b"MAIL FROM:<" + tx["sender"].encode() + b">" + body + b"\r\n")
        expected_replies.append(R_MAIL)
        for r in tx["rcpts"]:
            wire.append(b"RCPT TO:<" + r.encode() + b">\r\n")
            expected_replies.append(R_RCPT)

    for tx in txs:
        body = tx["body"]
        envelope(tx)
        pieces = split(body, tx["cuts"]) or [b""]
        if tx["rset_midway"]:
            wire.append(b"BDAT %d\r\n" % len(pieces[0]) + pieces[0] + b"RSET\r\n")
            expected_replies += [b"250 2.0.0 OK: %d octets received\r\n" % len(pieces[0]), R_OK]
            envelope(tx)
        if tx["empty_last"]:
            pieces.append(b"")
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            wire.append(b"BDAT %d%s\r\n" % (len(piece), b" LAST" if last else b"") + piece)
            expected_replies.append(QUEUED if last else b"250 2.0.0 OK: %d octets received\r\n" % len(piece))
        expected.append((tx["sender"], tx["rcpts"], body))
    wire.append(b"QUIT\r\n")
    expected_replies.append(R_BYE)

    client = await greeted(server.port)
    await client.command(b"EHLO fuzz")
    before = len(handler.messages)
    for chunk in split(b"".join(wire), at):
        await client.send(chunk)
        await asyncio.sleep(0)
    got = await client.eof()
    await client.close()
    assert got == b"".join(expected_replies)
    assert handler.messages[before:] == expected
    await wait_until(lambda: server.connections == 0)
    assert server_errors(caplog) == []


# -- 3. bounded memory ----------------------------------------------------------------------------


def protocol_of(server: SMTPServer) -> Any:
    """The one live connection's protocol object (None once it has gone)."""
    conns = list(server._connections)
    assert len(conns) <= 1
    return conns[0] if conns else None


@pytest.fixture
async def small_server() -> AsyncIterator[SMTPServer]:
    """A buffering handler with a small ``max_size``."""
    async with serve(Recorder(), max_size=4096) as server:
        yield server


@FEW
@given(
    prefix=st.sampled_from([b"", b"EHLO fuzz\r\n", b"NOOP\r\n", b"MAIL FROM:<a@b>\r\n"]),
    filler=st.sampled_from([b"A", b"AB\x00", b" ", b"\r" + b"A" * 7, b"\xff"]),
    chunk_size=st.integers(min_value=1000, max_value=40_000),
)
async def test_never_ending_command_line_is_cut_off_with_bounded_buffer(
    small_server: SMTPServer, prefix: bytes, filler: bytes, chunk_size: int
) -> None:
    server = small_server
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), WAIT)
    replies = asyncio.ensure_future(read_all(reader))
    # "\r" followed by "A" is a bare CR: those lines end, and are each one bad command.
    chunk = (filler * (chunk_size // len(filler) + 1))[:chunk_size]
    writer.write(prefix)
    peak = 0
    try:
        for _ in range(4 * core.MAX_COMMAND_DISCARD // chunk_size + 4):  # bounded
            if replies.done() or writer.is_closing():
                break
            try:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), WAIT)
            except (ConnectionError, RuntimeError):
                break  # cut off (uvloop: RuntimeError on a transport a reset closed)
            await asyncio.sleep(0.001)
            proto = protocol_of(server)
            if proto is not None:
                peak = max(peak, proto._reader.buffered)
        got = await asyncio.wait_for(replies, WAIT)
    finally:
        writer.close()
    codes = check_replies(got)
    # The server documents 500 (line too long), 421 (runaway, too many bad commands).
    assert codes[0] == b"220" and codes[-1] == b"421", got[-300:]
    assert set(codes[1:-1]) <= {b"250", b"500", b"501", b"503"}
    assert peak < core.MAX_COMMAND_LINE
    await wait_until(lambda: server.connections == 0)
    await assert_serving(server)


@FEW
@given(
    body=st.sampled_from([b"A", b"line of text\r\n", b"\n.\r\n", b"\n.\n", b"x\r", b"\r.\r"]),
    total=st.integers(min_value=5_000, max_value=300_000),
    at=cuts,
)
async def test_body_beyond_max_size_is_refused_with_bounded_memory(
    small_server: SMTPServer, body: bytes, total: int, at: list[int]
) -> None:
    server = small_server
    handler = server.handler
    before = len(handler.messages)
    client = await greeted(server.port)
    await client.command(b"EHLO fuzz")
    await client.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    await client.expect(R_MAIL + R_RCPT + R_354)
    data = (body * (total // len(body) + 1))[:total]
    peak_reader = peak_kept = 0
    for chunk in split(data, [*at, *range(0, total, 65536)]):
        await client.send(chunk)
        await asyncio.sleep(0.001)
        proto = protocol_of(server)
        assert proto is not None and proto._reader.in_data
        peak_reader = max(peak_reader, proto._reader.buffered)
        peak_kept = max(peak_kept, sum(map(len, proto._sm._chunks)))
    # CRLF first: the body may end inside a line (a never-ending data line).
    assert await client.command(b"\r\n.") == R_TOO_BIG
    assert await client.command(b"NOOP") == R_OK
    await client.close()
    assert handler.messages[before:] == []
    assert peak_kept <= server._config.max_size
    # At most a few bytes wait for the next one ("." "\r" at a line start).
    assert peak_reader <= 4
    await wait_until(lambda: server.connections == 0)


class Gate:
    """A handler whose ``handle_MAIL`` waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.mails = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> None:
        self.mails += 1
        await self.open.wait()
        envelope.mail_from = address


@pytest.fixture
async def gated_server() -> AsyncIterator[SMTPServer]:
    """A server whose MAIL hook blocks, so pipelined input can only wait."""
    async with serve(Gate(), timeout=5.0) as server:
        yield server


def raw_socket(port: int) -> socket.socket:
    """A non-blocking client socket with small kernel buffers (a flood fills them fast)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def flood(sock: socket.socket, block: bytes, limit: int, server: SMTPServer) -> tuple[int, int, int]:
    """Send ``block`` until the kernel refuses for a while or ``limit`` bytes went out.

    Returns the bytes sent and the largest read and write buffers of the server's
    connection seen meanwhile.
    """
    sent = refusals = peak_in = peak_out = 0
    while sent < limit and refusals < 25:
        try:
            sent += sock.send(block)
            refusals = 0
        except BlockingIOError:
            refusals += 1
            await asyncio.sleep(0.004)
        except ConnectionError:
            break
        proto = protocol_of(server)
        if proto is not None:
            peak_in = max(peak_in, proto._reader.buffered)
            peak_out = max(peak_out, proto.transport.get_write_buffer_size())
    return sent, peak_in, peak_out


# One read of the event loop (asyncio and uvloop read at most 256 KiB) plus a partial line.
ONE_READ = 256 * 1024 + core.MAX_COMMAND_LINE
# The transport's default high-water mark, plus one batch of replies that crossed it.
WRITE_BOUND = 64 * 1024 + 64 * 1024


@FEW
@given(
    command=st.sampled_from([b"NOOP\r\n", b"RCPT TO:<c@d>\r\n", b"HELP\r\n", b"x\n"]),
    repeat=st.integers(min_value=700, max_value=4000),
)
async def test_pipelining_megabytes_while_a_hook_runs_stays_bounded(
    gated_server: SMTPServer, command: bytes, repeat: int
) -> None:
    server = gated_server
    gate: Gate = server.handler
    gate.open.clear()
    sock = raw_socket(server.port)
    try:
        sock.send(b"EHLO fuzz\r\nMAIL FROM:<a@b>\r\n")
        await wait_until(lambda: gate.mails == 1)
        sent, peak_in, _ = await flood(sock, command * repeat, 8 << 20, server)
        assert sent < 8 << 20, "the server kept reading while its hook ran"
        assert peak_in <= ONE_READ
    finally:
        sock.close()
        gate.mails = 0
        gate.open.set()
    await wait_until(lambda: server.connections == 0)


@FEW
@given(
    command=st.sampled_from([b"NOOP\r\n", b"HELP\r\n", b"EHLO fuzz\r\n", b"VRFY a@b\r\n"]),
    repeat=st.integers(min_value=700, max_value=4000),
)
async def test_pipelining_megabytes_without_reading_replies_stays_bounded(
    small_server: SMTPServer, command: bytes, repeat: int
) -> None:
    server = small_server
    sock = raw_socket(server.port)
    try:
        sent, peak_in, peak_out = await flood(sock, command * repeat, 64 << 20, server)
        assert sent < 64 << 20, "the server kept reading while nobody read its replies"
        assert peak_in <= ONE_READ
        # Replies are written in batches and processing stops at the transport's
        # high-water mark (64 KiB): a reply is up to 14 times the size of its command
        # (HELP, EHLO), so answering all of one 256 KiB read at once would buffer 3.5 MB.
        assert peak_out <= WRITE_BOUND
    finally:
        sock.close()
    await wait_until(lambda: server.connections == 0)
