"""Our server with CHUNKING on against real clients: DATA clients see no difference.

swaks and smtplib do not speak BDAT; they read the CHUNKING line in EHLO, ignore it and
send with DATA, and their messages must arrive exactly as before (dot-unstuffed, CRLF).
smtplib's low-level calls then send BDAT by hand through its own socket.
"""

from __future__ import annotations

import asyncio
import smtplib
import subprocess

from support.env import require_peer
from support.server import WAIT, Recorder, serve

BODY = "first line\n.leading dot\n..two dots\nlast line\n"


async def test_swaks_with_data_under_chunking() -> None:
    swaks = require_peer("swaks")
    handler = Recorder()
    async with serve(handler) as server:
        proc = await asyncio.create_subprocess_exec(
            swaks, "--server", "127.0.0.1", "--port", str(server.port), "--from", "a@x.org",
            "--to", "b@y.org", "--body", BODY, "--pipeline",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
    assert b"<-  250-CHUNKING" in out  # offered, and the DATA client was not confused by it
    assert b"\n -> DATA\n" in out and b"\n<-  354 " in out and b"BDAT" not in out
    assert handler.messages[0][:2] == ("a@x.org", ["b@y.org"])
    assert b"\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast line\r\n" in handler.messages[0][2]


def smtplib_data_then_bdat(port: int) -> tuple[bool, dict[str, str], list[tuple[int, bytes]]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.ehlo("me")
        offered = client.has_extn("chunking")
        refused = client.sendmail("a@x.org", ["b@y.org"], BODY.replace("\n", "\r\n"))
        # The same socket, BDAT by hand: two chunks, the last one binary.
        replies = [client.docmd("MAIL", "FROM:<c@x.org> BODY=BINARYMIME"), client.docmd("RCPT", "TO:<d@y.org>")]
        client.send(b"BDAT 6\r\nchunk\n")
        replies.append(client.getreply())
        client.send(b"BDAT 5 LAST\r\n.\r\n\x00\xff")
        replies.append(client.getreply())
        return offered, refused, replies


async def test_smtplib_sends_with_data_and_bdat_by_hand() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        offered, refused, replies = await asyncio.to_thread(smtplib_data_then_bdat, server.port)
    assert offered and refused == {}
    assert replies == [
        (250, b"2.1.0 OK"),
        (250, b"2.1.5 OK"),
        (250, b"2.0.0 OK: 6 octets received"),
        (250, b"2.0.0 OK: queued"),
    ]
    assert [m[2] for m in handler.messages] == [
        b"first line\r\n.leading dot\r\n..two dots\r\nlast line\r\n",
        b"chunk\n.\r\n\x00\xff",
    ]
