"""Safety of the SMTP server, checked with scripted raw sockets (exact bytes in and out)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from support.server import WAIT, RawClient, Recorder, greeted, serve, wait_until

from fastsmtp._codec import core
from fastsmtp.server import SMTPServer, SMTPServerProtocol

EHLO_PLAIN = (
    b"250-test.local\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n"
    b"250-CHUNKING\r\n250-BINARYMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 HELP\r\n"
)
TRANSACTION = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"
TRANSACTION_REPLIES = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"


def only_crlf(data: bytes) -> bool:
    return b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")


async def test_ehlo_and_pipelined_transaction_exact_bytes() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.send(b"EHLO me\r\n")
        await client.expect(EHLO_PLAIN)
        await client.send(TRANSACTION + b"Hello\r\n..dot\r\n.\r\nQUIT\r\n")
        await client.expect(TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n221 2.0.0 Bye\r\n")
        assert await client.eof() == b""
        await client.close()
    assert handler.messages == [("a@x.org", ["b@y.org"], b"Hello\r\n.dot\r\n")]


async def test_only_crlf_dot_crlf_ends_data_and_no_bare_eol_reaches_handler() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        # Smuggling attempts: "\n.\n", "\r.\r", "\n.\r\n" must not end the data.
        body = b"one\n.\nMAIL FROM:<evil@x>\r\nx\r.\rRCPT TO:<e@x>\n.\r\ntwo\r\n.\r\n"
        await client.send(TRANSACTION + body + b"NOOP\r\n")
        await client.expect(TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n250 2.0.0 OK\r\n")
        await client.close()
    assert len(handler.messages) == 1  # one DATA, one handler call
    content = handler.messages[0][2]
    assert only_crlf(content)
    assert content.endswith(b"two\r\n")
    assert b"MAIL FROM:<evil@x>" in content


async def test_bare_newline_reject_answers_550_after_draining() -> None:
    handler = Recorder()
    async with serve(handler, bare_newline="reject") as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION + b"bad\nline\r\n.\r\nNOOP\n")
        await client.expect(
            TRANSACTION_REPLIES
            + b"550 5.6.0 Error: bare <CR> or <LF> in message data\r\n"
            + b"500 5.5.2 Error: bare <CR> or <LF> in command\r\n"
        )
        await client.send(b"NOOP\r\n")
        await client.expect(b"250 2.0.0 OK\r\n")
        await client.close()
    assert handler.messages == []


async def test_bare_newline_normalize_accepts_bare_lf_commands() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        await client.send(b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nl1\nl2\r\n.\r\n")
        await client.expect(
            b"250 test.local\r\n" + TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n"
        )
        await client.close()
    assert handler.messages[0][2] == b"l1\r\nl2\r\n"


async def test_starttls_discards_pipelined_plaintext_and_forgets_state(
    server_ssl_context: Any, client_ssl_context: Any
) -> None:
    handler = Recorder()
    async with serve(handler, tls_context=server_ssl_context) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"250-STARTTLS\r\n" in ehlo
        # Injected plaintext after STARTTLS (CVE-2011-0411 style) must be dropped.
        await client.send(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<e@x>\r\n")
        await client.expect(b"220 2.0.0 Ready to start TLS\r\n")
        await client.start_tls(client_ssl_context)
        # EHLO from before TLS is forgotten; nothing injected was executed.
        assert await client.command(b"MAIL FROM:<a@x>") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        ehlo = await client.command(b"EHLO me")
        assert b"STARTTLS" not in ehlo
        assert await client.command(b"STARTTLS") == b"503 5.5.1 Error: TLS already active\r\n"
        assert await client.command(b"RCPT TO:<b@y>") == b"503 5.5.1 Error: need MAIL command\r\n"
        await client.send(TRANSACTION + b"secret\r\n.\r\n")
        await client.expect(TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n")
        await client.close()
    assert handler.messages == [("a@x.org", ["b@y.org"], b"secret\r\n")]
    assert handler.envelopes[0] is not None


async def test_starttls_is_refused_during_a_mail_transaction(server_ssl_context: Any) -> None:
    """As Postfix: the handshake would reset a transaction whose BDAT chunks the handler
    may already hold. The transaction goes on; after RSET, STARTTLS is offered again."""
    handler = Recorder()
    in_mail = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
    async with serve(handler, tls_context=server_ssl_context) as server:
        client = await greeted(server.port)
        assert b"250-CHUNKING\r\n" in await client.command(b"EHLO me")
        assert await client.command(b"MAIL FROM:<a@x.org>") == b"250 2.1.0 OK\r\n"
        assert await client.command(b"STARTTLS") == in_mail
        assert await client.command(b"RCPT TO:<b@y.org>") == b"250 2.1.5 OK\r\n"
        await client.send(b"BDAT 6\r\nhello ")
        await client.expect(b"250 2.0.0 OK: 6 octets received\r\n")
        assert await client.command(b"STARTTLS") == in_mail  # between chunks
        await client.send(b"BDAT 7 LAST\r\nworld\r\n")
        await client.expect(b"250 2.0.0 OK: queued\r\n")
        assert await client.command(b"MAIL FROM:<c@x.org>") == b"250 2.1.0 OK\r\n"
        assert await client.command(b"RSET") == b"250 2.0.0 OK\r\n"
        assert await client.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
        await client.close()
    assert handler.messages == [("a@x.org", ["b@y.org"], b"hello world\r\n")]


async def test_data_reply_only_after_handler_returned() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    class Slow:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            started.set()
            await release.wait()
            # Reading was paused while the hook was awaited (and still is).
            assert not server.transport.is_reading()
            return "250 2.0.0 stored"

    async with serve(Slow()) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION + b"x\r\n.\r\nNOOP\r\n")
        await client.expect(TRANSACTION_REPLIES)
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.reader.readexactly(1), 0.2)
        release.set()
        await client.expect(b"250 2.0.0 stored\r\n250 2.0.0 OK\r\n")
        await client.close()


async def test_handler_exception_gives_451_without_leaking(caplog: Any) -> None:
    class Broken:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            raise RuntimeError("secret database password in traceback")

        def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            if address == "sync@fail":
                raise ValueError("sync secret")
            envelope.rcpt_tos.append(address)
            return "250 OK"

    caplog.set_level(logging.ERROR, logger="fastsmtp.server")
    async with serve(Broken()) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<sync@fail>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n")
        await client.expect(
            b"250 2.1.0 OK\r\n451 4.3.0 Error: local error in processing\r\n250 OK\r\n"
            b"354 End data with <CR><LF>.<CR><LF>\r\n451 4.3.0 Error: local error in processing\r\n"
        )
        await client.close()
    assert "secret database password" in caplog.text  # logged for the operator


async def test_handler_timeout_gives_451() -> None:
    class Hang:
        async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            await asyncio.sleep(30)
            return "250 OK"

    async with serve(Hang(), handler_timeout=0.2) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"MAIL FROM:<a@x>") == b"451 4.3.0 Error: local error in processing\r\n"
        assert await client.command(b"RCPT TO:<b@y>") == b"503 5.5.1 Error: need MAIL command\r\n"
        await client.close()


async def test_disconnect_before_end_of_data_never_calls_handler() -> None:
    handler = Recorder()
    aborted: list[Any] = []

    class Streamer:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.ready = 0

        async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
            self.chunks.append(chunk)

        async def data_ready(self, session: Any, envelope: Any) -> str:
            self.ready += 1
            return "250 OK"

        async def data_abort(self, session: Any, envelope: Any) -> None:
            aborted.append(envelope)

    streamer = Streamer()
    for h in (handler, streamer):
        async with serve(h) as server:
            client = await greeted(server.port)
            await client.command(b"EHLO me")
            await client.send(TRANSACTION + b"partial body\r\n.")
            await client.expect(TRANSACTION_REPLIES)
            await client.close()
            await wait_until(lambda: server.connections == 0)
    assert handler.messages == []
    assert streamer.ready == 0
    assert len(aborted) == 1


async def test_long_command_line_500_and_runaway_421() -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.send(b"NOOP " + b"x" * 1000 + b"\r\nNOOP\r\n")
        await client.expect(b"500 5.5.2 Error: line too long\r\n250 2.0.0 OK\r\n")
        await client.send(b"x" * (core.MAX_COMMAND_DISCARD + 10))
        await client.expect(b"421 4.7.0 test.local Error: line too long, closing connection\r\n")
        assert await client.eof() == b""
        await client.close()


async def test_message_over_max_size_is_drained_and_552() -> None:
    handler = Recorder()
    async with serve(handler, max_size=100) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"250-SIZE 100\r\n" in ehlo
        assert await client.command(b"MAIL FROM:<a@x> SIZE=101") == (
            b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
        )
        await client.send(TRANSACTION + (b"y" * 50 + b"\r\n") * 100 + b".\r\nNOOP\r\n")
        await client.expect(
            TRANSACTION_REPLIES
            + b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
            + b"250 2.0.0 OK\r\n"
        )
        await client.send(TRANSACTION + b"small\r\n.\r\n")
        await client.expect(TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n")
        await client.close()
    assert [m[2] for m in handler.messages] == [b"small\r\n"]


async def test_idle_client_times_out() -> None:
    async with serve(timeout=0.3) as server:
        client = await greeted(server.port)
        assert await client.eof() == b"421 4.4.2 test.local Error: timeout exceeded, closing connection\r\n"
        await client.close()


async def test_trickling_command_times_out_despite_activity() -> None:
    async with serve(timeout=0.5) as server:
        client = await greeted(server.port)
        for _ in range(40):  # 1 byte every 50 ms: never idle, never a whole line
            try:
                await client.send(b"N")
            except (ConnectionError, OSError):
                break
            if client.reader.at_eof() or client.reader._buffer:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert await client.eof() == b"421 4.4.2 test.local Error: timeout exceeded, closing connection\r\n"
        await client.close()


async def test_trickling_data_times_out_on_total_data_time() -> None:
    handler = Recorder()
    async with serve(handler, timeout=5, data_timeout=0.5) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        for _ in range(40):
            try:
                await client.send(b"data\r\n")
            except (ConnectionError, OSError):
                break
            if client.reader.at_eof() or client.reader._buffer:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert await client.eof() == b"421 4.4.2 test.local Error: timeout exceeded, closing connection\r\n"
        await client.close()
    assert handler.messages == []


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a\x01b@x>",
        b"MAIL FROM:<a@x> SIZE=1\x00",
        b"MAIL FROM:<a@x>\tSIZE=1",
        b"MAIL FROM:<a@x> BODY=8BIT\x7fMIME",
        b"EHLO bad\x1bname",
    ],
)
async def test_control_characters_get_501(line: bytes) -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(line) == b"501 5.5.2 Error: control characters are not allowed\r\n"
        await client.close()


async def test_rcpt_control_characters_get_501() -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.send(b"EHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b\x08@y>\r\n")
        await client.expect(EHLO_PLAIN + b"250 2.1.0 OK\r\n501 5.5.2 Error: control characters are not allowed\r\n")
        await client.close()


async def test_awaited_hooks_run_in_order_with_reading_paused() -> None:
    events: list[str] = []

    class Ordered:
        async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            events.append("mail start")
            await asyncio.sleep(0.05)
            assert not server.transport.is_reading()  # paused while the hook waited
            events.append("mail end")
            envelope.mail_from = address
            return "250 sender ok"

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            events.append("rcpt " + address)
            envelope.rcpt_tos.append(address)
            return "250 rcpt ok"

    async with serve(Ordered()) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRSET\r\n")
        await client.expect(b"250 sender ok\r\n250 rcpt ok\r\n250 rcpt ok\r\n250 2.0.0 OK\r\n")
        await client.close()
    assert events == ["mail start", "mail end", "rcpt b@y", "rcpt c@y"]


class _Transport:
    """The smallest transport a protocol can be driven with, to count write calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0  # every write went out at once

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_pipelined_commands_answered_in_one_write() -> None:
    handler = Recorder()
    server = SMTPServer(handler, name="test.local")
    server._loop = asyncio.get_running_loop()
    protocol = SMTPServerProtocol(server)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert len(transport.writes) == 1  # the greeting
    protocol.data_received(b"EHLO me\r\n" + TRANSACTION + b"body\r\n.\r\nMAIL FROM:<c@d>\r\nRSET\r\n")
    # Recorder.handle_DATA is a coroutine: everything before it goes out in one write.
    assert transport.writes[1:] == [EHLO_PLAIN + TRANSACTION_REPLIES]
    await wait_until(lambda: len(transport.writes) == 3)
    assert transport.writes[2] == b"250 2.0.0 OK: queued\r\n250 2.1.0 OK\r\n250 2.0.0 OK\r\n"
    protocol.connection_lost(None)
    assert handler.messages == [("a@x.org", ["b@y.org"], b"body\r\n")]


