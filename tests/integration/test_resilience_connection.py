"""Issue 10, the connection's part: failures are judged by what really left the process.

* a message whose final dot never reached the kernel is not "maybe delivered" (finding 2);
* ``SendResult`` carries ``envelope_time`` / ``message_time`` / ``size``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPMaybeDelivered, SMTPServerDisconnected
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool

from support.peer import reset

ENV = Envelope("a@x.test", ["b@x.test"])
BIG = (b"x" * 998 + b"\r\n") * (36 * 1024 * 1024 // 1000)  # about 36 MB, nothing to stuff

PIPE_EHLO = b"250-peer.test\r\n250 PIPELINING\r\n"


async def _command_phase(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet, answer EHLO and the pipelined MAIL/RCPT/DATA with 250/250/354."""
    writer.write(b"220 peer.test ESMTP\r\n")
    await reader.readline()  # EHLO
    writer.write(PIPE_EHLO)
    for _ in range(3):
        await reader.readline()  # MAIL, RCPT, DATA
    writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
    await writer.drain()


async def _read_data(reader: asyncio.StreamReader) -> int:
    """Read message data through its final dot; return its size."""
    tail = b""
    size = 0
    while not tail.endswith(b"\r\n.\r\n"):
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise ConnectionError("the client went away in the data")
        size += len(chunk)
        tail = (tail + chunk)[-5:]
    return size


class ResetAfterThreeBytes:
    """A server whose first ``resets`` sessions read 3 bytes of data and reset; later
    sessions take the message and answer 250."""

    def __init__(self, resets: int = 1, rcvbuf: int | None = None) -> None:
        self.resets = resets
        self.rcvbuf = rcvbuf
        self.sessions = 0
        self.delivered: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ResetAfterThreeBytes:
        sock = socket.socket()
        if self.rcvbuf is not None:
            # Inherited by accepted sockets: the kernel then holds little of the data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        try:
            await _command_phase(reader, writer)
            if self.sessions <= self.resets:
                await reader.readexactly(3)
                reset(writer)
                return
            self.delivered.append(await _read_data(reader))
            writer.write(b"250 queued\r\n")
            await reader.readline()  # QUIT
            writer.write(b"221 bye\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


async def test_big_message_reset_after_three_bytes_is_not_maybe_delivered() -> None:
    # Finding 2: 36 MB in memory, the server reads 3 bytes and resets. The dot was
    # still in the process (or the transport's buffer): nothing can have been delivered.
    async with ResetAfterThreeBytes() as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True,
                                  name="client.test") as conn:
            with pytest.raises(SMTPServerDisconnected) as info:
                await conn.send(BIG, ENV)
            assert not isinstance(info.value, SMTPMaybeDelivered)
            assert info.value.transient
            assert not conn.is_usable


async def test_pool_retries_a_big_message_whose_dot_never_left() -> None:
    async with ResetAfterThreeBytes() as server:
        async with SMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True,
                            name="client.test", max_connections=1, retry_delay=0.01) as pool:
            result = await pool.send(BIG, ENV)
        assert result.response.code == 250
        assert server.sessions == 2
        assert server.delivered == [len(BIG) + 3]  # the body and ".\r\n", once


async def test_dot_stuck_in_the_transport_buffer_is_not_maybe_delivered() -> None:
    # One write holds the whole body and its dot (under JOIN_LIMIT), but tiny socket
    # buffers keep most of it in the transport's buffer: the dot never reached the
    # kernel when the server resets.
    body = b"y" * 198 + b"\r\n"
    body *= 1000  # 200 KB, one write
    async with ResetAfterThreeBytes(rcvbuf=4096) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        conn = SMTPConnection(sock=sock, ignore_tls=True, name="client.test")
        await conn.connect()
        try:
            with pytest.raises(SMTPServerDisconnected) as info:
                await conn.send(body, ENV)
            assert not isinstance(info.value, SMTPMaybeDelivered)
        finally:
            conn.close()


async def test_send_result_times_and_size() -> None:
    async with ResetAfterThreeBytes(resets=0) as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True,
                                  name="client.test") as conn:
            result = await conn.send(b"Subject: hi\r\n\r\nhello\r\n", ENV)
    assert result.size == len(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
    assert result.envelope_time > 0 and result.message_time > 0


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_big_message_over_tls_is_delivered_whole(server_ssl_context: Any,
                                                       client_ssl_context: Any,
                                                       implicit: bool, chunking: bool) -> None:
    # The sliced writes and the dot (BDAT: LAST) tracking through the TLS transport's own
    # buffer. DATA adds the ".\r\n" terminator to the size; BDAT sends the data alone.
    from support.server import Recorder, serve

    body = (b"z" * 998 + b"\r\n") * 8000  # 8 MB
    recorder = Recorder()
    options = ({"secure": True, "ssl_context": server_ssl_context} if implicit
               else {"tls_context": server_ssl_context})
    async with serve(recorder, **options) as server:
        async with SMTPConnection("127.0.0.1", server.port, secure=implicit,
                                  tls=client_ssl_context, require_tls=not implicit,
                                  chunking=chunking) as conn:
            for _ in range(2):
                result = await conn.send(body, ENV)
                assert result.response.code == 250
                assert result.size == len(body) + (0 if chunking else 3)
    assert [content for _, _, content in recorder.messages] == [body, body]
