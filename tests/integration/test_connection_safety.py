"""SMTPConnection audit fixes against scripted peers: address injection, the greeting
timer, unexpected replies, socket errors, debug-log masking, STARTTLS injection, and the
options that had no wire test (8BITMIME, SIZE, local_address, sock)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import socket
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import (
    SMTPAuthError,
    SMTPEnvelopeError,
    SMTPMessageError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPSocketError,
    SMTPTLSError,
)
from fastsmtp.message import DSN, Envelope

from support.peer import (
    Close,
    Expect,
    ExpectData,
    Reset,
    ScriptedPeer,
    Send,
    Silence,
    Sleep,
    greet,
)
from support.ports import retry_port_in_use

PIPE_EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
DSN_EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 1000\r\n"
PLAIN_EHLO = b"250-peer.test\r\n250 SIZE 1000\r\n"  # no PIPELINING: one command at a time
QUIT = [Expect(b"QUIT\r\n"), Send(b"221 bye\r\n")]
EHLO = b"EHLO client.test\r\n"


def conn_for(peer: ScriptedPeer, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    kwargs.setdefault("socket_timeout", 10)
    return SMTPConnection("127.0.0.1", peer.port, **kwargs)


# -- 1. addresses cannot add ESMTP parameters -----------------------------------------------

BAD_ENVELOPES = [
    # The audit's case: parameters smuggled through the sender and the recipient.
    ("a@x.org> RET=FULL", ["b@y.org> NOTIFY=NEVER ORCPT=rfc822;z@z"]),
    ("a@x.org", ["b@y.org> NOTIFY=NEVER ORCPT=rfc822;z@z"]),
    ("a@x.org> RET=FULL", ["b@y.org"]),
    ("a@x.org", ["ok@y.org", "b@y.org SIZE=1"]),  # whitespace alone starts a parameter
    ("<a@x.org>", ["b@y.org"]),
    ("a@x.org", ["b<c@y.org"]),
    ('"john doe"@x.org BODY=8BITMIME', ["b@y.org"]),  # space after the quoted part
    ('"a>b"@x.org', ["b@y.org"]),  # a bracket inside quotes fools naive servers
    ("a@x.org", ["b@y.org\tSIZE=1"]),
    ("a@x.org", ["b@y.org\x85"]),  # C1 control (NEL)
]


@pytest.mark.parametrize(("sender", "recipients"), BAD_ENVELOPES)
async def test_address_injection_refused_before_writing(sender, recipients) -> None:
    async with ScriptedPeer(greet(DSN_EHLO) + QUIT) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPEnvelopeError, match="invalid address"):
                await conn.send(b"hi\r\n", Envelope(sender, recipients))
            assert conn.is_usable  # a local refusal: the connection stays good
    peer.check()
    assert bytes(peer.received) == EHLO + b"QUIT\r\n"  # not one byte of the transaction


async def test_address_injection_in_send_many_is_per_message() -> None:
    good = Envelope("a@x.org", "b@y.org")
    script = greet(DSN_EHLO) + [
        Expect(b"MAIL FROM:<a@x.org> SIZE=3\r\nRCPT TO:<b@y.org>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"), ExpectData(), Send(b"250 done\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            bad = Envelope("a@x.org> RET=FULL", ["b@y.org"])
            results = [r async for _, r in conn.send_many([(b"x\r\n", bad), (b"m\r\n", good)])]
            assert isinstance(results[0], SMTPEnvelopeError)
            assert results[1].response.code == 250
    peer.check()
    assert b"RET=FULL" not in peer.received


async def test_quoted_local_part_and_null_sender_are_sent() -> None:
    script = greet(PIPE_EHLO) + [
        Expect(b'MAIL FROM:<> SIZE=3\r\nRCPT TO:<"john doe"@example.com>\r\nDATA\r\n'),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"), ExpectData(), Send(b"250 done\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            result = await conn.send(b"x\r\n", Envelope("", '"john doe"@example.com'))
            assert result.accepted == ['"john doe"@example.com']
    peer.check()


async def test_orcpt_value_is_xtext_and_type_is_checked() -> None:
    with pytest.raises(SMTPEnvelopeError, match="atom"):
        DSN(orcpt="rfc822 NOTIFY=NEVER;z@z")
    script = greet(DSN_EHLO) + [
        Expect(b"MAIL FROM:<a@x.org> SIZE=3\r\n"
               b"RCPT TO:<b@y.org> NOTIFY=NEVER ORCPT=rfc822;z@z+20RET+3DFULL\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"), ExpectData(), Send(b"250 done\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            dsn = DSN(notify="NEVER", orcpt="z@z RET=FULL")
            await conn.send(b"x\r\n", Envelope("a@x.org", "b@y.org", dsn=dsn))
    peer.check()


# -- 2. the greeting timeout starts once TCP and TLS are up -----------------------------------

async def test_greeting_timer_starts_after_a_slow_tls_handshake(
    server_ssl_context, client_ssl_context
) -> None:
    # The server answers the TLS handshake 1.5 s late (within connection_timeout), then
    # greets at once: greeting_timeout=0.5 must not count the handshake.
    script = [Send(b"220 peer.test\r\n"), Expect(EHLO), Send(b"250 peer.test\r\n")] + QUIT
    async with ScriptedPeer(script, tls=server_ssl_context, accept_after=1.5) as peer:
        conn = conn_for(peer, secure=True, tls=client_ssl_context, connection_timeout=10,
                        greeting_timeout=0.5)
        async with conn:
            assert conn.secure and conn.is_usable
    peer.check()


# -- 3. a reply outside 2xx/4xx/5xx where none is expected closes the connection -------------

def _transaction(ehlo: bytes, *steps: object) -> list[object]:
    return greet(ehlo) + list(steps) + [Silence(10)]


MAIL_ONLY = b"MAIL FROM:<a@x.test> SIZE=4\r\n"
ONE_RCPT = b"RCPT TO:<b@x.test>\r\n"
TWO_RCPT = ONE_RCPT + b"RCPT TO:<c@x.test>\r\n"
ENV2 = Envelope("a@x.test", ["b@x.test", "c@x.test"])

UNEXPECTED_IN_SEND = {
    # name: (script after EHLO, what the peer must have read last)
    "mail-pipelined": (PIPE_EHLO, [
        Expect(MAIL_ONLY + TWO_RCPT + b"DATA\r\n"),
        Send(b"354 go ahead\r\n250 ok\r\n250 ok\r\n354 go\r\n")]),
    "mail": (PLAIN_EHLO, [Expect(MAIL_ONLY), Send(b"354 go ahead\r\n")]),
    "rcpt-pipelined": (PIPE_EHLO, [
        Expect(MAIL_ONLY + TWO_RCPT + b"DATA\r\n"),
        Send(b"250 ok\r\n334 what\r\n250 ok\r\n354 go\r\n")]),
    # Without PIPELINING the second RCPT must not follow a 354 to the first.
    "rcpt": (PLAIN_EHLO, [Expect(MAIL_ONLY), Send(b"250 ok\r\n"),
                          Expect(ONE_RCPT), Send(b"354 go ahead\r\n")]),
    "data": (PLAIN_EHLO, [Expect(MAIL_ONLY), Send(b"250 ok\r\n"),
                          Expect(ONE_RCPT), Send(b"250 ok\r\n"),
                          Expect(b"RCPT TO:<c@x.test>\r\n"), Send(b"250 ok\r\n"),
                          Expect(b"DATA\r\n"), Send(b"334 what\r\n")]),
    "data-pipelined-all-refused": (PIPE_EHLO, [
        Expect(MAIL_ONLY + TWO_RCPT + b"DATA\r\n"),
        Send(b"250 ok\r\n550 no\r\n550 no\r\n334 what\r\n")]),
    # MAIL refused, yet DATA got 354: the server would read our next commands as data.
    "data-354-without-mail": (PIPE_EHLO, [
        Expect(MAIL_ONLY + TWO_RCPT + b"DATA\r\n"),
        Send(b"550 no\r\n503 no\r\n503 no\r\n354 go\r\n")]),
    "dot": (PIPE_EHLO, [
        Expect(MAIL_ONLY + TWO_RCPT + b"DATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"hi\r\n.\r\n"), Send(b"354 again\r\n")]),
}


@pytest.mark.parametrize("stage", list(UNEXPECTED_IN_SEND))
async def test_unexpected_3xx_in_a_transaction_closes_the_connection(stage) -> None:
    ehlo, steps = UNEXPECTED_IN_SEND[stage]
    async with ScriptedPeer(_transaction(ehlo, *steps)) as peer:
        conn = conn_for(peer)
        await conn.connect()
        with pytest.raises(SMTPProtocolError, match="unexpected reply") as info:
            await conn.send(b"hi\r\n", ENV2)
        assert 300 <= info.value.response_code < 400
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()
    # Nothing after the reply: no RSET, no message data, no further RCPT.
    last = [s for s in steps if isinstance(s, Expect)][-1].data
    assert bytes(peer.received).endswith(last)


async def test_unexpected_3xx_to_lmtp_data_replies_closes_the_connection() -> None:
    script = [Send(b"220 peer.test LMTP\r\n"), Expect(b"LHLO client.test\r\n"),
              Send(b"250-peer.test\r\n250 PIPELINING\r\n"),
              Expect(b"MAIL FROM:<a@x.test>\r\n" + TWO_RCPT + b"DATA\r\n"),
              Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
              Expect(b"hi\r\n.\r\n"), Send(b"250 ok\r\n354 again\r\n"), Silence(10)]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, lmtp=True)
        await conn.connect()
        with pytest.raises(SMTPProtocolError, match="unexpected reply"):
            await conn.send(b"hi\r\n", ENV2)
        assert not conn.is_usable
    peer.check()


@pytest.mark.parametrize("command", ["reset", "noop"])
async def test_unexpected_3xx_to_rset_and_noop_closes_the_connection(command) -> None:
    line = b"RSET\r\n" if command == "reset" else b"NOOP\r\n"
    async with ScriptedPeer(_transaction(PIPE_EHLO, Expect(line), Send(b"354 go\r\n"))) as peer:
        conn = conn_for(peer)
        await conn.connect()
        with pytest.raises(SMTPProtocolError, match="unexpected reply"):
            await getattr(conn, command)()
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()
    assert bytes(peer.received).endswith(line)


async def test_unexpected_3xx_to_quit_still_closes() -> None:
    async with ScriptedPeer(greet(PIPE_EHLO) + [Expect(b"QUIT\r\n"), Send(b"354 go\r\n")]) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await conn.quit()
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()


CONNECT_STAGES = {
    "greeting": ([Send(b"354 hello\r\n")], {}),
    "ehlo": ([Send(b"220 peer.test\r\n"), Expect(EHLO), Send(b"354 what\r\n")], {}),
    "helo": ([Send(b"220 peer.test\r\n"), Expect(EHLO), Send(b"502 no\r\n"),
              Expect(b"HELO client.test\r\n"), Send(b"354 what\r\n")], {}),
    # opportunistic_tls must not take a 3xx for a refusal and go on in plaintext.
    "starttls": (greet(b"250-peer.test\r\n250 STARTTLS\r\n")
                 + [Expect(b"STARTTLS\r\n"), Send(b"354 what\r\n")],
                 {"opportunistic_tls": True}),
}


@pytest.mark.parametrize("stage", list(CONNECT_STAGES))
async def test_unexpected_3xx_while_connecting_fails_the_connection(stage) -> None:
    steps, kwargs = CONNECT_STAGES[stage]
    async with ScriptedPeer(steps + [Silence(10)]) as peer:
        conn = conn_for(peer, **kwargs)
        with pytest.raises(SMTPProtocolError):
            await conn.connect()
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()


@pytest.mark.parametrize(
    ("steps", "password"),
    [
        ([Expect(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"),
          Send(b"354 what\r\n")], "p"),
        # LOGIN answers two prompts; a third makes it cancel with "*", and the reply to
        # the cancel must be a 2xx/4xx/5xx too.
        ([Expect(b"AUTH LOGIN\r\n"), Send(b"334 VXNlcm5hbWU6\r\n"),
          Expect(base64.b64encode(b"u") + b"\r\n"), Send(b"334 UGFzc3dvcmQ6\r\n"),
          Expect(base64.b64encode(b"p") + b"\r\n"), Send(b"334 QWdhaW46\r\n"),
          Expect(b"*\r\n"), Send(b"354 what\r\n")], "p"),
    ],
    ids=["plain", "login-cancel"],
)
async def test_unexpected_3xx_to_auth_closes_the_connection(steps, password) -> None:
    mech = b"PLAIN" if b"PLAIN" in steps[0].data else b"LOGIN"
    ehlo = b"250-peer.test\r\n250 AUTH " + mech + b"\r\n"
    async with ScriptedPeer(_transaction(ehlo, *steps)) as peer:
        conn = conn_for(peer, allow_plaintext_auth=True)
        await conn.connect()
        with pytest.raises(SMTPProtocolError, match="unexpected reply"):
            await conn.login(user="u", password=password)
        assert not conn.is_usable and not conn.authenticated
        await asyncio.wait_for(conn.closed, 5)
    peer.check()


# -- 4. a socket error on an established connection is ESOCKET -------------------------------

async def test_connection_reset_is_a_socket_error() -> None:
    async with ScriptedPeer(greet(PIPE_EHLO) + [Expect(b"NOOP\r\n"), Reset()]) as peer:
        conn = conn_for(peer)
        await conn.connect()
        with pytest.raises(SMTPSocketError) as info:
            await conn.noop()
        error = info.value
        assert error.code == "ESOCKET"
        assert isinstance(error, SMTPServerDisconnected) and isinstance(error, ConnectionError)
        assert isinstance(error.__cause__, OSError)
        assert not conn.is_usable
    peer.check()


async def test_orderly_close_is_not_a_socket_error() -> None:
    async with ScriptedPeer(greet(PIPE_EHLO) + [Expect(b"NOOP\r\n"), Close()]) as peer:
        conn = conn_for(peer)
        await conn.connect()
        with pytest.raises(SMTPServerDisconnected) as info:
            await conn.noop()
        assert not isinstance(info.value, SMTPSocketError)
        assert info.value.code == "ECONNECTION"
    peer.check()


# -- 6. no secret in any debug log record ---------------------------------------------------

def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("fastsmtp")]


def _assert_clean(caplog: pytest.LogCaptureFixture, secrets: list[bytes | str]) -> list[str]:
    messages = _records(caplog)
    assert any(m.startswith("C: AUTH") for m in messages)  # the trace did run
    for message in messages:
        assert "\r" not in message and "\n" not in message, message
        for secret in secrets:
            text = secret.decode() if isinstance(secret, bytes) else secret
            assert text not in message, (text, message)
    return messages


async def test_login_debug_log_masks_secrets(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp")
    user, password = "alice", "hunter2-Secret"
    script = greet(b"250-peer.test\r\n250 AUTH LOGIN\r\n") + [
        Expect(b"AUTH LOGIN\r\n"), Send(b"334 VXNlcm5hbWU6\r\n"),
        Expect(base64.b64encode(user.encode()) + b"\r\n"), Send(b"334 UGFzc3dvcmQ6\r\n"),
        Expect(base64.b64encode(password.encode()) + b"\r\n"), Send(b"235 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True, debug=True) as conn:
            await conn.login(user=user, password=password)
    peer.check()
    messages = _assert_clean(caplog, [password, base64.b64encode(password.encode()),
                                      base64.b64encode(user.encode())])
    assert "C: AUTH LOGIN" in messages  # the verb stays readable, on one line


async def test_cram_md5_debug_log_masks_secrets(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp")
    user, password = "tim", "tanstaaftanstaaf"
    challenge = b"<1896.697170952@postoffice.example.net>"
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest().encode()
    response = base64.b64encode(user.encode() + b" " + digest)
    script = greet(b"250-peer.test\r\n250 AUTH CRAM-MD5\r\n") + [
        Expect(b"AUTH CRAM-MD5\r\n"), Send(b"334 " + base64.b64encode(challenge) + b"\r\n"),
        Expect(response + b"\r\n"), Send(b"235 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True, debug=True) as conn:
            await conn.login(user=user, password=password)
    peer.check()
    _assert_clean(caplog, [password, base64.b64encode(password.encode()), response, digest])


async def test_xoauth2_debug_log_masks_token_error_and_empty_reply(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fastsmtp")
    user, token = "u@x.test", "ya29.TOKEN-secret"
    raw = b"user=" + user.encode() + b"\x01auth=Bearer " + token.encode() + b"\x01\x01"
    initial = base64.b64encode(raw)
    # Servers echo details in the JSON error; it is masked like every 334 challenge.
    error = base64.b64encode(b'{"status":"401","token":"' + token.encode() + b'"}')
    script = greet(b"250-peer.test\r\n250 AUTH XOAUTH2\r\n") + [
        Expect(b"AUTH XOAUTH2 " + initial + b"\r\n"), Send(b"334 " + error + b"\r\n"),
        Expect(b"\r\n"), Send(b"535 5.7.8 bad token\r\n"),
        Expect(b"AUTH XOAUTH2 " + initial + b"\r\n"), Send(b"235 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True, debug=True) as conn:
            with pytest.raises(SMTPAuthError):
                await conn.login(user=user, xoauth2=token)
            await conn.login(user=user, xoauth2=token)
    peer.check()
    messages = _assert_clean(caplog, [token, initial, error, base64.b64encode(token.encode())])
    assert "C: AUTH XOAUTH2 ****" in messages
    assert "S: 334 ****" in messages and "C: ****" in messages  # challenge, empty reply


# -- 9. STARTTLS injection in its own segment -----------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 0.2])
async def test_starttls_injection_in_a_later_segment_fails(
    server_ssl_context, client_ssl_context, delay
) -> None:
    # The injected bytes arrive after the 220, separately: by then the client reads the
    # socket only through TLS, so they are garbage to the handshake, never a reply.
    script = greet(b"250-peer.test\r\n250 STARTTLS\r\n") + [
        Expect(b"STARTTLS\r\n"), Send(b"220 go\r\n"), Sleep(delay),
        Send(b"250-peer.test\r\n250 AUTH PLAIN\r\n"), Silence(10),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, tls=client_ssl_context)
        with pytest.raises(SMTPTLSError):
            await conn.connect()
        assert not conn.is_usable and not conn.secure
        assert conn.capabilities.auth == frozenset()  # the injected EHLO was not read
    peer.check()
    # Nothing was sent in plaintext after STARTTLS (only a TLS ClientHello, if anything).
    assert EHLO not in bytes(peer.received).split(b"STARTTLS\r\n", 1)[1]


# -- 9. BODY=8BITMIME, local_address, sock= --------------------------------------------------

@pytest.mark.parametrize("offered", [True, False])
async def test_use_8bit_mime_on_the_wire(offered) -> None:
    ehlo = PIPE_EHLO if offered else b"250-peer.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
    body = b" BODY=8BITMIME" if offered else b""
    script = greet(ehlo) + [
        Expect(b"MAIL FROM:<a@x.test> SIZE=7" + body + b"\r\n" + ONE_RCPT + b"DATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"), Expect("héé\r\n.\r\n".encode()),
        Send(b"250 done\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            env = Envelope("a@x.test", "b@x.test", use_8bit_mime=True)
            await conn.send("héé".encode(), env)
    peer.check()


@pytest.mark.parametrize("with_port", [True, False])
async def test_local_address_binds_the_client_side(with_port) -> None:
    # The client must be given a port number to bind: retry_port_in_use picks another
    # one should the chosen port be taken before the client binds it.
    async def attempt(port: int) -> tuple[ScriptedPeer, int]:
        local: str | tuple[str, int] = ("127.0.0.1", port) if with_port else "127.0.0.1"
        async with ScriptedPeer(greet(PIPE_EHLO) + QUIT) as peer:
            async with conn_for(peer, local_address=local):
                pass
        return peer, port

    peer, port = await retry_port_in_use(attempt)
    peer.check()
    assert peer.peername is not None and peer.peername[0] == "127.0.0.1"
    if with_port:
        assert peer.peername[1] == port


async def test_connection_over_a_socket_connected_by_the_caller() -> None:
    async with ScriptedPeer(greet(PIPE_EHLO) + [Expect(b"NOOP\r\n"), Send(b"250 ok\r\n")]
                            + QUIT) as peer:
        sock = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
        local = sock.getsockname()
        conn = SMTPConnection("127.0.0.1", sock=sock, name="client.test", socket_timeout=10)
        async with conn:
            assert (await conn.noop()).code == 250
    peer.check()
    assert peer.peername == local


# -- 10. SIZE counts the normalized message ---------------------------------------------------

async def test_size_counts_bare_lf_as_crlf_and_is_checked_before_writing() -> None:
    # 600 bytes of bare LF are 1200 on the wire: over the server's 1000, so refused
    # locally before MAIL (len() alone would have declared 600 and sent it).
    async with ScriptedPeer(greet(PIPE_EHLO) + QUIT) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPMessageError, match="1200 bytes"):
                await conn.send(b"\n" * 600, Envelope("a@x.test", "b@x.test"))
            assert conn.is_usable
    peer.check()
    assert bytes(peer.received) == EHLO + b"QUIT\r\n"


# One message whose size was not declared (a stream): MAIL carries no SIZE parameter.
UNDECLARED_STREAM_SCRIPT = greet(PIPE_EHLO) + [
    Expect(b"MAIL FROM:<a@x.test>\r\n" + ONE_RCPT + b"DATA\r\n"),
    Send(b"250 ok\r\n250 ok\r\n354 go\r\n"), ExpectData(), Send(b"250 done\r\n"),
] + QUIT


async def test_file_already_over_the_size_limit_is_refused_before_mail(tmp_path) -> None:
    big, fits = tmp_path / "big.eml", tmp_path / "fits.eml"
    big.write_bytes(b"x" * 1500)
    fits.write_bytes(b"y" * 900 + b"\r\n")
    script = UNDECLARED_STREAM_SCRIPT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with big.open("rb") as file, pytest.raises(SMTPMessageError,
                                                       match="at least 1500 bytes"):
                await conn.send(file, Envelope("a@x.test", "b@x.test"))
            assert conn.is_usable  # nothing was written: the connection goes on
            with fits.open("rb") as file:
                result = await conn.send(file, Envelope("a@x.test", "b@x.test"))
            assert result.response.code == 250
            with big.open("rb") as file:
                file.seek(200)  # what is left to send is what counts
                with pytest.raises(SMTPMessageError, match="at least 1300 bytes"):
                    await conn.send(file, Envelope("a@x.test", "b@x.test"))
    peer.check()


async def test_stream_without_size_is_not_declared() -> None:
    script = UNDECLARED_STREAM_SCRIPT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await conn.send(iter([b"x" * 2000]), Envelope("a@x.test", "b@x.test"))
    peer.check()



# -- the receive buffer ------------------------------------------------------------------------


async def test_reply_longer_than_the_read_buffer_arrives_whole() -> None:
    """A reply several times the protocol's read buffer (one buffer, reused for every
    read) still arrives whole: what the parser keeps is its own copy."""
    from fastsmtp.protocol import READ_BUFFER

    words = [f"X{i:05d}" + "Y" * 90 for i in range(3 * READ_BUFFER // 100)]
    ehlo = b"250-peer.test\r\n" + b"".join(b"250-%s\r\n" % w.encode() for w in words) \
        + b"250 PIPELINING\r\n"
    assert len(ehlo) > 2 * READ_BUFFER
    async with ScriptedPeer(greet(ehlo) + QUIT) as peer:
        async with conn_for(peer) as conn:
            assert conn.capabilities.pipelining
            assert [k for k in conn.capabilities.extensions if k.startswith("X")] == words
    peer.check()
