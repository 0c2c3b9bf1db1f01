"""SMTPConnection against a real aiosmtpd server on 127.0.0.1 (both event loops)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

import fastsmtp
from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import (
    SMTPAuthError,
    SMTPEnvelopeError,
    SMTPRecipientsRefused,
    SMTPTLSError,
)
from fastsmtp.message import Envelope

USER, PASSWORD = "alice", "s3cret pässword"


class Handler:
    """Records every message; refuses recipients whose local part starts with 'bad'."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.commands: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address.startswith("bad"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content),
             list(envelope.mail_options), session.ssl is not None)
        )
        return "250 2.0.0 queued"


def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@contextlib.asynccontextmanager
async def aiosmtpd_server(
    *, tls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[int, Handler]]:
    """Run aiosmtpd's SMTP protocol on this loop, on 127.0.0.1 and a free port."""
    handler = Handler()
    loop = asyncio.get_running_loop()
    kwargs.setdefault("hostname", "aiosmtpd.test")
    server = await loop.create_server(
        lambda: SMTP(handler, tls_context=tls, loop=loop, **kwargs),
        "127.0.0.1", 0, ssl=implicit,
    )
    try:
        yield server.sockets[0].getsockname()[1], handler
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n"
    b"line one\n.leading dot\r\nlast line without newline"
)
# What the server stores: CRLF everywhere, the dot unstuffed, a CRLF added at the end.
STORED = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n"
    b"line one\r\n.leading dot\r\nlast line without newline\r\n"
)


