"""SMTPConnection against scripted peers that send and expect exact bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.errors import (
    SMTPAuthError,
    SMTPConnectionError,
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPMaybeDelivered,
    SMTPMessageError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from fastsmtp.message import DSN, Envelope

from support.peer import (
    Close,
    Expect,
    ExpectData,
    ScriptedPeer,
    Send,
    Silence,
    Sleep,
    StartTLS,
    greet,
)
from support.wait import wait_until

PIPE_EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
QUIT = [Expect(b"QUIT\r\n"), Send(b"221 bye\r\n")]
ENV = Envelope("a@x.test", ["b@x.test", "c@x.test"])
ENV_CMDS = b"MAIL FROM:<a@x.test> SIZE=7\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"


def conn_for(peer: ScriptedPeer, **kwargs: Any) -> SMTPConnection:
    kwargs.setdefault("name", "client.test")
    kwargs.setdefault("socket_timeout", 10)
    return SMTPConnection("127.0.0.1", peer.port, **kwargs)


async def test_pipelined_send_exact_bytes() -> None:
    # SIZE=8: the size the server counts, "hi\r\n.x\r\n" (CRLF-normalized, the final
    # CRLF added, the dot not yet doubled: RFC 1870), not len(b"hi\n.x") == 5.
    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS.replace(b"SIZE=7", b"SIZE=8")),
        Send(b"250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n"),
        Expect(b"hi\r\n..x\r\n.\r\n"),
        Send(b"250 2.0.0 queued as X\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            assert conn.capabilities.pipelining and conn.capabilities.size == 1000
            result = await conn.send(b"hi\n.x", ENV)
            assert result.accepted == ["c@x.test"] and result.rejected == ["b@x.test"]
            assert result.rejected_errors[0].response_code == 550
            assert str(result.response) == "250 2.0.0 queued as X"
    peer.check()


def two_pipelined_messages(second_reply: bytes) -> list[object]:
    """Two messages (m1 to b@, m2 to c@) where the second envelope must arrive before the
    first dot is answered; ``second_reply`` answers the second dot."""
    return greet(PIPE_EHLO) + [
        Expect(b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m1\r\n.\r\n"),
        # No reply to the first dot yet: the client must pipeline the next envelope.
        Expect(b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"),
        Send(b"250 first\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m2\r\n.\r\n"),
        Send(second_reply),
    ] + QUIT


ENV1, ENV2 = Envelope("a@x.test", "b@x.test"), Envelope("a@x.test", "c@x.test")


async def test_pipelining_across_messages() -> None:
    """The second message's MAIL/RCPT/DATA arrive before the first dot is answered."""
    script = two_pipelined_messages(b"550 second refused\r\n")
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            first, second = [r async for _, r in conn.send_many([(b"m1", ENV1), (b"m2", ENV2)])]
            assert str(first.response) == "250 first"
            assert isinstance(second, SMTPDataRefused) and second.response_code == 550
            assert conn.is_usable and conn.messages_sent == 1
    peer.check()


