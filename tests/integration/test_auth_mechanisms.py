"""Custom SASL mechanisms (``auth_mechanisms=``): the one exchange loop, exact bytes.

A mechanism is a generator handler (see :mod:`fastsmtp.auth`); these tests drive custom
ones against scripted peers that check every byte, and through a pool against our own
server. The built-in mechanisms run through the same loop: their exact bytes are checked
in tests/unit/test_connection_parts.py and tests/integration/test_connection_safety.py.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Generator
from typing import Any

import pytest

from fastsmtp.auth import SASLCredentials
from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import SMTPAuthError, SMTPInvalidAuth
from fastsmtp.message import Envelope
from fastsmtp.options import ConnectionOptions
from fastsmtp.pool import SMTPPool
from fastsmtp.server.auth import AuthResult, LoginPassword

from support.peer import Expect, ScriptedPeer, Send, greet
from support.server import Recorder, serve

EHLO = b"250-peer.test\r\n250 AUTH PLAIN X-ECHO\r\n"
QUIT = [Expect(b"QUIT\r\n"), Send(b"221 bye\r\n")]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def x_echo(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
    """A two-step mechanism: greets with the user, answers the challenge reversed."""
    challenge = yield b"hello " + credentials.user.encode()
    # A CR LF inside an answer cannot end the line: answers leave as base64.
    yield b"reversed:" + challenge[::-1] + b"\r\nQUIT"


def conn_for(peer: ScriptedPeer, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    kwargs.setdefault("socket_timeout", 10)
    kwargs.setdefault("allow_plaintext_auth", True)
    return SMTPConnection("127.0.0.1", peer.port, **kwargs)


def echo_script(user: bytes = b"u") -> list[object]:
    return [
        Expect(b"AUTH X-ECHO " + b64(b"hello " + user) + b"\r\n"),
        Send(b"334 " + b64(b"abc") + b"\r\n"),
        Expect(b64(b"reversed:cba\r\nQUIT") + b"\r\n"),
        Send(b"235 2.7.0 ok\r\n"),
    ]


async def test_custom_mechanism_from_auth_method_exact_bytes() -> None:
    async with ScriptedPeer(greet(EHLO) + echo_script() + QUIT) as peer:
        async with conn_for(peer, auth_method="x-echo",
                            auth_mechanisms={"x-echo": x_echo}) as conn:
            reply = await conn.login("u", "secret")
            assert reply.code == 235 and conn.authenticated
    peer.check()


async def test_custom_mechanism_from_login_and_without_a_password() -> None:
    # mechanism= overrides auth_method for one login; a custom mechanism needs no secret.
    async with ScriptedPeer(greet(EHLO) + echo_script(b"anon") + QUIT) as peer:
        async with conn_for(peer, auth_method="PLAIN",
                            auth_mechanisms={"X-ECHO": x_echo}) as conn:
            assert (await conn.login("anon", mechanism="X-ECHO")).code == 235
    peer.check()


async def test_a_string_answer_is_utf8_and_an_empty_initial_response_is_equals() -> None:
    def empty_then_text(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
        yield b""
        yield "grüße"

    script = greet(EHLO) + [
        Expect(b"AUTH X-ECHO =\r\n"), Send(b"334 \r\n"),
        Expect(b64("grüße".encode()) + b"\r\n"), Send(b"235 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, auth_mechanisms={"X-ECHO": empty_then_text}) as conn:
            assert (await conn.login("u", mechanism="x-echo")).code == 235
    peer.check()


async def test_a_finished_mechanism_cancels_an_extra_challenge() -> None:
    script = greet(EHLO) + [
        Expect(b"AUTH X-ECHO " + b64(b"hello u") + b"\r\n"),
        Send(b"334 " + b64(b"abc") + b"\r\n"),
        Expect(b64(b"reversed:cba\r\nQUIT") + b"\r\n"),
        Send(b"334 " + b64(b"more?") + b"\r\n"),
        Expect(b"*\r\n"), Send(b"501 5.7.0 cancelled\r\n"),
        Expect(b"NOOP\r\n"), Send(b"250 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, auth_mechanisms={"X-ECHO": x_echo}) as conn:
            with pytest.raises(SMTPAuthError, match="unexpected X-ECHO challenge"):
                await conn.login("u", mechanism="X-ECHO")
            assert not conn.authenticated and conn.is_usable
            assert (await conn.noop()).code == 250
    peer.check()


async def test_a_failing_handler_cancels_and_keeps_the_connection() -> None:
    def picky(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
        challenge = yield None
        raise ValueError(f"cannot answer {challenge!r}")

    script = greet(EHLO) + [
        Expect(b"AUTH X-ECHO\r\n"), Send(b"334 " + b64(b"odd") + b"\r\n"),
        Expect(b"*\r\n"), Send(b"501 5.7.0 cancelled\r\n"),
        Expect(b"NOOP\r\n"), Send(b"250 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, auth_mechanisms={"X-ECHO": picky}) as conn:
            with pytest.raises(SMTPAuthError, match="X-ECHO mechanism failed") as info:
                await conn.login("u", mechanism="X-ECHO")
            assert isinstance(info.value.__cause__, ValueError)
            assert (await conn.noop()).code == 250
    peer.check()


async def test_a_handler_failing_before_its_first_answer_writes_nothing() -> None:
    def broken(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
        raise RuntimeError("no key configured")
        yield b""  # pragma: no cover - makes this a generator

    def wrong_type(credentials: SASLCredentials) -> Generator[Any, bytes, None]:
        yield 42

    ehlo = b"250-peer.test\r\n250 AUTH X-ECHO X-NUM\r\n"
    script = greet(ehlo) + [Expect(b"NOOP\r\n"), Send(b"250 ok\r\n")] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, auth_mechanisms={"X-ECHO": broken, "X-NUM": wrong_type,
                                               "X-OTHER": x_echo}) as conn:
            with pytest.raises(RuntimeError, match="no key configured"):
                await conn.login("u", mechanism="X-ECHO")
            with pytest.raises(SMTPInvalidAuth, match="X-NUM mechanism yielded int"):
                await conn.login("u", mechanism="X-NUM")
            with pytest.raises(SMTPAuthError, match="does not offer X-OTHER"):
                await conn.login("u", mechanism="X-OTHER")
            assert (await conn.noop()).code == 250
    peer.check()


async def test_custom_mechanism_secrets_are_masked_in_the_trace(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp")
    async with ScriptedPeer(greet(EHLO) + echo_script(b"alice") + QUIT) as peer:
        async with conn_for(peer, debug=True, auth_mechanisms={"X-ECHO": x_echo}) as conn:
            await conn.login("alice", mechanism="X-ECHO")
    peer.check()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("fastsmtp")]
    assert "C: AUTH X-ECHO ****" in messages and "S: 334 ****" in messages
    for secret in (b64(b"hello alice"), b64(b"reversed:cba\r\nQUIT"), b64(b"abc")):
        assert not any(secret.decode() in m for m in messages)


async def test_login_argument_rules() -> None:
    script = greet(EHLO) + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, auth_mechanisms={"X-ECHO": x_echo}) as conn:
            with pytest.raises(SMTPInvalidAuth, match="unknown SASL mechanism X-NONE"):
                await conn.login("u", "p", mechanism="X-NONE")
            with pytest.raises(SMTPInvalidAuth, match="exactly one of password and xoauth2"):
                await conn.login("u", mechanism="PLAIN")  # built-ins keep their rule
            with pytest.raises(SMTPInvalidAuth, match="at most one"):
                await conn.login("u", "p", xoauth2="t", mechanism="X-ECHO")
            with pytest.raises(SMTPInvalidAuth, match="XOAUTH2 needs an xoauth2 token"):
                await conn.login("u", xoauth2="t", mechanism="PLAIN")
    peer.check()


async def test_custom_mechanism_refused_over_plaintext() -> None:
    async with ScriptedPeer(greet(EHLO) + QUIT) as peer:
        async with conn_for(peer, allow_plaintext_auth=False,
                            auth_mechanisms={"X-ECHO": x_echo}) as conn:
            with pytest.raises(SMTPInvalidAuth, match="plaintext"):
                await conn.login("u", mechanism="X-ECHO")
    peer.check()


def test_auth_mechanisms_option_validation() -> None:
    opts = ConnectionOptions(auth_mechanisms={"x-echo": x_echo}, auth_method="X-ECHO")
    assert opts.sasl_mechanisms["X-ECHO"] is x_echo and "PLAIN" in opts.sasl_mechanisms
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        ConnectionOptions(auth_mechanisms={"X ECHO": x_echo})
    with pytest.raises(ValueError, match="not a SASL mechanism name"):
        ConnectionOptions(auth_mechanisms={"A" * 21: x_echo})
    with pytest.raises(TypeError, match="must be a handler"):
        ConnectionOptions(auth_mechanisms={"X-ECHO": "x_echo"})
    with pytest.raises(TypeError, match="mapping"):
        ConnectionOptions(auth_mechanisms=[("X-ECHO", x_echo)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth_mechanisms"):
        ConnectionOptions(auth_method="X-ECHO")  # not registered


async def test_pool_uses_a_registered_mechanism(server_ssl_context, client_ssl_context) -> None:
    # Overriding a built-in: this PLAIN sends an authorization identity too; the server
    # (which ignores authzid) sees the authentication identity and password.
    seen: list[SASLCredentials] = []

    def plain_as_admin(credentials: SASLCredentials) -> Generator[bytes | str | None, bytes, None]:
        seen.append(credentials)
        yield b"admin\0" + credentials.user.encode() + b"\0" + (credentials.password or "").encode()

    logins: list[Any] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append((mechanism, data))
        # aiosmtpd's own LoginPassword when aiosmtpd is imported (see server.auth): a tuple.
        return AuthResult(success=tuple(data) == (b"bob", b"pw"))

    handler = Recorder()
    async with serve(handler, tls_context=server_ssl_context, require_auth=True,
                     auth_methods=("PLAIN",), authenticator=authenticator) as server:
        async with SMTPPool(host="127.0.0.1", port=server.port, tls=client_ssl_context,
                            auth=("bob", "pw"), auth_method="PLAIN",
                            auth_mechanisms={"PLAIN": plain_as_admin}) as pool:
            await pool.send(b"Subject: x\r\n\r\nhi\r\n", Envelope("a@x.test", "b@x.test"))
    assert [c.user for c in seen] == ["bob"] and seen[0].host == "127.0.0.1"
    assert logins == [("PLAIN", LoginPassword(b"bob", b"pw"))]
    assert handler.messages[0][1] == ["b@x.test"]
