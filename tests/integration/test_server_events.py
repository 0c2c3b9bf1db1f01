"""The seed's server events and options without an aiosmtpd twin: ``close`` and ``debug``."""

from __future__ import annotations

import asyncio
import logging
from base64 import b64encode
from typing import Any

import pytest
from support.server import Recorder, greeted, serve, wait_until
from support.wait import settle

from fastsmtp.server.auth import AuthResult
from fastsmtp.server import SMTPServer

TRANSACTION = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"
PASSWORD = "pa55-w0rd-s3cret"
TOKEN = "ya29.oauth-token-s3cret"


class Closing:
    """Records ``handle_CLOSE`` (sync or async) and, streaming, ``data_abort``."""

    def __init__(self, use_async: bool, fail: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.use_async = use_async
        self.fail = fail

    def _closed(self, session: Any, envelope: Any) -> None:
        self.events.append(("close", (session.host_name, envelope.mail_from)))
        if self.fail:
            raise RuntimeError("close hook broke")

    def handle_CLOSE(self, server: Any, session: Any, envelope: Any) -> Any:
        if not self.use_async:
            return self._closed(session, envelope)

        async def later() -> None:
            await asyncio.sleep(0.01)
            self._closed(session, envelope)

        return later()

    async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
        pass

    async def data_ready(self, session: Any, envelope: Any) -> str:
        return "250 2.0.0 stored"

    async def data_abort(self, session: Any, envelope: Any) -> None:
        await asyncio.sleep(0.01)  # the close hook must still come after it
        self.events.append(("abort", envelope.mail_from))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_close_hook_called_once_per_connection(use_async: bool) -> None:
    handler = Closing(use_async)
    server = SMTPServer(handler, name="test.local")
    await server.start()
    try:
        # 1. QUIT after a delivered message: once, with the session, an empty envelope.
        client = await greeted(server.port)
        await client.send(b"HELO one\r\n" + TRANSACTION + b"x\r\n.\r\nQUIT\r\n")
        await client.eof()
        await client.close()
        await wait_until(lambda: len(handler.events) == 1)
        assert handler.events == [("close", ("one", None))]
        # 2. The client vanishes in the middle of a message: data_abort, then close.
        client = await greeted(server.port)
        await client.send(b"HELO two\r\n" + TRANSACTION + b"partial")
        await client.expect(b"250 test.local\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n")
        await client.reply()  # 354
        await client.close()
        await wait_until(lambda: len(handler.events) == 3)
        assert handler.events[1:] == [("abort", "a@x.org"), ("close", ("two", None))]
        # 3. The server shuts down: the close hook has run when close() returns.
        client = await greeted(server.port)
        await client.command(b"HELO three")
        await client.send(b"MAIL FROM:<c@x.org>\r\n")
        await client.reply()
    finally:
        await server.close(timeout=0.2)
    await client.close()
    assert handler.events[3:] == [("close", ("three", "c@x.org"))]
    await settle()  # every hook the server started has finished
    assert len(handler.events) == 4  # never twice


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_close_hook_failure_is_logged_not_raised(use_async: bool, caplog: Any) -> None:
    handler = Closing(use_async, fail=True)
    caplog.set_level(logging.ERROR, logger="fastsmtp.server")
    async with serve(handler) as server:
        for n in range(2):
            client = await greeted(server.port)
            assert await client.command(b"HELO me") == b"250 test.local\r\n"
            assert await client.command(b"QUIT") == b"221 2.0.0 Bye\r\n"
            await client.close()
            await wait_until(lambda: len(handler.events) == n + 1)  # noqa: B023 - n is current
        logged = lambda: [r for r in caplog.records if r.getMessage().startswith("handle_CLOSE")]  # noqa: E731
        await wait_until(lambda: len(logged()) == 2)
        assert all(str(r.exc_info[1]) == "close hook broke" for r in logged())
        assert server.connections == 0


async def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    if mechanism == "XOAUTH2":
        return AuthResult(success=data.token.decode() == TOKEN)
    return AuthResult(success=data.password.decode() == PASSWORD)


async def auth_traffic(port: int) -> None:
    """Log in with PLAIN (initial response), LOGIN (two SASL lines) and XOAUTH2; send a message."""
    plain = b64encode(f"\0alice\0{PASSWORD}".encode())
    client = await greeted(port)
    await client.command(b"EHLO me")
    assert (await client.command(b"AUTH PLAIN " + plain)).startswith(b"235 ")
    await client.send(TRANSACTION + b"Subject: hello\r\n\r\nbody text\r\n.\r\nQUIT\r\n")
    await client.eof()
    await client.close()
    client = await greeted(port)
    await client.command(b"EHLO me")
    assert (await client.command(b"auth login")).startswith(b"334 ")
    assert (await client.command(b64encode(b"alice"))).startswith(b"334 ")
    assert (await client.command(b64encode(PASSWORD.encode()))).startswith(b"235 ")
    await client.close()
    client = await greeted(port)
    await client.command(b"EHLO me")
    xoauth2 = b64encode(f"user=alice\x01auth=Bearer {TOKEN}\x01\x01".encode())
    assert (await client.command(b"AUTH XOAUTH2 " + xoauth2)).startswith(b"235 ")
    # A confused client putting its secret where the mechanism goes.
    assert (await client.command(b"AUTH " + plain)).startswith(b"503 ")
    await client.close()


def secrets() -> list[str]:
    plain = b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    xoauth2 = b64encode(f"user=alice\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode()
    return [PASSWORD, TOKEN, plain, b64encode(PASSWORD.encode()).decode(), xoauth2]


async def test_debug_logs_traffic_with_auth_masked(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp.server")
    options = {"enable_auth": True, "auth_require_tls": False, "authenticator": authenticate}
    async with serve(Recorder(), debug=True, auth_methods=["PLAIN", "LOGIN", "XOAUTH2"], **options) as server:
        await auth_traffic(server.port)
        await wait_until(lambda: caplog.text.count(" closed") >= 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastsmtp.server"]
    text = "\n".join(lines)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if " >> " in r.getMessage())
    assert ">> b'MAIL FROM:<a@x.org>'" in text
    assert "<< b'250 2.1.0 OK\\r\\n" in text
    assert ">> b'AUTH PLAIN <hidden>'" in text
    assert ">> b'auth login'" in text
    assert ">> b'AUTH XOAUTH2 <hidden>'" in text
    assert ">> b'AUTH <hidden>'" in text
    assert text.count(">> b'<hidden>'") == 2  # LOGIN's user name and password lines
    assert "<22 bytes of message data>" in text or "bytes of message data" in text
    assert "body text" not in text  # message data: its size only
    assert " connected" in text
    for secret in secrets():
        assert secret not in caplog.text, secret


async def test_without_debug_no_traffic_is_logged(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp.server")
    options = {"enable_auth": True, "auth_require_tls": False, "authenticator": authenticate}
    async with serve(Recorder(), auth_methods=["PLAIN", "LOGIN", "XOAUTH2"], **options) as server:
        await auth_traffic(server.port)
    text = caplog.text
    assert " >> " not in text and " << " not in text
    assert "a@x.org" not in text
    for secret in secrets():
        assert secret not in text, secret