async def test_sync_hooks_keep_everything_in_one_write() -> None:
    class SyncHandler:
        def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 sync ok"

    server = SMTPServer(SyncHandler(), name="test.local")
    server._loop = asyncio.get_running_loop()
    protocol = SMTPServerProtocol(server)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"HELO me\r\n" + TRANSACTION + b"body\r\n.\r\nQUIT\r\n")
    assert transport.writes[1:] == [
        b"250 test.local\r\n" + TRANSACTION_REPLIES + b"250 sync ok\r\n221 2.0.0 Bye\r\n"
    ]
    assert transport.closed
    protocol.connection_lost(None)


async def test_max_clients_421() -> None:
    async with serve(max_clients=1) as server:
        first = await greeted(server.port)
        second = await RawClient.connect(server.port)
        assert await second.eof() == b"421 4.3.2 test.local Too many connections, try again later\r\n"
        assert await first.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await first.close()
        await second.close()


async def test_max_recipients_452() -> None:
    async with serve(max_recipients=2) as server:
        client = await greeted(server.port)
        await client.send(b"EHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\n")
        await client.expect(
            EHLO_PLAIN + b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n"
            b"452 4.5.3 Error: too many recipients\r\n"
        )
        await client.close()


async def test_require_tls_530_before_starttls(server_ssl_context: Any) -> None:
    async with serve(tls_context=server_ssl_context, require_tls=True) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"MAIL FROM:<a@x>") == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await client.close()


