"""The SMTP server against real clients: smtplib, aiosmtplib, swaks; TLS, AUTH, handlers."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
import ssl
import subprocess
from base64 import b64encode
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.handlers import AsyncMessage, Message, Sink
from aiosmtpd.smtp import AuthResult as AioAuthResult
from aiosmtpd.smtp import LoginPassword as AioLoginPassword
from support.env import require_peer
from support.server import WAIT, Recorder, greeted, serve

from fastsmtp.server.auth import AuthResult, CramMD5Credentials, XOAuth2Credentials
from fastsmtp.server import SMTPServer, SMTPServerThread

USERS = {"alice": "s3cret", "bob": "hunter2"}
R_354 = b"354 End data with <CR><LF>.<CR><LF>\r\n"


def aiosmtpd_style_authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    """Written against aiosmtpd's documented authenticator API."""
    fail = AioAuthResult(success=False, handled=False)
    if mechanism not in ("LOGIN", "PLAIN") or not isinstance(auth_data, AioLoginPassword):
        return fail
    user, password = auth_data.login.decode(), auth_data.password.decode()
    if USERS.get(user) == password:
        return AioAuthResult(success=True, auth_data=user)
    return fail


async def fastsmtp_authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """An async authenticator covering every mechanism."""
    user = auth_data.login.decode()
    if isinstance(auth_data, CramMD5Credentials):
        return AuthResult(success=user in USERS and auth_data.verify(USERS[user]))
    if isinstance(auth_data, XOAuth2Credentials):
        return AuthResult(success=auth_data.token == b"token-" + auth_data.login)
    return AuthResult(success=USERS.get(user) == auth_data.password.decode(), auth_data=user)


