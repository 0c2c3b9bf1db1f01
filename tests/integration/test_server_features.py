"""Server features from smtp-server and Postfix over real sockets, exact bytes in and out.

PROXY protocol v1/v2 (headers written by hand), XCLIENT, XFORWARD, SNI, the ``hide_*``
options, DSN parameters, the greeting delay (early talkers) and the command caps.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import struct
from typing import Any

import pytest
from support.server import WAIT, RawClient, Recorder, greeted, serve

from fastsmtp.server import ProxyHeader
from fastsmtp.server.auth import AuthResult
from fastsmtp.server.proxy import V2_SIGNATURE

GREETING = b"220 test.local ESMTP fastsmtp ready\r\n"
TRANSACTION = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\nHi\r\n.\r\n"
TRANSACTION_REPLIES = (
    b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 OK: queued\r\n"
)


class SessionRecorder(Recorder):
    """Records, for each message, the session and the envelope the handler saw."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[Any] = []
        self.rcpt_options: list[list[str]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> None:
        self.rcpt_options.append(list(options))
        return None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.append(session)
        return await super().handle_DATA(server, session, envelope)


# -- PROXY protocol ------------------------------------------------------------------------

PROXY_OPTIONS: dict[str, Any] = {"proxy_protocol": True, "proxy_trusted": ["127.0.0.1/32"]}


def v2_tcp4(src: str, sport: int, dst: str, dport: int, command: int = 0x21) -> bytes:
    payload = bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", command, 0x11, len(payload)) + payload


async def test_proxy_v1_header_makes_the_real_client_the_peer() -> None:
    handler = SessionRecorder()
    async with serve(handler, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        await client.send(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n")
        await client.expect(GREETING)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    session = handler.sessions[0]
    assert session.peer == ("192.0.2.10", 40000)
    assert session.proxy_data == ProxyHeader(
        1, "PROXY", "TCP4", ("192.0.2.10", 40000), ("198.51.100.1", 25)
    )


async def test_proxy_v2_header_byte_by_byte_then_smtp() -> None:
    handler = SessionRecorder()
    async with serve(handler, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        for byte in v2_tcp4("203.0.113.5", 5555, "198.51.100.1", 587):
            await client.send(bytes([byte]))  # the server sees partial headers
        await client.expect(GREETING)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    assert handler.sessions[0].peer == ("203.0.113.5", 5555)
    assert handler.sessions[0].proxy_data.version == 2


async def test_proxy_v2_ipv6_with_smtp_in_the_same_segment() -> None:
    handler = SessionRecorder()
    src = bytes.fromhex("20010db8000000000000000000000007")
    payload = src + bytes(16) + struct.pack("!HH", 1234, 25) + struct.pack("!BH", 0x05, 2) + b"id"
    header = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(payload)) + payload
    async with serve(handler, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        # What followed the header in the same read is the client's first command.
        await client.send(header + b"EHLO me\r\n")
        await client.expect(GREETING)
        assert (await client.reply()).startswith(b"250-test.local\r\n")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    assert handler.sessions[0].peer == ("2001:db8::7", 1234, 0, 0)
    assert handler.sessions[0].proxy_data.tlvs == [(0x05, b"id")]


async def test_proxy_v2_local_and_v1_unknown_keep_the_real_peer() -> None:
    handler = SessionRecorder()
    async with serve(handler, **PROXY_OPTIONS) as server:
        for header in (v2_tcp4("192.0.2.1", 1, "192.0.2.2", 2, command=0x20), b"PROXY UNKNOWN\r\n"):
            client = await RawClient.connect(server.port)
            await client.send(header)
            await client.expect(GREETING)
            await client.command(b"EHLO me")
            await client.send(TRANSACTION)
            await client.expect(TRANSACTION_REPLIES)
            local = client.writer.get_extra_info("sockname")
            await client.close()
            assert handler.sessions[-1].peer == local
    assert [s.proxy_data.command for s in handler.sessions] == ["LOCAL", "LOCAL"]


@pytest.mark.parametrize(
    "header",
    [
        b"EHLO me\r\n",  # no header at all from a trusted proxy
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",  # over the 107-byte bound
        V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 60000),  # v2 length over the bound
    ],
)
async def test_bad_proxy_header_closes_without_a_reply(header: bytes) -> None:
    handler = Recorder()
    async with serve(handler, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        await client.send(header)
        assert await client.eof() == b""
        await client.close()
    assert handler.messages == []


async def test_proxy_header_timeout_closes() -> None:
    async with serve(Recorder(), proxy_timeout=0.2, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        await client.send(b"PROXY TCP4 1.2.3.4")  # and nothing more
        assert await client.eof() == b""
        await client.close()


async def test_untrusted_source_is_a_direct_connection() -> None:
    handler = SessionRecorder()
    async with serve(handler, proxy_protocol=True, proxy_trusted=["10.0.0.0/8"]) as server:
        client = await greeted(server.port)
        # A PROXY header from outside the trusted networks is just an unknown command.
        assert await client.command(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2") == (
            b'500 5.5.2 Error: command "PROXY" not recognized\r\n'
        )
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        local = client.writer.get_extra_info("sockname")
        await client.close()
    assert handler.sessions[0].peer == local
    assert handler.sessions[0].proxy_data is None


def test_proxy_options_are_checked() -> None:
    from fastsmtp.server import SMTPServer

    with pytest.raises(ValueError, match="proxy_trusted"):
        SMTPServer(Recorder(), proxy_protocol=True)
    with pytest.raises(ValueError, match="proxy_protocol=True"):
        SMTPServer(Recorder(), proxy_trusted=["127.0.0.1"])
    with pytest.raises(ValueError, match="not an IP network"):
        SMTPServer(Recorder(), proxy_protocol=True, proxy_trusted=["localhost"])
    with pytest.raises(ValueError, match="not an IP network"):
        SMTPServer(Recorder(), xclient_trusted=["10.0.0.0/33"])


# -- XCLIENT / XFORWARD ----------------------------------------------------------------------

XCLIENT_CAP = b"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n"
XFORWARD_CAP = b"250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"


async def test_xclient_replaces_the_client_and_restarts_the_session() -> None:
    handler = SessionRecorder()
    async with serve(handler, xclient_trusted=["127.0.0.0/8"]) as server:
        client = await greeted(server.port)
        ehlo = await client.command(b"EHLO me")
        assert XCLIENT_CAP in ehlo
        reply = await client.command(
            b"XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=4321 HELO=relay+2Eexample LOGIN=bob"
        )
        assert reply == GREETING  # a new session, as if the client had just connected
        assert await client.command(b"MAIL FROM:<a@x.org>") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        # IPv6, as Postfix spells it, and the placeholder for an unknown name.
        reply = await client.command(b"XCLIENT ADDR=IPV6:2001:db8::5 NAME=[UNAVAILABLE]")
        assert reply == GREETING
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    first, second = handler.sessions
    assert first.peer == ("168.100.189.2", 4321)
    assert dict(first.xclient) == {
        "NAME": "spike.porcupine.org",
        "ADDR": "168.100.189.2",
        "PORT": "4321",
        "HELO": "relay.example",
        "LOGIN": "bob",
    }
    assert first.authenticated is True and first.auth_data == "bob"
    assert first.host_name == "me"  # the EHLO after XCLIENT
    assert second.peer == ("2001:db8::5", 4321, 0, 0)
    assert second.xclient["NAME"] is None


async def test_xclient_refusals() -> None:
    async with serve(Recorder(), xclient_trusted=["127.0.0.1"]) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"XCLIENT") == (
            b"501 5.5.4 Syntax: XCLIENT attribute=value ... (NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT)\r\n"
        )
        for bad in (b"XCLIENT FOO=1", b"XCLIENT ADDR=1.2.3.999", b"XCLIENT PORT=70000",
                    b"XCLIENT PROTO=HTTP", b"XCLIENT NAME=a+0Ab", b"XCLIENT NAME"):
            assert (await client.command(bad)).startswith(b"501 5.5.4 Syntax: XCLIENT"), bad
        await client.command(b"MAIL FROM:<a@x.org>")
        assert await client.command(b"XCLIENT ADDR=192.0.2.1") == (
            b"503 5.5.1 Error: MAIL transaction in progress\r\n"
        )
        await client.close()
    async with serve(Recorder(), xclient_trusted=["10.0.0.0/8"]) as server:
        client = await greeted(server.port)
        assert XCLIENT_CAP not in await client.command(b"EHLO me")  # not advertised to others
        assert await client.command(b"XCLIENT ADDR=192.0.2.1") == (
            b"550 5.7.0 Error: insufficient authorization\r\n"
        )
        await client.close()
    async with serve(Recorder()) as server:
        client = await greeted(server.port)
        assert await client.command(b"XCLIENT ADDR=192.0.2.1") == (
            b'500 5.5.2 Error: command "XCLIENT" not recognized\r\n'
        )
        await client.close()


async def test_xforward_attributes_reach_the_handler_for_one_transaction() -> None:
    handler = SessionRecorder()
    async with serve(handler, xforward_trusted=["127.0.0.1/32"]) as server:
        client = await greeted(server.port)
        assert XFORWARD_CAP in await client.command(b"EHLO me")
        assert await client.command(b"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP") == (
            b"250 2.0.0 Ok\r\n"
        )
        assert await client.command(b"XFORWARD HELO=spike.porcupine.org SOURCE=REMOTE IDENT=[UNAVAILABLE]") == (
            b"250 2.0.0 Ok\r\n"
        )
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.send(TRANSACTION)  # the next transaction starts without them
        await client.expect(TRANSACTION_REPLIES)
        await client.command(b"MAIL FROM:<a@x.org>")
        assert await client.command(b"XFORWARD NAME=x") == b"503 5.5.1 Error: MAIL transaction in progress\r\n"
        assert (await client.command(b"RSET")) == b"250 2.0.0 OK\r\n"
        assert (await client.command(b"XFORWARD SOURCE=ELSEWHERE")).startswith(b"501 5.5.4 Syntax: XFORWARD")
        await client.close()
    first, second = handler.envelopes
    assert first.xforward == {
        "NAME": "spike.porcupine.org",
        "ADDR": "168.100.189.2",
        "PROTO": "ESMTP",
        "HELO": "spike.porcupine.org",
        "SOURCE": "REMOTE",
        "IDENT": None,
    }
    assert dict(second.xforward) == {}
    async with serve(Recorder(), xforward_trusted=["10.0.0.0/8"]) as server:
        client = await greeted(server.port)
        assert XFORWARD_CAP not in await client.command(b"EHLO me")
        assert await client.command(b"XFORWARD NAME=x") == b"550 5.7.0 Error: insufficient authorization\r\n"
        await client.close()


# -- SNI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sni_contexts(tls_ca: Any) -> dict[str, Any]:
    """Two certificates, one per name, plus the default (localhost), each its own context."""
    out: dict[str, Any] = {}
    for name in ("mail.a.example", "mail.b.example", "localhost"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_ca.issue_cert(name).configure_cert(ctx)
        out[name] = ctx
    return out


def fresh_default(tls_ca: Any) -> ssl.SSLContext:
    # SNI installs a callback on the default context: never on a shared fixture's.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


def presented_name(writer: asyncio.StreamWriter) -> str:
    """The DNS name in the certificate the server presented."""
    cert = writer.get_extra_info("peercert")
    names = [value for kind, value in cert["subjectAltName"] if kind == "DNS"]
    assert len(names) == 1, names
    return str(names[0])


async def test_sni_picks_the_certificate_for_starttls(
    tls_ca: Any, sni_contexts: dict[str, Any], client_ssl_context: ssl.SSLContext
) -> None:
    sni = {"mail.a.example": sni_contexts["mail.a.example"], "MAIL.B.example": sni_contexts["mail.b.example"]}
    async with serve(Recorder(), tls_context=fresh_default(tls_ca), sni=sni) as server:
        for name in ("mail.a.example", "mail.b.example", "localhost"):
            client = await greeted(server.port)
            await client.command(b"EHLO me")
            assert await client.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
            # Verification is on: the handshake succeeds only with a certificate for ``name``.
            await asyncio.wait_for(client.writer.start_tls(client_ssl_context, server_hostname=name), WAIT)
            assert presented_name(client.writer) == name
            await client.command(b"EHLO me")
            await client.send(TRANSACTION)
            await client.expect(TRANSACTION_REPLIES)
            await client.close()


async def test_sni_callback_with_implicit_tls(
    tls_ca: Any, sni_contexts: dict[str, Any], client_ssl_context: ssl.SSLContext
) -> None:
    asked: list[str | None] = []

    def pick(name: str | None) -> ssl.SSLContext | None:
        asked.append(name)
        return sni_contexts.get(name or "")

    async with serve(Recorder(), secure=True, ssl_context=fresh_default(tls_ca), sni_callback=pick) as server:
        for name in ("mail.b.example", "mail.a.example"):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", server.port, ssl=client_ssl_context, server_hostname=name),
                WAIT,
            )
            client = RawClient(reader, writer)
            await client.expect(GREETING)
            assert presented_name(writer) == name
            await client.close()
    assert asked == ["mail.b.example", "mail.a.example"]


def test_sni_needs_a_default_context(sni_contexts: dict[str, Any]) -> None:
    from fastsmtp.server import SMTPServer

    with pytest.raises(ValueError, match="default context"):
        SMTPServer(Recorder(), sni={"a": sni_contexts["localhost"]})
    with pytest.raises(ValueError, match="ssl.SSLContext"):
        SMTPServer(Recorder(), tls_context=sni_contexts["localhost"], sni={"a": "cert.pem"})


# -- hide_* -------------------------------------------------------------------------------------


async def test_hidden_extensions_are_neither_advertised_nor_accepted() -> None:
    options = {"hide_pipelining": True, "hide_size": True, "hide_8bitmime": True,
               "hide_smtputf8": True, "hide_chunking": True}
    async with serve(Recorder(), **options) as server:
        client = await greeted(server.port)
        await client.send(b"EHLO me\r\n")
        await client.expect(b"250-test.local\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n")
        refused = b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"
        assert await client.command(b"MAIL FROM:<a@x.org> SIZE=10") == refused
        assert await client.command(b"MAIL FROM:<a@x.org> BODY=8BITMIME") == refused
        assert await client.command(b"MAIL FROM:<a@x.org> SMTPUTF8") == refused
        # The size limit itself still holds while the data arrives.
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()


async def test_hide_size_still_enforces_max_size() -> None:
    async with serve(Recorder(), hide_size=True, max_size=10) as server:
        client = await greeted(server.port)
        assert b"SIZE" not in await client.command(b"EHLO me")
        await client.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n" + b"x" * 50 + b"\r\n.\r\n")
        await client.expect(
            b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            b"552 5.3.4 Error: message size exceeds fixed maximum message size\r\n"
        )
        await client.close()


async def test_hide_starttls(server_ssl_context: ssl.SSLContext) -> None:
    async with serve(Recorder(), tls_context=server_ssl_context, hide_starttls=True) as server:
        client = await greeted(server.port)
        assert b"STARTTLS" not in await client.command(b"EHLO me")
        assert await client.command(b"STARTTLS") == b"502 5.5.1 Error: command not implemented\r\n"
        assert b"STARTTLS" not in await client.command(b"HELP")
        await client.close()
    from fastsmtp.server import SMTPServer

    with pytest.raises(ValueError, match="hide_starttls"):
        SMTPServer(Recorder(), tls_context=server_ssl_context, hide_starttls=True, require_tls=True)


# -- DSN ---------------------------------------------------------------------------------------


async def test_dsn_parameters_are_parsed_and_given_to_handlers() -> None:
    handler = SessionRecorder()
    async with serve(handler, dsn=True) as server:
        client = await greeted(server.port)
        await client.send(b"EHLO me\r\n")
        await client.expect(
            b"250-test.local\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n"
            b"250-CHUNKING\r\n250-BINARYMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        )
        await client.send(
            b"MAIL FROM:<a@x.org> RET=HDRS ENVID=QQ314159+2Bx\r\n"
            b"RCPT TO:<b@y.org> NOTIFY=SUCCESS,delay ORCPT=rfc822;b+40y.org\r\n"
            b"RCPT TO:<c@y.org> NOTIFY=NEVER\r\n"
            b"RCPT TO:<d@y.org>\r\n"
            b"DATA\r\nHi\r\n.\r\n"
        )
        await client.expect(
            b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n"
            b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 OK: queued\r\n"
        )
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    first, second = handler.envelopes
    assert first.dsn_ret == "HDRS"
    assert first.dsn_envid == "QQ314159+x"
    assert first.rcpt_dsn == {
        "b@y.org": {"notify": ["SUCCESS", "DELAY"], "orcpt": ("rfc822", "b@y.org")},
        "c@y.org": {"notify": ["NEVER"]},
    }
    assert first.mail_options == ["RET=HDRS", "ENVID=QQ314159+2Bx"]
    assert handler.rcpt_options[:3] == [
        ["NOTIFY=SUCCESS,delay", "ORCPT=rfc822;b+40y.org"], ["NOTIFY=NEVER"], []
    ]
    assert (second.dsn_ret, second.dsn_envid, dict(second.rcpt_dsn)) == (None, None, {})


@pytest.mark.parametrize(
    "command, reply",
    [
        (b"MAIL FROM:<a@x.org> RET=BOGUS", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"MAIL FROM:<a@x.org> RET=FULL RET=HDRS", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"MAIL FROM:<a@x.org> ENVID=a+zz", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"MAIL FROM:<a@x.org> ENVID=a+0D+0AQUIT", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"MAIL FROM:<a@x.org> ENVID=" + b"x" * 101, b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> NOTIFY=NEVER,SUCCESS", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> NOTIFY=SUCCESS,SUCCESS", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> NOTIFY=SOMETIMES", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> ORCPT=rfc822", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> ORCPT=rfc822;a+zz", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> NOTIFY=NEVER NOTIFY=NEVER", b"501 5.5.4 Error: malformed DSN parameter\r\n"),
        (b"RCPT TO:<b@y.org> X-OTHER=1",
         b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"),
    ],
)
async def test_malformed_dsn_parameters_are_refused(command: bytes, reply: bytes) -> None:
    handler = SessionRecorder()
    async with serve(handler, dsn=True) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        if command.startswith(b"RCPT"):
            await client.command(b"MAIL FROM:<a@x.org>")
        assert await client.command(command) == reply
        await client.close()


@pytest.mark.parametrize("options", [{}, {"dsn": True, "hide_dsn": True}])
async def test_without_dsn_its_parameters_are_unknown(options: dict[str, Any]) -> None:
    async with serve(Recorder(), **options) as server:
        client = await greeted(server.port)
        assert b"DSN" not in await client.command(b"EHLO me")
        refused = b"555 5.5.4 Error: parameters not recognized or not implemented\r\n"
        assert await client.command(b"MAIL FROM:<a@x.org> RET=FULL") == refused
        await client.command(b"MAIL FROM:<a@x.org>")
        assert await client.command(b"RCPT TO:<b@y.org> NOTIFY=NEVER") == refused
        await client.close()


# -- abuse limits -------------------------------------------------------------------------------


async def test_early_talker_gets_554_and_is_closed() -> None:
    handler = Recorder()
    # A long pause: the client below certainly talks before it ends.
    async with serve(handler, greeting_delay=30) as server:
        client = await RawClient.connect(server.port)
        await client.send(b"EHLO me\r\n")
        assert await client.eof() == b"554 5.5.0 test.local Error: you talk too soon, closing connection\r\n"
        await client.close()


async def test_patient_client_is_greeted_after_the_delay() -> None:
    async with serve(Recorder(), greeting_delay=0.1) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()


async def test_greeting_delay_after_a_proxy_header_catches_early_talk() -> None:
    async with serve(Recorder(), greeting_delay=30, **PROXY_OPTIONS) as server:
        client = await RawClient.connect(server.port)
        await client.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 25\r\nEHLO me\r\n")
        assert await client.eof() == b"554 5.5.0 test.local Error: you talk too soon, closing connection\r\n"
        await client.close()


async def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=data.password == b"secret")


async def test_unauthenticated_command_cap() -> None:
    options = {"require_auth": True, "auth_require_tls": False, "authenticator": authenticate,
               "max_unauthenticated_commands": 3}
    async with serve(Recorder(), **options) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        assert await client.command(b"MAIL FROM:<a@x.org>") == b"530 5.7.0 Authentication required\r\n"
        await client.send(b"NOOP\r\n")
        assert await client.eof() == b"421 4.7.0 test.local Error: too many unauthenticated commands\r\n"
        await client.close()
        # AUTH is not counted, and once authenticated the cap no longer applies.
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        token = base64.b64encode(b"\x00user\x00wrong")
        assert (await client.command(b"AUTH PLAIN " + token)).startswith(b"535 ")
        assert (await client.command(b"AUTH PLAIN " + token)).startswith(b"535 ")
        assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        token = base64.b64encode(b"\x00user\x00secret")
        assert await client.command(b"AUTH PLAIN " + token) == b"235 2.7.0 Authentication successful\r\n"
        for _ in range(5):
            assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()


async def test_unauthenticated_cap_applies_only_when_auth_is_required() -> None:
    async with serve(Recorder(), max_unauthenticated_commands=1) as server:
        client = await greeted(server.port)
        for _ in range(3):
            assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"
        await client.close()


async def test_bad_command_cap_is_an_option() -> None:
    async with serve(Recorder(), max_bad_commands=2) as server:
        client = await greeted(server.port)
        for _ in range(2):
            assert await client.command(b"FOO") == b'500 5.5.2 Error: command "FOO" not recognized\r\n'
        assert await client.command(b"NOOP") == b"250 2.0.0 OK\r\n"  # good commands do not reset it
        await client.send(b"BAR\r\n")
        assert await client.eof() == b"421 4.7.0 test.local Error: too many bad commands, closing connection\r\n"
        await client.close()


class RefusingMail(SessionRecorder):
    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> Any:
        if address == "no@x.org":
            return "550 5.7.1 not you"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"


async def test_dsn_values_of_a_refused_mail_do_not_stay() -> None:
    handler = RefusingMail()
    async with serve(handler, dsn=True) as server:
        client = await greeted(server.port)
        await client.command(b"EHLO me")
        assert await client.command(b"MAIL FROM:<no@x.org> RET=FULL ENVID=x") == b"550 5.7.1 not you\r\n"
        await client.send(TRANSACTION)
        await client.expect(TRANSACTION_REPLIES)
        await client.close()
    assert (handler.envelopes[0].dsn_ret, handler.envelopes[0].dsn_envid) == (None, None)