async def test_auth_not_offered_or_accepted_over_plaintext() -> None:
    async with serve(enable_auth=True) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"AUTH" not in ehlo
        assert await client.command(b"AUTH PLAIN AGEAYg==") == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
        await client.close()


async def test_graceful_close_lets_transaction_finish() -> None:
    handler = Recorder()
    server = SMTPServer(handler, name="test.local")
    await server.start()
    try:
        busy = await greeted(server.port)
        idle = await greeted(server.port)
        await busy.command(b"EHLO me")
        await busy.send(TRANSACTION)
        await busy.expect(TRANSACTION_REPLIES)
        closing = asyncio.ensure_future(server.close(timeout=5))
        assert await idle.eof() == b"421 4.3.2 test.local Service shutting down, closing connection\r\n"
        await busy.send(b"still in the transaction\r\n.\r\nMAIL FROM:<a@x>\r\n")
        await busy.expect(
            b"250 2.0.0 OK: queued\r\n421 4.3.2 test.local Service shutting down, closing connection\r\n"
        )
        assert await busy.eof() == b""
        await asyncio.wait_for(closing, 10)
        await busy.close()
        await idle.close()
    finally:
        await server.close(timeout=0.5)
    assert handler.messages[0][2] == b"still in the transaction\r\n"


