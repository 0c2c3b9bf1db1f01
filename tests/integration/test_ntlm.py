"""AUTH NTLM (issue 14): the client through pyspnego, against our server (pyspnego's
acceptor with a user file) and against scripted peers checking the 334 exchange.

NTLM messages (MS-NLMP 2.2.1) start with ``NTLMSSP\\0`` and a little-endian message type:
1 (negotiate, the client's initial response), 2 (challenge, the server's 334), 3
(authenticate, the client's answer, an offline-crackable response: a secret).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
import sys
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPAuthError, SMTPInvalidAuth
from fastsmtp.message import Envelope
from fastsmtp.options import ConnectionOptions
from fastsmtp.pool import SMTPPool
from fastsmtp.server import SMTPServer
from fastsmtp.server.auth import AuthResult, NTLMCredentials

from support.peer import raw_server
from support.server import Recorder, greeted, serve
from support.wait import WAIT

DOMAIN, USER, PASSWORD = "CORP", "alice", "Secret-Pa55!"
SIGNATURE = b"NTLMSSP\x00"
#: base64 of "NTLMSSP\0": the start of every NTLM message in a trace.
NTLM_B64 = base64.b64encode(SIGNATURE)[:10].decode()


@pytest.fixture
def user_file(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)
    path = tmp_path / "ntlm-users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n:bob:bob-pass\n")
    return str(path)


class AuthRecorder(Recorder):
    """Records the session's auth data with every message."""

    def __init__(self) -> None:
        super().__init__()
        self.auth_data: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.auth_data.append(session.auth_data)
        return await super().handle_DATA(server, session, envelope)


def message_type(data: bytes) -> int:
    assert data[:8] == SIGNATURE, data[:8]
    return int(struct.unpack_from("<I", data, 8)[0])


def field(data: bytes, offset: int) -> bytes:
    """An NTLM payload field: (length u16, max length u16, offset u32) at ``offset``."""
    length, _, start = struct.unpack_from("<HHI", data, offset)
    return data[start:start + length]