async def test_all_recipients_refused_pipelined() -> None:
    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS),
        Send(b"250 ok\r\n550 no\r\n551 no\r\n554 no valid recipients\r\n"),
        Expect(b"RSET\r\n"),
        Send(b"250 reset\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPRecipientsRefused) as info:
                await conn.send(b"hello", ENV)
            assert info.value.rejected == ["b@x.test", "c@x.test"]
            assert [e.response_code for e in info.value.rejected_errors] == [550, 551]
            assert conn.is_usable
    peer.check()


async def test_sender_refused_and_size_exceeded() -> None:
    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS),
        Send(b"553 bad sender\r\n503 no\r\n503 no\r\n503 no\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPSenderRefused) as info:
                await conn.send(b"hello", ENV)
            assert info.value.response_code == 553
            # Larger than SIZE 1000: refused before MAIL (the peer expects QUIT next).
            with pytest.raises(SMTPMessageError, match="SIZE"):
                await conn.send(b"x" * 1001, Envelope("a@x.test", "b@x.test"))
            with pytest.raises(SMTPMessageError):
                await conn.send(iter([b"x"]), Envelope("a@x.test", "b@x.test", size=5000))
            assert conn.is_usable
    peer.check()


async def test_without_pipelining_one_command_at_a_time() -> None:
    script = greet(b"250-peer.test\r\n250 DSN\r\n") + [
        Expect(b"MAIL FROM:<a+b@x.test> RET=HDRS ENVID=id+2B1+3D2\r\n"), Send(b"250 ok\r\n"),
        Expect(b"RCPT TO:<b@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bo@x.test\r\n"),
        Send(b"250 ok\r\n"),
        Expect(b"DATA\r\n"), Send(b"354 go\r\n"),
        ExpectData(), Send(b"250 ok\r\n"),
    ] + QUIT
    dsn = DSN(ret="hdrs", envid="id+1=2", notify="success, failure", orcpt="b+o@x.test")
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            await conn.send(b"x\r\n", Envelope("a+b@x.test", "b@x.test", dsn=dsn))
    peer.check()
    assert peer.data == [b"x\r\n.\r\n"]


async def test_lmtp_one_reply_per_recipient() -> None:
    script = [
        Send(b"220 lmtp.test LMTP\r\n"), Expect(b"LHLO client.test\r\n"),
        Send(b"250-lmtp.test\r\n250 PIPELINING\r\n"),
        Expect(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        ExpectData(),
        Send(b"250 2.1.5 b delivered\r\n452 4.2.2 c over quota\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, lmtp=True) as conn:
            assert conn.options.port == peer.port
            result = await conn.send(iter([b"hello\r\n"]), ENV)
            assert result.accepted == ["b@x.test"] and result.rejected == ["c@x.test"]
            assert result.rejected_errors[0].response_code == 452
            assert str(result.response) == "452 4.2.2 c over quota"
    peer.check()


async def test_ehlo_refused_falls_back_to_helo() -> None:
    script = [
        Send(b"220 old.test\r\n"), Expect(b"EHLO client.test\r\n"), Send(b"502 what\r\n"),
        Expect(b"HELO client.test\r\n"), Send(b"250 old.test\r\n"),
        Expect(b"MAIL FROM:<a@x.test>\r\n"), Send(b"250 ok\r\n"),
        Expect(b"RCPT TO:<b@x.test>\r\n"), Send(b"250 ok\r\n"),
        Expect(b"DATA\r\n"), Send(b"354 go\r\n"), ExpectData(), Send(b"250 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            assert not conn.capabilities.pipelining
            await conn.send(iter([b"x"]), Envelope("a@x.test", "b@x.test"))
    peer.check()


# -- STARTTLS --------------------------------------------------------------------------

STARTTLS_EHLO = b"250-peer.test\r\n250 STARTTLS\r\n"


async def test_starttls_capabilities_only_after_tls(server_ssl_context, client_ssl_context) -> None:
    script = greet(b"250-peer.test\r\n250-STARTTLS\r\n250 SIZE 10\r\n") + [
        Expect(b"STARTTLS\r\n"), Send(b"220 go\r\n"), StartTLS(server_ssl_context),
        Expect(b"EHLO client.test\r\n"), Send(b"250-peer.test\r\n250 AUTH CRAM-MD5\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, tls=client_ssl_context) as conn:
            assert conn.secure
            assert conn.capabilities.size is None and conn.capabilities.auth == {"CRAM-MD5"}
    peer.check()


@pytest.mark.parametrize("extra", [b"250 injected\r\n", b"250-partial"])
async def test_starttls_injection_refused(server_ssl_context, client_ssl_context, extra) -> None:
    script = greet(STARTTLS_EHLO) + [
        Expect(b"STARTTLS\r\n"), Send(b"220 go\r\n" + extra), Silence(10),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, tls=client_ssl_context)
        with pytest.raises(SMTPTLSError, match="after its 220"):
            await conn.connect()
        assert not conn.is_usable and not conn.secure
    peer.check()


async def test_starttls_refused(client_ssl_context) -> None:
    refuse = [Expect(b"STARTTLS\r\n"), Send(b"454 TLS not available\r\n")]
    # Default: a refused STARTTLS is an error.
    async with ScriptedPeer(greet(STARTTLS_EHLO) + refuse + [Silence(10)]) as peer:
        conn = conn_for(peer, tls=client_ssl_context)
        with pytest.raises(SMTPTLSError) as info:
            await conn.connect()
        assert info.value.response_code == 454
    peer.check()
    assert peer.received.endswith(b"STARTTLS\r\n")  # nothing after the refusal
    # require_tls: same, and no command in plaintext.
    async with ScriptedPeer(greet(STARTTLS_EHLO) + refuse + [Silence(10)]) as peer:
        conn = conn_for(peer, tls=client_ssl_context, require_tls=True)
        with pytest.raises(SMTPTLSError):
            await conn.connect()
    peer.check()
    assert peer.received.endswith(b"STARTTLS\r\n")
    # opportunistic_tls: go on in plaintext.
    async with ScriptedPeer(greet(STARTTLS_EHLO) + refuse + QUIT) as peer:
        async with conn_for(peer, tls=client_ssl_context, opportunistic_tls=True) as conn:
            assert not conn.secure
    peer.check()


async def test_ignore_tls_never_starts_tls() -> None:
    async with ScriptedPeer(greet(STARTTLS_EHLO) + QUIT) as peer:
        async with conn_for(peer, ignore_tls=True) as conn:
            assert not conn.secure and conn.capabilities.starttls
    peer.check()


# -- authentication ----------------------------------------------------------------------

async def test_cram_md5_exact_bytes(server_ssl_context, client_ssl_context) -> None:
    challenge = b"<1896.697170952@postoffice.example.net>"
    digest = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest().encode()
    script = greet(b"250-peer.test\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n") + [
        Expect(b"AUTH CRAM-MD5\r\n"),
        Send(b"334 " + base64.b64encode(challenge) + b"\r\n"),
        Expect(base64.b64encode(b"tim " + digest) + b"\r\n"),
        Send(b"235 2.7.0 ok\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True) as conn:
            await conn.login(user="tim", password="tanstaaftanstaaf")
            assert conn.authenticated
    peer.check()


async def test_xoauth2_provider_refreshes_once() -> None:
    def initial(token: str) -> bytes:
        raw = b"user=u@x.test\x01auth=Bearer " + token.encode() + b"\x01\x01"
        return b"AUTH XOAUTH2 " + base64.b64encode(raw) + b"\r\n"

    error = base64.b64encode(b'{"status":"401"}')
    script = greet(b"250-peer.test\r\n250 AUTH XOAUTH2 PLAIN\r\n") + [
        Expect(initial("old")), Send(b"334 " + error + b"\r\n"),
        Expect(b"\r\n"), Send(b"535 5.7.8 bad token\r\n"),
        Expect(initial("fresh")), Send(b"235 ok\r\n"),
    ] + QUIT
    calls: list[tuple[str, bool]] = []

    async def provider(user: str, *, refresh: bool) -> str:
        calls.append((user, refresh))
        return "fresh" if refresh else "old"

    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True) as conn:
            await conn.login(user="u@x.test", xoauth2=provider)
    peer.check()
    assert calls == [("u@x.test", False), ("u@x.test", True)]


async def test_xoauth2_provider_supplies_the_user() -> None:
    # The seed's xoauth2 generator: no auth.user, the provider knows its account.
    def initial(user: bytes, token: bytes) -> bytes:
        raw = b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01"
        return b"AUTH XOAUTH2 " + base64.b64encode(raw) + b"\r\n"

    error = base64.b64encode(b'{"status":"401"}')
    script = greet(b"250-peer.test\r\n250 AUTH XOAUTH2 PLAIN\r\n") + [
        Expect(initial(b"gen@x.test", b"expired")), Send(b"334 " + error + b"\r\n"),
        Expect(b"\r\n"), Send(b"535 5.7.8 bad token\r\n"),
        Expect(initial(b"gen@x.test", b"renewed")), Send(b"235 ok\r\n"),
    ] + QUIT
    calls: list[tuple[str | None, bool]] = []

    def generator(user: str | None, *, refresh: bool) -> tuple[str, str]:
        calls.append((user, refresh))
        return "gen@x.test", "renewed" if refresh else "expired"

    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True) as conn:
            await conn.login(xoauth2=generator)
            assert conn.authenticated
    peer.check()
    assert calls == [(None, False), (None, True)]


async def test_xoauth2_without_any_user_is_refused_before_sending() -> None:
    script = greet(b"250-peer.test\r\n250 AUTH XOAUTH2 PLAIN\r\n") + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True) as conn:
            with pytest.raises(SMTPAuthError, match="a user name is needed"):
                await conn.login(xoauth2="static-token")  # a bare token names nobody
            with pytest.raises(SMTPAuthError, match="no user for XOAUTH2"):
                await conn.login(xoauth2=lambda user, *, refresh: "token-only")
            with pytest.raises(SMTPAuthError, match="returned no user"):
                await conn.login(xoauth2=lambda user, *, refresh: ("", "token"))
            assert not conn.authenticated
    peer.check()  # nothing but EHLO and QUIT went out


async def test_auth_mechanism_missing_and_refused() -> None:
    script = greet(b"250-peer.test\r\n250 AUTH LOGIN\r\n") + [
        Expect(b"AUTH LOGIN\r\n"), Send(b"334 VXNlcm5hbWU6\r\n"),
        Expect(base64.b64encode(b"u") + b"\r\n"), Send(b"334 UGFzc3dvcmQ6\r\n"),
        Expect(base64.b64encode(b"p\r\nMAIL FROM:<x>") + b"\r\n"),
        Send(b"535 no\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer, allow_plaintext_auth=True) as conn:
            with pytest.raises(SMTPAuthError, match="XOAUTH2"):
                await conn.login(user="u", xoauth2="token")
            # The password cannot inject a command: it travels base64-encoded.
            with pytest.raises(SMTPAuthError) as info:
                await conn.login(user="u", password="p\r\nMAIL FROM:<x>")
            assert info.value.response_code == 535
    peer.check()


# -- bad input: nothing is written -------------------------------------------------------

@pytest.mark.parametrize(
    "envelope",
    [
        Envelope("a@x.test\r\nRCPT TO:<evil@x.test>", "b@x.test"),
        Envelope("a@x.test", ["b@x.test", "c@x.test>\r\nDATA"]),
        Envelope("a@x.test", "b@x.test\x00"),
        Envelope("a@x.test", "b@x\x7f.test"),
    ],
)
async def test_control_characters_refused_before_writing(envelope) -> None:
    async with ScriptedPeer(greet(PIPE_EHLO) + QUIT) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPEnvelopeError, match="control character"):
                await conn.send(b"x", envelope)
            assert conn.is_usable
    peer.check()  # the next thing the peer read was QUIT


@pytest.mark.parametrize("dsn", [DSN(envid="x\r\nQUIT"), DSN(orcpt="o@x.test\nQUIT"),
                                 DSN(envid="\x00")])
async def test_dsn_control_characters_refused_before_writing(dsn) -> None:
    script = greet(b"250-peer.test\r\n250-PIPELINING\r\n250 DSN\r\n") + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPEnvelopeError, match="control character"):
                await conn.send(b"x", Envelope("a@x.test", "b@x.test", dsn=dsn))
    peer.check()


async def test_bad_ehlo_name_refused_before_writing() -> None:
    async with ScriptedPeer([Send(b"220 peer.test\r\n"), Silence(10)]) as peer:
        conn = conn_for(peer, name="client.test\r\nMAIL FROM:<x>")
        with pytest.raises(SMTPEnvelopeError, match="control character"):
            await conn.connect()
        assert not conn.is_usable
    peer.check()
    assert peer.received == b""


def test_size_must_be_an_int() -> None:
    with pytest.raises(SMTPEnvelopeError):
        Envelope("a@x.test", "b@x.test", size="10\r\nQUIT")  # type: ignore[arg-type]


# -- misbehaving servers ------------------------------------------------------------------

@pytest.mark.parametrize(
    "greeting",
    [b"hello\r\n", b"2200 x\r\n", b"220-a\r\n250 b\r\n", b"220 " + b"x" * 9000 + b"\r\n",
     b"220 x\r\n250 unexpected\r\n"],
)
async def test_malformed_replies_close_the_connection(greeting) -> None:
    async with ScriptedPeer([Send(greeting), Silence(10)]) as peer:
        conn = conn_for(peer)
        with pytest.raises(SMTPProtocolError):
            await conn.connect()
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()


async def test_greeting_refused() -> None:
    async with ScriptedPeer([Send(b"554 go away\r\n"), Silence(10)]) as peer:
        conn = conn_for(peer)
        with pytest.raises(SMTPConnectionError) as info:
            await conn.connect()
        assert info.value.response_code == 554
    peer.check()


STAGES_421 = {
    "greeting": [Send(b"421 busy\r\n"), Close()],
    "ehlo": [Send(b"220 x\r\n"), Expect(b"EHLO client.test\r\n"), Send(b"421 busy\r\n"), Close()],
    "mail": greet(PIPE_EHLO) + [Expect(ENV_CMDS), Send(b"421 busy\r\n"), Close()],
    "rcpt": greet(PIPE_EHLO) + [Expect(ENV_CMDS), Send(b"250 ok\r\n421 busy\r\n"), Close()],
    "data": greet(PIPE_EHLO) + [
        Expect(ENV_CMDS), Send(b"250 ok\r\n250 ok\r\n250 ok\r\n421 busy\r\n"), Close()],
    "dot": greet(PIPE_EHLO) + [
        Expect(ENV_CMDS), Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"), ExpectData(),
        Send(b"421 busy\r\n"), Close()],
}


@pytest.mark.parametrize("stage", list(STAGES_421))
async def test_421_at_each_stage(stage) -> None:
    async with ScriptedPeer(STAGES_421[stage]) as peer:
        conn = conn_for(peer)
        with pytest.raises(SMTPConnectionError) as info:
            await conn.connect()
            await conn.send(b"hello", ENV)
        assert not isinstance(info.value, SMTPMaybeDelivered)
        assert info.value.response_code == 421
        assert not conn.is_usable
        await asyncio.wait_for(conn.closed, 5)
    peer.check()


async def test_unsolicited_421_while_idle_is_noticed() -> None:
    async with ScriptedPeer(greet() + [Sleep(0.05), Send(b"421 idle timeout\r\n"),
                                        Close()]) as peer:
        conn = conn_for(peer)
        await conn.connect()
        await asyncio.wait_for(conn.closed, 5)
        assert not conn.is_usable
        assert conn.error is not None and conn.error.response_code == 421
    peer.check()


async def test_disconnect_mid_reply_is_immediate() -> None:
    async with ScriptedPeer([Send(b"220-partial\r\n220-more"), Close()]) as peer:
        conn = conn_for(peer, greeting_timeout=60, socket_timeout=60)
        with pytest.raises(SMTPServerDisconnected, match="middle of a reply"):
            await asyncio.wait_for(conn.connect(), 10)
    peer.check()


async def test_disconnect_mid_data_is_not_maybe_delivered() -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first chunk\r\n"
        # Meanwhile the server hangs up: go on once the client has seen it (the dot is
        # then never written; written before, it would rightly be "maybe delivered").
        await wait_until(lambda: not conn.is_connected)
        yield b"second chunk\r\n"

    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS), Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"first chunk\r\n"), Close(),
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPServerDisconnected) as info:
                await conn.send(slow_body(),
                                Envelope("a@x.test", ["b@x.test", "c@x.test"], size=7))
            assert not isinstance(info.value, SMTPMaybeDelivered)
            assert not conn.is_usable
    peer.check()


async def test_disconnect_after_final_dot_is_maybe_delivered() -> None:
    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS), Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        ExpectData(), Close(),
    ]
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            with pytest.raises(SMTPMaybeDelivered) as info:
                await conn.send(b"hello", ENV)
            assert info.value.code == "EMAYBE" and not info.value.transient
            assert not conn.is_usable
    peer.check()


async def test_silence_after_final_dot_is_maybe_delivered() -> None:
    script = greet(PIPE_EHLO) + [
        Expect(ENV_CMDS), Send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        ExpectData(), Silence(10),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, socket_timeout=0.3)
        await conn.connect()
        with pytest.raises(SMTPMaybeDelivered) as info:
            await conn.send(b"hello", ENV)
        assert isinstance(info.value.__cause__, SMTPTimeoutError)
        assert not conn.is_usable
    peer.check()


@pytest.mark.parametrize(
    "script, kwargs",
    [
        ([Silence(10)], {"greeting_timeout": 0.3}),
        ([Send(b"220 x\r\n"), Expect(b"EHLO client.test\r\n"), Silence(10)],
         {"socket_timeout": 0.3}),
        ([Silence(10)], {"secure": True, "connection_timeout": 0.3}),
    ],
    ids=["greeting", "ehlo", "tls-handshake"],
)
async def test_silence_times_out(script, kwargs) -> None:
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, **kwargs)
        with pytest.raises(SMTPTimeoutError):
            await conn.connect()
        assert not conn.is_usable
    peer.check()


async def test_silence_mid_transaction_times_out() -> None:
    script = greet(PIPE_EHLO) + [Expect(ENV_CMDS), Silence(10)]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer, socket_timeout=0.3)
        await conn.connect()
        with pytest.raises(SMTPTimeoutError):
            await conn.send(b"hello", ENV)
        assert not conn.is_usable
        with pytest.raises(SMTPConnectionError):
            await conn.noop()  # never reused
    peer.check()