async def test_graceful_close_ends_a_finished_session_without_its_next_command() -> None:
    # close() waits on the last connection going away: a session whose transaction has
    # ended gets its 421 at once, not when it sends another command or the grace runs out.
    handler = Recorder()
    server = SMTPServer(handler, name="test.local")
    await server.start()
    try:
        busy = await greeted(server.port)
        await busy.command(b"EHLO me")
        await busy.send(TRANSACTION)
        await busy.expect(TRANSACTION_REPLIES)
        closing = asyncio.ensure_future(server.close(timeout=60))
        await wait_until(lambda: server.state.closing)
        await busy.send(b"last message\r\n.\r\n")
        assert await busy.eof() == (
            b"250 2.0.0 OK: queued\r\n421 4.3.2 test.local Service shutting down, closing connection\r\n"
        )
        await asyncio.wait_for(closing, WAIT)
        assert server.connections == 0
        await busy.close()
    finally:
        await server.close(timeout=0.5)
    assert handler.messages[0][2] == b"last message\r\n"


async def test_too_many_bad_commands_and_http_closes() -> None:
    async with serve() as server:
        client = await greeted(server.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await client.eof() == b"421 4.7.0 test.local Error: too many bad commands, closing connection\r\n"
        await client.close()
        client = await greeted(server.port)
        await client.send(b"BOGUS\r\n" * 30)
        data = await client.eof()
        assert data.count(b'500 5.5.2 Error: command "BOGUS" not recognized\r\n') == 20
        assert data.endswith(b"421 4.7.0 test.local Error: too many bad commands, closing connection\r\n")
        await client.close()


async def test_session_fed_byte_by_byte() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = await greeted(server.port)
        script = b"EHLO me\r\n" + TRANSACTION + b"a\r\n..b\r\n.\r\nQUIT\r\n"
        for i in range(len(script)):
            client.writer.write(script[i : i + 1])
            await client.writer.drain()
        await client.expect(EHLO_PLAIN + TRANSACTION_REPLIES + b"250 2.0.0 OK: queued\r\n221 2.0.0 Bye\r\n")
        await client.close()
    assert handler.messages == [("a@x.org", ["b@y.org"], b"a\r\n.b\r\n")]


async def test_handler_reply_is_always_one_wire_reply(caplog: Any) -> None:
    replies = {
        "inject@y": "250 OK\n250 injected",  # two complete replies before the fix
        "dash@y": "250-a\r\n250-b",  # never ends: the client would wait for ever
        "mixed@y": "250-a\n550 b",
        "nul@y": "250 a\x00b",
        "esc@y": "250 \x1b[31mred",
    }

    class Replies:
        def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            envelope.rcpt_tos.append(address)
            return replies[address]

    caplog.set_level(logging.ERROR, logger="fastsmtp.server")
    async with serve(Replies()) as server:
        client = await greeted(server.port)
        await client.command(b"HELO me")
        # Pipelined: each command must get exactly one reply, in order, or the client
        # would take the injected line as the answer to the next command.
        rcpts = b"".join(b"RCPT TO:<" + a.encode() + b">\r\n" for a in replies)
        await client.send(b"MAIL FROM:<a@x>\r\n" + rcpts + b"NOOP\r\n")
        await client.expect(
            b"250 2.1.0 OK\r\n"
            b"250-OK\r\n250 injected\r\n"
            b"250-a\r\n250 b\r\n"
            + b"451 4.3.0 Error: local error in processing\r\n" * 3
            + b"250 2.0.0 OK\r\n"
        )
        await client.close()
    refused = [r.getMessage() for r in caplog.records if "invalid reply" in r.getMessage()]
    assert len(refused) == 3  # logged for the operator, never sent


async def test_banner_and_name_cannot_put_line_breaks_on_the_wire() -> None:
    with pytest.raises(ValueError):
        SMTPServer(Recorder(), banner="hi\r\n250 fake\nx")
    with pytest.raises(ValueError):
        SMTPServer(Recorder(), name="mx.example\r\n250 fake")
    with pytest.raises(ValueError):
        SMTPServer(Recorder(), name="mx example")
    async with serve(banner="ESMTP ready; no UCE") as server:
        client = await RawClient.connect(server.port)
        await client.expect(b"220 test.local ESMTP ready; no UCE\r\n")
        assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await client.close()


async def test_no_data_hook_keeps_no_message_in_memory_even_unlimited() -> None:
    # max_size=0 is unlimited; a handler without handle_DATA (a sink) must still not
    # collect the message: nobody would read envelope.content.
    envelopes: list[Any] = []

    class RecipientsOnly:
        def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> None:
            envelopes.append(envelope)

    async with serve(RecipientsOnly(), max_size=0) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION + b"line\r\n" * 100_000 + b".\r\n")
        await client.expect(TRANSACTION_REPLIES + b"250 2.0.0 OK: message accepted\r\n")
        await client.close()
    assert len(envelopes) == 1
    assert envelopes[0].content is None