def make_message(body: str = "Hello there.\n.leading dot\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "test"
    msg.set_content(body)
    return msg


def smtplib_send(port: int, **kw: Any) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        if kw.get("starttls"):
            client.starttls(context=kw["starttls"])
        if kw.get("login"):
            client.login(*kw["login"])
        return client.send_message(make_message(), "a@example.org", ["b@example.org", "c@example.org"])


async def test_smtplib_roundtrip() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        refused = await asyncio.to_thread(smtplib_send, server.port)
    assert refused == {}
    mail_from, rcpts, content = handler.messages[0]
    assert (mail_from, rcpts) == ("a@example.org", ["b@example.org", "c@example.org"])
    assert b"\r\n.leading dot\r\n" in content
    assert [o[:5] for o in handler.envelopes[0].mail_options] == ["SIZE="]


async def test_aiosmtplib_roundtrip_and_smtputf8() -> None:
    handler = Recorder()
    async with serve(handler) as server:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
        await client.connect()
        errors, reply = await client.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nbody\r\n")
        assert errors == {} and reply.startswith("2.0.0")
        await client.quit()
        raw = await greeted(server.port)
        await raw.command(b"EHLO me")
        await raw.send("MAIL FROM:<ü@exämple.org> SMTPUTF8\r\nRCPT TO:<ö@exämple.org>\r\nDATA\r\nx\r\n.\r\n".encode())
        replies = [await raw.reply() for _ in range(4)]
        assert replies[-1] == b"250 2.0.0 OK: queued\r\n"
        await raw.close()
    assert handler.messages[0] == ("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    assert handler.messages[1][0] == "ü@exämple.org"
    assert handler.envelopes[1].smtp_utf8 is True
    assert "SMTPUTF8" in handler.envelopes[1].mail_options


async def test_swaks_roundtrip() -> None:
    swaks = require_peer("swaks")
    handler = Recorder()
    async with serve(handler) as server:
        proc = await asyncio.create_subprocess_exec(
            swaks, "--server", "127.0.0.1", "--port", str(server.port), "--from", "a@x.org",
            "--to", "b@y.org", "--body", "from swaks", "--pipeline",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
    assert handler.messages[0][:2] == ("a@x.org", ["b@y.org"])
    assert b"from swaks" in handler.messages[0][2]


async def test_starttls_with_smtplib_and_auth(server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext) -> None:
    handler = Recorder()
    async with serve(
        handler, tls_context=server_ssl_context, require_auth=True, authenticator=aiosmtpd_style_authenticator
    ) as server:
        refused = await asyncio.to_thread(
            smtplib_send, server.port, starttls=client_ssl_context, login=("alice", "s3cret")
        )
        assert refused == {}
        with pytest.raises(smtplib.SMTPAuthenticationError):
            await asyncio.to_thread(smtplib_send, server.port, starttls=client_ssl_context, login=("alice", "bad"))
        # Without AUTH the transaction is refused.
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            await asyncio.to_thread(smtplib_send, server.port, starttls=client_ssl_context)
        assert info.value.smtp_code == 530
    assert len(handler.messages) == 1


async def test_implicit_tls_with_aiosmtplib(server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext) -> None:
    sessions: list[Any] = []

    class H:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sessions.append(session)
            return "250 OK"

    async with serve(H(), secure=True, ssl_context=server_ssl_context) as server:
        await aiosmtplib.send(
            make_message(), hostname="127.0.0.1", port=server.port, use_tls=True, tls_context=client_ssl_context
        )
    assert sessions[0].ssl["version"].startswith("TLS")
    assert sessions[0].ssl["cipher"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"])
async def test_auth_mechanisms_with_aiosmtplib(
    mechanism: str, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    sessions: list[Any] = []

    class H:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sessions.append(session)
            return "250 OK"

    async with serve(
        H(), tls_context=server_ssl_context, require_auth=True, authenticator=fastsmtp_authenticator,
        auth_methods=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"),
    ) as server:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, tls_context=client_ssl_context)
        await client.connect()  # aiosmtplib upgrades with STARTTLS by itself
        await client.ehlo()
        assert client.supports_extension("auth")
        if mechanism == "PLAIN":
            await client.auth_plain("bob", "hunter2")
        elif mechanism == "LOGIN":
            await client.auth_login("bob", "hunter2")
        elif mechanism == "CRAM-MD5":
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.auth_crammd5("bob", "wrong")
            await client.auth_crammd5("bob", "hunter2")
        else:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.auth_xoauth2("bob", "bad-token")
            await client.auth_xoauth2("bob", "token-bob")
        await client.sendmail("bob@x.org", ["c@y.org"], b"Subject: a\r\n\r\nb\r\n")
        await client.quit()
    assert sessions[0].authenticated is True


async def test_auth_plain_over_plaintext_when_allowed() -> None:
    async with serve(enable_auth=True, auth_require_tls=False, authenticator=fastsmtp_authenticator) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert b"250-AUTH PLAIN LOGIN\r\n" in ehlo
        bad = b64encode(b"\x00alice\x00nope")
        assert await client.command(b"AUTH PLAIN " + bad) == b"535 5.7.8 Authentication credentials invalid\r\n"
        assert await client.command(b"AUTH PLAIN") == b"334 \r\n"
        assert await client.command(b"*") == b"501 5.7.0 Authentication aborted\r\n"
        assert await client.command(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert await client.command(b64encode(b"alice")) == b"334 UGFzc3dvcmQ6\r\n"
        assert await client.command(b64encode(b"s3cret")) == b"235 2.7.0 Authentication successful\r\n"
        assert await client.command(b"AUTH PLAIN =") == b"503 5.5.1 Error: already authenticated\r\n"
        await client.close()


async def test_auth_brute_force_closes() -> None:
    async with serve(enable_auth=True, auth_require_tls=False, authenticator=fastsmtp_authenticator) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        bad = b"AUTH PLAIN " + b64encode(b"\x00alice\x00nope") + b"\r\n"
        await client.send(bad * 5)
        data = await client.eof()
        assert data.count(b"535 ") == 4
        assert data.endswith(b"421 4.7.0 test.local Error: too many failed AUTH attempts\r\n")
        await client.close()


class CollectingMessage(Message):
    """aiosmtpd's Message handler, subclassed as its docs describe."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    def handle_message(self, message: Any) -> None:
        self.received.append(message)


class CollectingAsyncMessage(AsyncMessage):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    async def handle_message(self, message: Any) -> None:
        await asyncio.sleep(0)
        self.received.append(message)


@pytest.mark.parametrize("handler_class", [CollectingMessage, CollectingAsyncMessage])
async def test_aiosmtpd_message_handlers(handler_class: type) -> None:
    handler = handler_class()
    async with serve(handler) as server:
        await asyncio.to_thread(smtplib_send, server.port)
    message = handler.received[0]
    assert message["Subject"] == "test"
    assert message["X-MailFrom"] == "a@example.org"
    assert message["X-RcptTo"] == "b@example.org, c@example.org"
    assert "127.0.0.1" in message["X-Peer"]


async def test_aiosmtpd_sink_handler() -> None:
    async with serve(Sink()) as server:
        assert await asyncio.to_thread(smtplib_send, server.port) == {}


async def test_aiosmtpd_style_hooks_validate_sender_and_recipient() -> None:
    """handle_MAIL / handle_RCPT are the seed's validateSender / validateRecipient."""

    class Validating:
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
            session.host_name = hostname
            return responses[:-1] + ["250-X-CUSTOM", responses[-1]]

        async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            if address.endswith("@spam.example"):
                return "550 5.7.1 Sender rejected"
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 OK"

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            if not address.endswith("@example.org"):
                return "550 5.1.1 No such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return f"250 OK {len(envelope.rcpt_tos)} {session.host_name}"

    async with serve(Validating()) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO client.example")
        assert b"250-X-CUSTOM\r\n250 HELP\r\n" in ehlo
        assert await client.command(b"MAIL FROM:<x@spam.example>") == b"550 5.7.1 Sender rejected\r\n"
        assert await client.command(b"RCPT TO:<b@example.org>") == b"503 5.5.1 Error: need MAIL command\r\n"
        assert await client.command(b"MAIL FROM:<a@ok.example>") == b"250 OK\r\n"
        assert await client.command(b"RCPT TO:<nobody@other.org>") == b"550 5.1.1 No such user\r\n"
        assert await client.command(b"DATA") == b"503 5.5.1 Error: need RCPT command\r\n"
        assert await client.command(b"RCPT TO:<b@example.org>") == b"250 OK\r\n"
        assert await client.command(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
        assert await client.command(b"x\r\n.") == b"250 OK 1 client.example\r\n"
        await client.close()


async def test_lmtp_one_reply_per_recipient() -> None:
    class PerRecipient:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> list[str]:
            return ["250 2.0.0 delivered" if "ok" in r else "550 5.1.1 no mailbox" for r in envelope.rcpt_tos]

    async with serve(PerRecipient(), lmtp=True) as server:
        # (smtplib.LMTP reads a single reply after DATA, so a scripted client checks it.)
        client = await greeted(server.port)
        await client.send(b"LHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<ok1@y>\r\nRCPT TO:<bad@y>\r\n")
        await client.send(b"RCPT TO:<ok2@y>\r\nDATA\r\nSubject: l\r\n\r\nx\r\n.\r\n")
        replies = [await client.reply() for _ in range(9)]
        assert replies[-3:] == [
            b"250 2.0.0 delivered\r\n", b"550 5.1.1 no mailbox\r\n", b"250 2.0.0 delivered\r\n"
        ]
        assert await client.command(b"MAIL FROM:<a@x>") == b"250 2.1.0 OK\r\n"
        assert await client.command(b"RCPT TO:<ok@y>") == b"250 2.1.5 OK\r\n"
        await client.close()
        client = await greeted(server.port)
        assert await client.command(b"EHLO me") == b'500 5.5.2 Error: command "EHLO" not recognized\r\n'
        await client.close()


async def test_streaming_handler_receives_chunks_intact() -> None:
    class Streaming:
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0
            self.chunks = 0
            self.calls: list[str] = []

        async def start_data(self, session: Any, envelope: Any) -> None:
            self.calls.append("start")

        async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
            self.digest.update(chunk)
            self.size += len(chunk)
            self.chunks += 1
            await asyncio.sleep(0)

        async def data_ready(self, session: Any, envelope: Any) -> str:
            self.calls.append("ready")
            assert envelope.content is None  # never buffered
            return f"250 2.0.0 OK {self.size}"

    handler = Streaming()
    line = b"0123456789" * 7 + b"\r\n"
    body = line * (8 * 1024 * 1024 // len(line))  # 8 MiB
    async with serve(handler, max_size=0) as server:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=60)
        await client.connect()
        _, reply = await client.sendmail("a@x", ["b@y"], body)
        await client.quit()
    assert reply == f"2.0.0 OK {len(body)}"
    assert handler.digest.hexdigest() == hashlib.sha256(body).hexdigest()
    assert handler.calls == ["start", "ready"]
    assert handler.chunks > 1  # handed over as it arrived, not as one message


async def _sock_until(loop: asyncio.AbstractEventLoop, sock: socket.socket, end: bytes) -> bytes:
    """Read from a raw non-blocking socket until the data ends with ``end`` (bounded)."""
    data = b""
    while not data.endswith(end):
        part = await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT)
        assert part, data
        data += part
    return data


async def test_streaming_backpressure_stops_reading_while_data_chunk_blocks() -> None:
    release = asyncio.Event()

    class Blocking:
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0
            self.chunks = 0

        async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
            self.digest.update(chunk)
            self.size += len(chunk)
            self.chunks += 1
            if self.chunks == 1:
                await release.wait()  # a sink that cannot keep up (a full disk queue)

        async def data_ready(self, session: Any, envelope: Any) -> str:
            return f"250 2.0.0 OK {self.size}"

    handler = Blocking()
    line = b"0123456789" * 7 + b"\r\n"
    body = line * (32 * 1024 * 1024 // len(line))  # 32 MiB
    payload = memoryview(body + b".\r\n")
    loop = asyncio.get_running_loop()
    async with serve(handler, max_size=0) as server:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", server.port)), WAIT)
            assert (await _sock_until(loop, sock, b"\r\n")).startswith(b"220 ")
            await loop.sock_sendall(sock, b"HELO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
            replies = await _sock_until(loop, sock, b"354 End data with <CR><LF>.<CR><LF>\r\n")
            assert replies == b"250 test.local\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n" + R_354
            (protocol,) = server._connections
            # Send without blocking until the kernel refuses; between refusals the loop
            # runs (the server reads if it still reads). 50 refusals in a row with
            # nothing accepted in between: the client is stalled. (Bounded: at most
            # 512 accepted sends of 64 KiB and 5,000 short sleeps.)
            sent = refusals = 0
            for _ in range(6000):
                try:
                    sent += sock.send(payload[sent : sent + 65536])
                    refusals = 0
                except BlockingIOError:
                    refusals += 1
                    if refusals >= 50 and handler.chunks == 1:
                        break
                    await asyncio.sleep(0.002)
                assert sent < len(payload), "the whole message was sent while data_chunk blocked"
            assert refusals >= 50, "the client never stalled"
            # While the first chunk is being consumed: nothing more is read or handed over.
            assert handler.chunks == 1
            assert not protocol.transport.is_reading()
            assert protocol._reader.buffered < 1024 * 1024
            assert sent < len(payload) // 2
            release.set()
            await asyncio.wait_for(loop.sock_sendall(sock, payload[sent:]), 60)
            assert await _sock_until(loop, sock, b"\r\n") == f"250 2.0.0 OK {len(body)}\r\n".encode()
            await loop.sock_sendall(sock, b"QUIT\r\n")
            assert await _sock_until(loop, sock, b"\r\n") == b"221 2.0.0 Bye\r\n"
        finally:
            sock.close()
    assert handler.size == len(body)
    assert handler.digest.hexdigest() == hashlib.sha256(body).hexdigest()


async def test_streaming_start_data_may_refuse() -> None:
    class Refusing:
        async def start_data(self, session: Any, envelope: Any) -> str:
            return "452 4.3.1 Insufficient storage"

        async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
            raise AssertionError("not reached")

        async def data_ready(self, session: Any, envelope: Any) -> str:
            raise AssertionError("not reached")

    async with serve(Refusing()) as server:
        client = await greeted(server.port)
        await client.send(b"HELO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        await client.expect(b"250 test.local\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n452 4.3.1 Insufficient storage\r\n")
        await client.close()


async def test_misc_commands() -> None:
    async with serve(hidden_commands=["VRFY"], disabled_commands=["EXPN", "HELP"]) as server:
        client = await greeted(server.port)
        assert await client.command(b"HELO") == b"501 5.5.4 Syntax: HELO hostname\r\n"
        assert await client.command(b"HELO me") == b"250 test.local\r\n"
        assert await client.command(b"VRFY someone") == (
            b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        )
        assert await client.command(b"EXPN list") == b"502 5.5.1 Error: command not implemented\r\n"
        assert await client.command(b"HELP") == b"502 5.5.1 Error: command not implemented\r\n"
        assert await client.command(b"MAIL FROM:<a@x> SIZE=10") == (
            b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]\r\n"
        )  # no parameters after HELO
        assert await client.command(b"MAIL FROM:<>") == b"250 2.1.0 OK\r\n"
        assert await client.command(b"MAIL FROM:<a@x>") == b"503 5.5.1 Error: nested MAIL command\r\n"
        assert await client.command(b"RCPT TO:<>") == b"501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"
        assert await client.command(b"RCPT TO:<b@y> NOTIFY=NEVER") == (
            b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"
        )
        assert await client.command(b"RCPT TO:<\xc3\xbc@y>") == b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n"
        assert await client.command(b"QUIT") == b"221 2.0.0 Bye\r\n"
        await client.close()
    async with serve(disable_ehlo=True) as server:
        client = await greeted(server.port)
        assert await client.command(b"EHLO me") == b"502 5.5.1 Error: command not implemented\r\n"
        help_reply = await client.command(b"HELP")
        assert help_reply.startswith(b"214 2.0.0 Supported commands: HELO EHLO MAIL")
        await client.close()


async def test_sync_hooks_and_quit_hook() -> None:
    class SyncHooks:
        def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
            return f"250 noop {arg}"

        def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
            return "221 see you"

        def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 bad\r\n250 injected" if envelope.content == b"inject\r\n" else "not a reply"

    async with serve(SyncHooks()) as server:
        client = await greeted(server.port)
        assert await client.command(b"NOOP hi") == b"250 noop hi\r\n"
        await client.send(b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nz\r\n.\r\n")
        await client.expect(
            b"250 test.local\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            b"451 4.3.0 Error: local error in processing\r\n"
        )
        await client.send(b"QUIT\r\n")
        assert await client.eof() == b"221 see you\r\n"
        await client.close()


def test_threaded_runner_with_smtplib() -> None:
    handler = Recorder()
    with SMTPServerThread(handler, name="test.local") as runner:
        assert runner.port > 0
        with smtplib.SMTP(runner.hostname, runner.port, timeout=WAIT) as client:
            client.sendmail("a@x", ["b@y"], b"Subject: t\r\n\r\nthreaded\r\n")
    assert handler.messages == [("a@x", ["b@y"], b"Subject: t\r\n\r\nthreaded\r\n")]
    # Stopped: the port no longer accepts.
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", runner.port, timeout=2)


def test_threaded_runner_reports_bind_errors() -> None:
    with SMTPServerThread(Recorder()) as first:
        second = SMTPServerThread(Recorder(), port=first.port)
        with pytest.raises(OSError):
            second.start()


def test_option_validation() -> None:
    with pytest.raises(ValueError):
        SMTPServer(Sink(), secure=True)
    with pytest.raises(ValueError):
        SMTPServer(Sink(), auth_methods=["GSSAPI"])
    with pytest.raises(ValueError):
        SMTPServer(Sink(), bare_newline="ignore")
    with pytest.raises(ValueError):
        SMTPServer(Sink(), require_tls=True)