def conn_for(port: int, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    return SMTPConnection("127.0.0.1", port, **kwargs)


async def test_send_plaintext() -> None:
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            assert not conn.secure
            assert conn.capabilities.size is not None
            assert conn.is_usable
            result = await conn.send(MESSAGE, Envelope("a@example.com", ["b@example.com"]))
            assert result.accepted == ["b@example.com"]
            assert result.rejected == []
            assert result.response.code == 250
            assert result.size == len(STORED) + 4  # "..leading" and ".\r\n" terminator
            assert conn.messages_sent == 1
            assert conn.last_used > 0
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    assert handler.messages == [
        ("a@example.com", ["b@example.com"], STORED, ["SIZE=" + str(len(STORED))], False)
    ]


async def test_starttls_and_auth(server_ssl_context, client_ssl_context) -> None:
    async with aiosmtpd_server(
        tls=server_ssl_context, authenticator=authenticator, auth_require_tls=True
    ) as (port, handler):
        async with conn_for(port, tls=client_ssl_context, require_tls=True) as conn:
            assert conn.secure
            assert {"PLAIN", "LOGIN"} <= conn.capabilities.auth
            assert not conn.capabilities.starttls  # from the EHLO after TLS
            reply = await conn.login(user=USER, password=PASSWORD)
            assert reply.code == 235
            await conn.send(b"x\r\n", Envelope("a@example.com", "b@example.com"))
    assert handler.messages[0][4] is True


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_auth_methods_and_failure(server_ssl_context, client_ssl_context, method) -> None:
    async with aiosmtpd_server(
        tls=server_ssl_context, authenticator=authenticator, auth_require_tls=True
    ) as (port, _):
        async with conn_for(port, tls=client_ssl_context, auth_method=method) as conn:
            with pytest.raises(SMTPAuthError) as info:
                await conn.login(user=USER, password="wrong")
            assert info.value.response_code == 535
            assert conn.is_usable  # a refused login leaves the connection usable
            assert (await conn.login(user=USER, password=PASSWORD)).code == 235


async def test_plaintext_auth_refused_locally() -> None:
    async with aiosmtpd_server(authenticator=authenticator, auth_require_tls=False) as (port, _):
        async with conn_for(port) as conn:
            with pytest.raises(SMTPAuthError, match="plaintext"):
                await conn.login(user=USER, password=PASSWORD)
        async with conn_for(port, allow_plaintext_auth=True) as conn:
            assert (await conn.login(user=USER, password=PASSWORD)).code == 235


async def test_implicit_tls(server_ssl_context, client_ssl_context) -> None:
    async with aiosmtpd_server(implicit=server_ssl_context) as (port, handler):
        async with conn_for(port, secure=True, tls=client_ssl_context) as conn:
            assert conn.secure
            await conn.send("héllo\n", Envelope("a@example.com", "b@example.com"))
    assert handler.messages[0][2] == "héllo\r\n".encode()


async def test_certificate_verified_by_default(server_ssl_context) -> None:
    async with aiosmtpd_server(tls=server_ssl_context) as (port, handler):
        conn = conn_for(port)  # the system CAs do not trust the test CA
        with pytest.raises(SMTPTLSError):
            await conn.connect()
        assert not conn.is_usable
    assert handler.messages == []


@pytest.mark.parametrize("tls", [{"rejectUnauthorized": False}, {"reject_unauthorized": "false"}])
async def test_reject_unauthorized_false_accepts_an_untrusted_certificate(
    server_ssl_context, tls
) -> None:
    # nodemailer's tls.rejectUnauthorized=false (as a pool URL passes it, text included).
    async with aiosmtpd_server(implicit=server_ssl_context) as (port, handler):
        async with conn_for(port, secure=True, tls=tls) as conn:
            assert conn.secure
            await conn.send(b"hi\r\n", Envelope("a@example.com", "b@example.com"))
    assert handler.messages[0][2] == b"hi\r\n"


async def test_require_tls_without_starttls() -> None:
    async with aiosmtpd_server() as (port, handler):
        conn = conn_for(port, require_tls=True)
        with pytest.raises(SMTPTLSError, match="STARTTLS"):
            await conn.connect()
        assert not conn.is_usable


async def test_partial_and_all_recipients_refused() -> None:
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            result = await conn.send(
                b"hi\r\n", Envelope("a@example.com", ["bad1@example.com", "ok@example.com"])
            )
            assert result.accepted == ["ok@example.com"]
            assert result.rejected == ["bad1@example.com"]
            assert result.rejected_errors[0].response_code == 550
            with pytest.raises(SMTPRecipientsRefused) as info:
                await conn.send(b"x", Envelope("a@example.com", ["bad2@x.org", "bad3@x.org"]))
            assert info.value.rejected == ["bad2@x.org", "bad3@x.org"]
            assert conn.is_usable
            await conn.send(b"again\r\n", Envelope("a@example.com", ["ok2@example.com"]))
    assert [m[1] for m in handler.messages] == [["ok@example.com"], ["ok2@example.com"]]


async def test_email_message_envelope_and_bcc() -> None:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "Bob <bob@example.com>, carol@example.com"
    msg["Cc"] = "dave@example.com"
    msg["Bcc"] = "eve@example.com"
    msg["Subject"] = "hello"
    msg.set_content("body\n.dot line\n")
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            await conn.send(msg)
    mail_from, rcpts, data, _, _ = handler.messages[0]
    assert mail_from == "alice@example.com"
    assert rcpts == ["bob@example.com", "carol@example.com", "dave@example.com",
                     "eve@example.com"]
    assert b"Bcc" not in data and b"eve@" not in data
    assert b"\r\n.dot line\r\n" in data
    assert msg["Bcc"] == "eve@example.com"  # the caller's message is untouched


async def test_bytes_without_envelope_is_a_type_error_naming_the_fix() -> None:
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            with pytest.raises(TypeError, match=r"envelope=Envelope\(mail_from, rcpt_to\)"):
                await conn.send(b"no headers to read\r\n")
            assert conn.is_usable  # nothing was written
            await conn.send(b"x\r\n", Envelope("a@example.com", "b@example.com"))
    assert len(handler.messages) == 1


async def test_fastsmtp_send_connects_sends_and_quits() -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "one-liner"
    msg.set_content("hello\n")
    async with aiosmtpd_server() as (port, handler):
        result = await fastsmtp.send(msg, host="127.0.0.1", port=port, ignore_tls=True,
                                     name="client.test")
        raw = b"x\r\n"
        second = await fastsmtp.send(raw, Envelope("c@example.com", ["d@example.com"]),
                                     host="127.0.0.1", port=port, ignore_tls=True)
        with pytest.raises(TypeError, match="envelope="):
            await fastsmtp.send(raw, host="127.0.0.1", port=port, ignore_tls=True)
        with pytest.raises(TypeError, match="password="):
            await fastsmtp.send(raw, Envelope("c@example.com", ["d@example.com"]),
                                host="127.0.0.1", port=port, user="alice")
    assert result.accepted == ["bob@example.com"] and second.accepted == ["d@example.com"]
    assert [m[0] for m in handler.messages] == ["alice@example.com", "c@example.com"]


async def test_stream_sources() -> None:
    body = b"".join(b"line %d\n" % i for i in range(20000)) + b".\n"
    expected = body.replace(b"\n", b"\r\n")

    async def agen() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    sources = [agen(), io.BytesIO(body), [body[:7], body[7:]], body.decode()]
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            for source in sources:
                result = await conn.send(source, Envelope("a@example.com", "b@example.com"))
                assert result.size == len(expected) + 1 + 3  # stuffed "." and ".\r\n"
    assert [m[2] for m in handler.messages] == [expected] * len(sources)


async def test_smtputf8() -> None:
    async with aiosmtpd_server(enable_SMTPUTF8=True) as (port, handler):
        async with conn_for(port) as conn:
            await conn.send(b"x\r\n", Envelope("jösé@exämple.com", "bö@example.com"))
    assert handler.messages[0][0] == "jösé@exämple.com"
    assert "SMTPUTF8" in handler.messages[0][3]
    async with aiosmtpd_server(enable_SMTPUTF8=False) as (port, handler):
        async with conn_for(port) as conn:
            with pytest.raises(SMTPEnvelopeError, match="SMTPUTF8"):
                await conn.send(b"x\r\n", Envelope("a@example.com", "bö@example.com"))
            assert conn.is_usable


async def test_send_many_without_pipelining() -> None:
    async with aiosmtpd_server() as (port, handler):
        async with conn_for(port) as conn:
            assert not conn.capabilities.pipelining
            items = [(b"m%d\r\n" % i, Envelope("a@example.com", f"r{i}@example.com"))
                     for i in range(10)] + [(b"no", Envelope("a@example.com", "bad@x.org"))]
            pairs = [pair async for pair in conn.send_many(items)]
            assert [item for item, _ in pairs] == items  # every item, in order
            results = [outcome for _, outcome in pairs]
            assert conn.messages_sent == 10
    assert [m[2] for m in handler.messages] == [b"m%d\r\n" % i for i in range(10)]
    assert isinstance(results[-1], SMTPRecipientsRefused)


async def test_reset_noop_and_debug_log_masks_secrets(
    server_ssl_context, client_ssl_context, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp.connection")
    async with aiosmtpd_server(
        tls=server_ssl_context, authenticator=authenticator, auth_require_tls=True
    ) as (port, _):
        async with conn_for(port, tls=client_ssl_context, debug=True,
                            auth_method="PLAIN") as conn:
            await conn.login(user=USER, password=PASSWORD)
            assert (await conn.noop()).code == 250
            assert (await conn.reset()).code == 250
    text = caplog.text
    assert "C: EHLO client.test" in text and "C: NOOP" in text and "S: 250" in text
    assert "C: AUTH PLAIN ****" in text
    import base64
    secret = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert secret not in text and PASSWORD not in text