def flood_without_reading(port: int) -> socket.socket:
    """A client that pipelines NOOPs and never reads a reply, until the kernel refuses."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def fill(sock: socket.socket) -> None:
    refusals = 0
    for _ in range(20_000):  # bounded; the server stops reading once its writes pause
        try:
            sock.send(b"NOOP\r\n" * 1000)
            refusals = 0
        except BlockingIOError:
            refusals += 1
            if refusals >= 20:
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the server read for ever without its replies being read")


async def test_client_that_never_reads_is_cut_off_after_timeouts() -> None:
    # transport.close() waits for the replies to be flushed: without a further limit a
    # client that never reads would hold its connection and buffer for ever.
    async with serve(timeout=0.3) as server:
        sock = flood_without_reading(server.port)
        try:
            await fill(sock)
            (protocol,) = server._connections
            assert protocol.transport.get_write_buffer_size() > 0
            await wait_until(lambda: server.connections == 0)
        finally:
            sock.close()


async def test_server_close_cuts_a_client_that_never_reads() -> None:
    server = SMTPServer(Recorder(), name="test.local")
    await server.start()
    sock = flood_without_reading(server.port)
    try:
        await fill(sock)
        await asyncio.wait_for(server.close(timeout=0.2), WAIT)
        await wait_until(lambda: server.connections == 0)
    finally:
        sock.close()
        await server.close(timeout=0.2)