async def test_concurrent_use_is_serialized() -> None:
    script = greet() + [
        Expect(b"NOOP\r\n"), Send(b"250 one\r\n"), Expect(b"NOOP\r\n"), Send(b"250 two\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            one, two = await asyncio.gather(conn.noop(), conn.noop())
            assert (one.message, two.message) == ("one", "two")
    peer.check()


async def test_concurrent_sends_pipeline_behind_the_dot() -> None:
    """Two concurrent send() calls: the second envelope goes out before the first reply."""
    script = two_pipelined_messages(b"250 second\r\n")
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            first, second = await asyncio.gather(conn.send(b"m1", ENV1), conn.send(b"m2", ENV2))
            assert (first.response.message, second.response.message) == ("first", "second")
            assert conn.is_usable and conn.messages_sent == 2
    peer.check()


async def test_three_concurrent_sends_share_one_pipeline() -> None:
    """The first caller drives the pipeline and hands it on once its own reply is in;
    every envelope still rides with the previous dot."""
    env3 = Envelope("a@x.test", "d@x.test")
    script = greet(PIPE_EHLO) + [
        Expect(b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m1\r\n.\r\nMAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"),
        Send(b"250 first\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m2\r\n.\r\nMAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<d@x.test>\r\nDATA\r\n"),
        Send(b"250 second\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m3\r\n.\r\n"), Send(b"250 third\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            results = await asyncio.gather(
                conn.send(b"m1", ENV1), conn.send(b"m2", ENV2), conn.send(b"m3", env3))
            assert [r.response.message for r in results] == ["first", "second", "third"]
            assert conn.is_usable and conn.messages_sent == 3
    peer.check()


async def test_cancelled_send_still_queued_writes_nothing() -> None:
    """A send cancelled while it waits to join the pipeline is dropped before any byte
    of it is written; the connection stays usable."""
    script = greet(PIPE_EHLO) + [
        Expect(b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m1\r\n.\r\n"), Send(b"250 first\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            first = asyncio.ensure_future(conn.send(b"m1", ENV1))
            second = asyncio.ensure_future(conn.send(b"m2", ENV2))
            await asyncio.sleep(0)  # one yield: both tasks run to their first wait
            assert conn.pending == 2  # so the second is queued, not merely unstarted
            second.cancel()
            assert (await first).response.message == "first"
            with pytest.raises(asyncio.CancelledError):
                await second
            assert conn.is_usable and conn.messages_sent == 1
    peer.check()


async def test_cancelled_driver_fails_the_queued_send_without_writing_it() -> None:
    """The caller driving the pipeline is cancelled mid-transaction: the connection goes
    (its state is unknown), and the send queued behind it fails at once, unwritten."""
    script = greet(PIPE_EHLO) + [
        Expect(b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
        Silence(),
    ]
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        first = asyncio.ensure_future(conn.send(b"m1", ENV1))
        second = asyncio.ensure_future(conn.send(b"m2", ENV2))
        await asyncio.sleep(0)  # one yield: both tasks run to their first wait
        assert conn.pending == 2  # the first drives, the second is queued
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(SMTPConnectionError) as info:
            await second
        assert not isinstance(info.value, SMTPMaybeDelivered)
        assert not conn.is_usable
    peer.check()
    assert b"c@x.test" not in peer.received


async def test_send_many_connection_lost_after_a_dot() -> None:
    """Only the message whose dot was written is 'maybe delivered'; the rest may be retried."""
    env = Envelope("a@x.test", "b@x.test")
    cmds = b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    script = greet(PIPE_EHLO) + [
        Expect(cmds), Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m1\r\n.\r\n" + cmds), Close(),
    ]
    bad = Envelope("a@x.test", "b@x.test\r\nRSET")
    async with ScriptedPeer(script) as peer:
        conn = conn_for(peer)
        await conn.connect()
        results = [r async for _, r in conn.send_many(
            [(b"m1", env), (b"xx", bad), (b"m2", env), (b"m3", env)]
        )]
        assert isinstance(results[0], SMTPMaybeDelivered)
        assert isinstance(results[1], SMTPEnvelopeError)  # refused locally, never written
        assert isinstance(results[2], SMTPServerDisconnected)
        assert not isinstance(results[2], SMTPMaybeDelivered)
        assert isinstance(results[3], SMTPServerDisconnected)
        assert not conn.is_usable
    peer.check()


async def test_send_many_refusals_do_not_stop_the_batch() -> None:
    env = Envelope("a@x.test", "b@x.test")
    cmds = b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    script = greet(PIPE_EHLO) + [
        Expect(cmds), Send(b"250 ok\r\n550 no\r\n554 no recipients\r\n"),
        Expect(b"RSET\r\n"), Send(b"250 reset\r\n"),
        Expect(cmds), Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"m2\r\n.\r\n"), Send(b"250 two\r\n"),
    ] + QUIT
    async with ScriptedPeer(script) as peer:
        async with conn_for(peer) as conn:
            results = [r async for _, r in conn.send_many([(b"m1", env), (b"m2", env)])]
            assert isinstance(results[0], SMTPRecipientsRefused)
            assert results[1].response.message == "two"
    peer.check()
