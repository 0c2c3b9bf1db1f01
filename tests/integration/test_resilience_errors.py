"""Issue 10, finding 6: errors that say what to do, against our server and scripted ones."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
from typing import Any

import pytest

from fastsmtp.cli.serve import UsersAuthenticator
from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPInvalidAuth, SMTPTLSError
from fastsmtp.message import Envelope

from support.env import child_env
from support.peer import raw_server
from support.server import serve

ENV = Envelope("a@x.test", ["b@x.test"])


async def test_plain_smtp_to_an_implicit_tls_port_says_use_smtps(server_ssl_context: Any) -> None:
    # The TLS server waits for a ClientHello and says nothing: no waiting for the whole
    # greeting timeout, and the fix is named.
    async with serve(secure=True, ssl_context=server_ssl_context) as server:
        conn = SMTPConnection("127.0.0.1", server.port, greeting_timeout=20)
        with pytest.raises(SMTPTLSError) as info:
            await conn.connect()
    assert "this port may expect implicit TLS: use smtps:// (secure=True)" in str(info.value)


async def test_a_slow_greeter_is_not_taken_for_tls() -> None:
    # A greeting delay (anti-spam "greet pause"): the silence check finds no TLS on the
    # port, so the connection simply waits for the greeting.
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.5)  # the server's behaviour, not a synchronisation
        writer.write(b"220 slow.test ESMTP\r\n")
        try:
            if await reader.readline():  # EHLO (the probe sends a ClientHello instead)
                writer.write(b"250 slow.test\r\n")
                await reader.readline()  # QUIT
                writer.write(b"221 bye\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with raw_server(slow) as port:
        async with SMTPConnection("127.0.0.1", port, ignore_tls=True, name="c.test") as conn:
            assert conn.is_connected


async def test_smtps_to_a_plaintext_port_says_use_smtp(client_ssl_context: ssl.SSLContext) -> None:
    async with serve() as server:
        conn = SMTPConnection("127.0.0.1", server.port, secure=True, tls=client_ssl_context)
        with pytest.raises(SMTPTLSError) as info:
            await conn.connect()
    message = str(info.value)
    assert "the server speaks plain SMTP on this port: use smtp:// (STARTTLS" in message
    assert "WRONG_VERSION_NUMBER" in message or "wrong version" in message.lower()


@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_unverified_certificate_names_cafile(server_ssl_context: Any,
                                                   implicit: bool) -> None:
    options = ({"secure": True, "ssl_context": server_ssl_context} if implicit
               else {"tls_context": server_ssl_context})
    async with serve(**options) as server:
        # The trustme CA is not in the system store.
        conn = SMTPConnection("127.0.0.1", server.port, secure=implicit)
        with pytest.raises(SMTPTLSError) as info:
            await conn.connect()
    message = str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    for form in ('tls={"cafile": ', "?tls.cafile=", "fastsmtp send --cafile"):
        assert form in message


async def test_plaintext_auth_refusal_names_every_form() -> None:
    async with serve(enable_auth=True, auth_require_tls=False,
                     authenticator=UsersAuthenticator({"u": "p"})) as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True) as conn:
            with pytest.raises(SMTPInvalidAuth) as info:
                await conn.login("u", "p")
    message = str(info.value)
    assert "allow_plaintext_auth=True" in message
    assert "?allow_plaintext_auth=true" in message and "fastsmtp send --server" in message


def test_fastsmtp_logger_has_a_null_handler() -> None:
    # Without one, Python's last-resort handler prints library warnings to stderr in an
    # application that configured no logging.
    code = ("import fastsmtp, logging; "
            "logging.getLogger('fastsmtp.pool').warning('retrying soon')")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "retrying soon" not in proc.stderr
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("fastsmtp").handlers)