def av_pair(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


#: A canned type-2 challenge: Unicode, NTLM, extended session security, target info.
FLAGS = (0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00010000 | 0x00080000
         | 0x00800000 | 0x02000000 | 0x20000000 | 0x80000000)
SERVER_CHALLENGE = bytes(range(1, 9))
TARGET_INFO = (av_pair(2, DOMAIN.encode("utf-16-le")) + av_pair(1, b"M\x00X\x00")
               + av_pair(0, b""))


def canned_challenge() -> bytes:
    target = DOMAIN.encode("utf-16-le")
    header = 56  # through the 8-byte version
    return (SIGNATURE + struct.pack("<I", 2)
            + struct.pack("<HHI", len(target), len(target), header)
            + struct.pack("<I", FLAGS) + SERVER_CHALLENGE + bytes(8)
            + struct.pack("<HHI", len(TARGET_INFO), len(TARGET_INFO), header + len(target))
            + b"\x0a\x00\x63\x45\x00\x00\x00\x0f" + target + TARGET_INFO)


def conn_for(port: int, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    kwargs.setdefault("socket_timeout", 10)
    return SMTPConnection("127.0.0.1", port, **kwargs)


# -- the 334 exchange against scripted peers ---------------------------------------------


class NTLMPeer:
    """A scripted server for one NTLM login; ``challenge(type1) -> type2`` makes the 334
    and ``check(type3) -> reply`` answers the client's type 3. Records every line."""

    def __init__(self, challenge: Any, check: Any) -> None:
        self.challenge = challenge
        self.check = check
        self.lines: list[bytes] = []
        self.done = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def line() -> bytes:
            got = await asyncio.wait_for(reader.readline(), WAIT)
            self.lines.append(got)
            return got

        try:
            writer.write(b"220 peer.test ESMTP\r\n")
            assert await line() == b"EHLO client.test\r\n"
            writer.write(b"250-peer.test\r\n250 AUTH NTLM PLAIN\r\n")
            auth = await line()
            assert auth.startswith(b"AUTH NTLM ") and auth.endswith(b"\r\n")
            type1 = base64.b64decode(auth[10:-2], validate=True)
            writer.write(b"334 " + base64.b64encode(self.challenge(type1)) + b"\r\n")
            answer = await line()
            assert answer.endswith(b"\r\n") and b" " not in answer
            writer.write(self.check(base64.b64decode(answer[:-2], validate=True)))
            assert await line() == b"QUIT\r\n"
            writer.write(b"221 bye\r\n")
            await writer.drain()
        finally:
            self.done.set()
            writer.close()


async def test_ntlm_exchange_with_a_canned_challenge() -> None:
    type1s: list[bytes] = []
    type3s: list[bytes] = []

    def challenge(type1: bytes) -> bytes:
        type1s.append(type1)
        return canned_challenge()

    def check(type3: bytes) -> bytes:
        type3s.append(type3)
        return b"235 2.7.0 Authentication successful\r\n"

    peer = NTLMPeer(challenge, check)
    async with raw_server(peer) as port:
        async with conn_for(port, allow_plaintext_auth=True, auth_method="NTLM") as conn:
            reply = await conn.login(f"{DOMAIN}\\{USER}", PASSWORD)
            assert reply.code == 235 and conn.authenticated
        await asyncio.wait_for(peer.done.wait(), WAIT)
    # Type 1: negotiate, asking for Unicode (0x1), NTLM (0x200) and a target (0x4).
    (type1,) = type1s
    assert message_type(type1) == 1
    flags = struct.unpack_from("<I", type1, 12)[0]
    assert flags & 0x1 and flags & 0x200 and flags & 0x4
    # Type 3: authenticate, for our domain and user, with an NTLMv2 response whose blob
    # (after the 16-byte proof) carries the server's target info back.
    (type3,) = type3s
    assert message_type(type3) == 3
    assert field(type3, 28).decode("utf-16-le") == DOMAIN
    assert field(type3, 36).decode("utf-16-le") == USER
    nt = field(type3, 20)
    assert len(nt) > 24 and nt[16:18] == b"\x01\x01"
    assert av_pair(2, DOMAIN.encode("utf-16-le")) in nt
    assert PASSWORD.encode("utf-16-le") not in type3 and PASSWORD.encode() not in type3


async def test_ntlm_exchange_verified_by_pyspnego_acceptor(user_file, monkeypatch) -> None:
    # The same exchange, the challenge made and the answer checked by pyspnego's own
    # acceptor (as a real server would); the domain comes from the ``domain`` option.
    import spnego

    monkeypatch.setenv("NTLM_USER_FILE", user_file)
    acceptor = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)

    def check(type3: bytes) -> bytes:
        assert message_type(type3) == 3
        acceptor.step(type3)  # raises on a bad response
        assert acceptor.complete and acceptor.client_principal == f"{DOMAIN}\\{USER}"
        return b"235 ok\r\n"

    def challenge(type1: bytes) -> bytes:
        type2 = acceptor.step(type1)
        assert message_type(type2) == 2
        return type2

    peer = NTLMPeer(challenge, check)
    async with raw_server(peer) as port:
        async with conn_for(port, allow_plaintext_auth=True, domain=DOMAIN) as conn:
            assert (await conn.login(USER, PASSWORD, mechanism="ntlm")).code == 235
        await asyncio.wait_for(peer.done.wait(), WAIT)
    assert len(peer.lines) == 4


async def test_ntlm_debug_trace_hides_password_and_messages(caplog) -> None:
    # Every logger, pyspnego's included: no password, no type 3 (nor 1 or 2).
    caplog.set_level(logging.DEBUG)

    def check(type3: bytes) -> bytes:
        return b"235 ok\r\n"

    peer = NTLMPeer(lambda type1: canned_challenge(), check)
    async with raw_server(peer) as port:
        async with conn_for(port, allow_plaintext_auth=True, debug=True) as conn:
            await conn.login(f"{DOMAIN}\\{USER}", PASSWORD, mechanism="NTLM")
        await asyncio.wait_for(peer.done.wait(), WAIT)
    answer = peer.lines[2][:-2].decode()  # the base64 type 3
    messages = [r.getMessage() for r in caplog.records]
    assert "C: AUTH NTLM ****" in messages and "S: 334 ****" in messages
    for message in messages:
        assert PASSWORD not in message and answer not in message, message
        assert answer[20:60] not in message and NTLM_B64 not in message, message


# -- client against our server -----------------------------------------------------------


async def test_client_against_server_good_and_bad_credentials(
    user_file, server_ssl_context, client_ssl_context
) -> None:
    handler = AuthRecorder()
    async with serve(handler, tls_context=server_ssl_context, require_auth=True,
                     auth_methods=("NTLM",), ntlm_user_file=user_file) as server:
        async with conn_for(server.port, tls=client_ssl_context, auth_method="NTLM") as conn:
            assert conn.capabilities.auth == frozenset({"NTLM"})
            for user, password in [(f"{DOMAIN}\\{USER}", "wrong"), ("CORP\\mallory", PASSWORD),
                                   (f"OTHER\\{USER}", PASSWORD)]:
                with pytest.raises(SMTPAuthError) as info:
                    await conn.login(user, password)
                assert info.value.response_code == 535
                assert conn.is_usable and not conn.authenticated
            assert (await conn.login(f"{DOMAIN}\\{USER}", PASSWORD)).code == 235
            await conn.send(b"Subject: x\r\n\r\nhi\r\n", Envelope("a@x.test", "b@x.test"))
        # The user@domain form and a user without a domain (":bob:" in the file).
        async with conn_for(server.port, tls=client_ssl_context) as conn:
            assert (await conn.login("bob", "bob-pass", mechanism="NTLM")).code == 235
            await conn.send(b"Subject: y\r\n\r\nhi\r\n", Envelope("a@x.test", "b@x.test"))
    assert handler.auth_data == [NTLMCredentials(b"CORP\\alice"), NTLMCredentials(b"bob")]
    assert "NTLM_USER_FILE" not in os.environ  # set only around each step, then restored


async def test_authenticator_decides_authorisation_of_verified_ntlm(
    user_file, server_ssl_context, client_ssl_context
) -> None:
    seen: list[tuple[str, Any]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        seen.append((mechanism, data))
        return AuthResult(success=data.login != b"bob")

    async with serve(tls_context=server_ssl_context, auth_methods=("NTLM", "PLAIN"),
                     enable_auth=True, ntlm_user_file=user_file,
                     authenticator=authenticator) as server:
        async with conn_for(server.port, tls=client_ssl_context) as conn:
            with pytest.raises(SMTPAuthError):
                await conn.login("bob", "bob-pass", mechanism="NTLM")
            assert (await conn.login(USER, PASSWORD, mechanism="NTLM", domain=DOMAIN)).code == 235
    assert seen == [("NTLM", NTLMCredentials(b"bob")), ("NTLM", NTLMCredentials(b"CORP\\alice"))]


async def test_server_ntlm_without_initial_response(
    user_file, server_ssl_context, client_ssl_context
) -> None:
    # Windows clients send a bare "AUTH NTLM" and the type 1 after "334 ".
    import spnego

    client_ctx = client_ssl_context
    async with serve(tls_context=server_ssl_context, enable_auth=True,
                     auth_methods=("NTLM",), ntlm_user_file=user_file) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO c.test")
        assert (await client.command(b"STARTTLS")).startswith(b"220")
        await client.start_tls(client_ctx)
        assert b"AUTH NTLM" in await client.command(b"EHLO c.test")
        assert await client.command(b"AUTH NTLM") == b"334 \r\n"
        ntlm = spnego.client(f"{DOMAIN}\\{USER}", PASSWORD, protocol="ntlm",
                             options=spnego.NegotiateOptions.use_ntlm)
        reply = await client.command(base64.b64encode(ntlm.step()))
        assert reply.startswith(b"334 ") and reply.endswith(b"\r\n")
        type2 = base64.b64decode(reply[4:-2])
        assert message_type(type2) == 2
        reply = await client.command(base64.b64encode(ntlm.step(type2)))
        assert reply == b"235 2.7.0 Authentication successful\r\n"
        # A type 3 where a type 1 belongs is malformed (501), not a crash.
        client2 = await greeted(server.port)
        await client2.command(b"EHLO c.test")
        await client2.command(b"STARTTLS")
        await client2.start_tls(client_ctx)
        await client2.command(b"EHLO c.test")
        bogus = base64.b64encode(SIGNATURE + struct.pack("<I", 3) + bytes(52))
        assert (await client2.command(b"AUTH NTLM " + bogus)).startswith(b"501 ")
        await client.close()
        await client2.close()


async def test_server_debug_log_hides_ntlm(user_file, server_ssl_context, client_ssl_context,
                                           caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(tls_context=server_ssl_context, enable_auth=True, debug=True,
                     auth_methods=("NTLM",), ntlm_user_file=user_file) as server:
        async with conn_for(server.port, tls=client_ssl_context, debug=True) as conn:
            await conn.login(f"{DOMAIN}\\{USER}", PASSWORD, mechanism="NTLM")
    messages = [r.getMessage() for r in caplog.records]
    server_lines = [r.getMessage() for r in caplog.records if r.name == "fastsmtp.server"]
    assert any("AUTH NTLM" in m for m in server_lines), server_lines  # the trace ran
    # The client's messages never show; the server's own 334 (type 2: its challenge and
    # host name, no secret) is logged as its other challenges are.
    type1, type3 = (base64.b64encode(SIGNATURE + bytes([n, 0, 0, 0])).decode() for n in (1, 3))
    for message in messages:
        assert PASSWORD not in message and type1 not in message and type3 not in message, message


async def test_ntlm_refused_over_plaintext_unless_allowed(user_file) -> None:
    async with serve(enable_auth=True, auth_require_tls=False, auth_methods=("NTLM",),
                     ntlm_user_file=user_file) as server:
        async with conn_for(server.port, auth_method="NTLM") as conn:
            with pytest.raises(SMTPInvalidAuth, match="plaintext"):
                await conn.login(f"{DOMAIN}\\{USER}", PASSWORD)
        async with conn_for(server.port, auth_method="NTLM", allow_plaintext_auth=True) as conn:
            assert (await conn.login(f"{DOMAIN}\\{USER}", PASSWORD)).code == 235


async def test_pool_from_url_with_ntlm(user_file, server_ssl_context, client_ssl_context) -> None:
    handler = AuthRecorder()
    async with serve(handler, tls_context=server_ssl_context, require_auth=True,
                     auth_methods=("NTLM",), ntlm_user_file=user_file) as server:
        url = f"smtp://CORP%5Calice:{PASSWORD}@127.0.0.1:{server.port}/?authMethod=NTLM"
        async with SMTPPool(url, tls=client_ssl_context) as pool:
            await pool.send(b"Subject: 1\r\n\r\nhi\r\n", Envelope("a@x.test", "b@x.test"))
        url = f"smtp://alice:{PASSWORD}@127.0.0.1:{server.port}/?auth_method=ntlm&domain=CORP"
        async with SMTPPool(url, tls=client_ssl_context) as pool:
            await pool.send(b"Subject: 2\r\n\r\nhi\r\n", Envelope("a@x.test", "b@x.test"))
    assert handler.auth_data == [NTLMCredentials(b"CORP\\alice")] * 2


# -- configuration errors ----------------------------------------------------------------


def test_without_pyspnego_the_error_names_the_extra(monkeypatch, user_file) -> None:
    monkeypatch.setitem(sys.modules, "spnego", None)  # what an absent package looks like
    extra = 'pip install "aiofastsmtp[ntlm]"'
    with pytest.raises(ModuleNotFoundError) as info:
        ConnectionOptions(auth_method="NTLM")
    assert extra in str(info.value)
    with pytest.raises(ModuleNotFoundError, match=r"aiofastsmtp\[ntlm\]"):
        SMTPServer(Recorder(), auth_methods=("NTLM",), ntlm_user_file=user_file)
    ConnectionOptions(auth_method="PLAIN")  # nothing else needs it


async def test_login_without_pyspnego_fails_before_writing(monkeypatch) -> None:
    lines: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test ESMTP\r\n")
        while line := await reader.readline():
            lines.append(line)
            writer.write(b"250-peer.test\r\n250 AUTH NTLM\r\n" if line.startswith(b"EHLO")
                         else b"250 ok\r\n" if line == b"NOOP\r\n" else b"221 bye\r\n")
        writer.close()

    monkeypatch.setitem(sys.modules, "spnego", None)
    async with raw_server(peer) as port:
        async with conn_for(port, allow_plaintext_auth=True) as conn:
            with pytest.raises(ModuleNotFoundError, match=r"aiofastsmtp\[ntlm\]"):
                await conn.login(USER, PASSWORD, mechanism="NTLM")
            assert (await conn.noop()).code == 250  # nothing of AUTH was written
    assert lines == [b"EHLO client.test\r\n", b"NOOP\r\n", b"QUIT\r\n"]


def test_server_ntlm_configuration(tmp_path, monkeypatch, user_file) -> None:
    with pytest.raises(ValueError, match="ntlm_user_file=, or set the NTLM_USER_FILE"):
        SMTPServer(Recorder(), auth_methods=("NTLM",))
    with pytest.raises(ValueError, match="is not a file"):
        SMTPServer(Recorder(), auth_methods=("NTLM",), ntlm_user_file=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="needs 'NTLM' in auth_methods"):
        SMTPServer(Recorder(), ntlm_user_file=user_file)
    monkeypatch.setenv("NTLM_USER_FILE", user_file)
    SMTPServer(Recorder(), auth_methods=("NTLM",))  # the environment variable will do
    assert os.environ["NTLM_USER_FILE"] == user_file
    with pytest.raises(ValueError, match="domain"):
        ConnectionOptions(domain="CO\r\nRP")
