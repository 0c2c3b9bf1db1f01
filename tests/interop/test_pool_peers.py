"""SMTPPool against real peers nobody here wrote (aiosmtpd, Postfix's smtp-sink), and the
pool-level hooks (get_socket, an XOAUTH2 token provider) over loopback."""

from __future__ import annotations

import asyncio
import socket

from aiosmtpd.smtp import SMTP

from fastsmtp.server.auth import AuthResult, XOAuth2Credentials
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool
from fastsmtp.server import SMTPServer

from support.env import listening_program, require_peer
from support.ports import listening_socket, refused_port

ENV = Envelope("sender@example.com", ["rcpt@example.com"])


def body(n: int) -> bytes:
    return b"Subject: %d\r\n\r\n" % n + b".leading dot line\r\n" + b"y" * 900 + b"\r\n"


class Collect:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(bytes(envelope.original_content or envelope.content))
        return "250 OK"


async def test_pool_to_aiosmtpd():
    handler = Collect()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.test", loop=loop), sock=listening_socket())
    port = server.sockets[0].getsockname()[1]
    try:
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            max_connections=4, max_messages=40) as pool:
            results = [r async for _, r in pool.send_many((body(i), ENV) for i in range(300))]
    finally:
        server.close()
        await server.wait_closed()
    assert all(not isinstance(r, Exception) and r.response.code == 250 for r in results)
    assert sorted(handler.contents) == sorted(body(i) for i in range(300))


async def test_pool_to_postfix_smtp_sink():
    sink = require_peer("smtp-sink")
    # smtp-sink takes a port number, not a socket: listening_program retries on a port
    # found in use. smtp-sink refuses to run as root without -u; never the postfix daemon.
    async with listening_program(lambda port: [sink, "-u", "nobody", f"127.0.0.1:{port}",
                                               "256"]) as port:
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            max_connections=8, max_messages=300) as pool:
            results = [r async for _, r in pool.send_many((body(i), ENV) for i in range(2000))]
    assert len(results) == 2000
    assert all(not isinstance(r, Exception) and r.response.code == 250 for r in results)


async def test_get_socket_supplies_each_connection():
    handler = Collect()
    server = SMTPServer(handler, host="127.0.0.1", port=0)
    await server.start()
    calls = []

    async def get_socket(options):
        calls.append((options.host, options.port))
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        return sock

    try:
        # The configured port refuses on purpose: only get_socket's sockets work.
        with refused_port() as port:
            async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                                get_socket=get_socket, max_connections=1,
                                max_messages=2) as pool:
                for i in range(5):
                    await pool.send(body(i), ENV)
    finally:
        await server.close()
    assert len(handler.contents) == 5
    assert len(calls) == 3  # 2 + 2 + 1 messages: three connections


async def test_xoauth2_provider_is_refreshed_once(server_ssl_context, client_ssl_context):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, XOAuth2Credentials) and auth_data.token == b"fresh"
        return AuthResult(success=ok)

    asked = []

    async def provider(user, *, refresh=False):
        asked.append((user, refresh))
        return "fresh" if refresh else "stale"

    handler = Collect()
    server = SMTPServer(handler, host="127.0.0.1", port=0, tls_context=server_ssl_context,
                        require_auth=True, auth_methods=("XOAUTH2", "PLAIN"),
                        authenticator=authenticator)
    await server.start()
    try:
        async with SMTPPool(host="127.0.0.1", port=server.port, tls=client_ssl_context,
                            require_tls=True,
                            auth={"user": "me@example.com", "xoauth2": provider}) as pool:
            result = await pool.send(body(1), ENV)
    finally:
        await server.close()
    assert result.response.code == 250
    assert asked == [("me@example.com", False), ("me@example.com", True)]


async def test_xoauth2_generator_without_user(server_ssl_context, client_ssl_context):
    # nodemailer's pool needs no auth.user with an xoauth2 generator: neither do we.
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.token))
        return AuthResult(success=auth_data.token == b"tok-1")

    async def generator(user, *, refresh=False):
        return "gen@example.com", "tok-1"

    handler = Collect()
    server = SMTPServer(handler, host="127.0.0.1", port=0, tls_context=server_ssl_context,
                        require_auth=True, auth_methods=("XOAUTH2",),
                        authenticator=authenticator)
    await server.start()
    try:
        async with SMTPPool(host="127.0.0.1", port=server.port, tls=client_ssl_context,
                            require_tls=True, auth={"xoauth2": generator}) as pool:
            result = await pool.send(body(1), ENV)
    finally:
        await server.close()
    assert result.response.code == 250
    assert logins == [(b"gen@example.com", b"tok-1")]
    assert len(handler.contents) == 1
