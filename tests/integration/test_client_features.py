"""The client features nodemailer has: DKIM, proxies, DNS fallback and caching, REQUIRETLS.

Each against our own server (what arrived is checked: DKIM signatures verified by
dkimpy with a DNS stub, the peers the server saw) or scripted peers and proxies that
check exact bytes, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ssl
from email.message import EmailMessage
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastsmtp.connection import SMTPConnection
from fastsmtp.dkim import DKIMKey, DKIMSigner
from fastsmtp.errors import (
    SMTPConnectionError,
    SMTPInvalidMessage,
    SMTPProxyError,
    SMTPRequireTLSNotSupported,
)
from fastsmtp.message import Envelope
from fastsmtp.options import ConnectionOptions, parse_url
from fastsmtp.pool import SMTPPool

from support.peer import Expect, ScriptedPeer, Send, greet
from support.proxies import http_proxy, socks5_proxy
from support.server import Recorder, serve

ENV = Envelope("a@x.test", ["b@y.test"])
QUIT = [Expect(b"QUIT\r\n"), Send(b"221 bye\r\n")]
MESSAGE = (b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject: hello\r\n"
           b"Message-ID: <1@x.test>\r\n\r\nHello,\r\n.dotted line\r\nbye\r\n")


# -- DKIM ------------------------------------------------------------------------------------


def _key() -> tuple[bytes, bytes]:
    """A fresh RSA key: (private PEM, the DNS TXT record of its public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


KEY_A, TXT_A = _key()
KEY_B, TXT_B = _key()
DNS = {b"s1._domainkey.x.test.": TXT_A, b"s2._domainkey.other.test.": TXT_B}


def _dns(name: bytes, timeout: int = 5) -> bytes | None:
    return DNS.get(name)


def _verify(message: bytes, index: int = 0) -> bool:
    try:
        return bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=_dns))
    except dkimpy.DKIMException:
        return False


def _signer(**kwargs: Any) -> DKIMSigner:
    return DKIMSigner(DKIMKey("x.test", "s1", KEY_A), **kwargs)


async def _send_all(messages: list[Any], **options: Any) -> list[bytes]:
    recorder = Recorder()
    async with serve(recorder) as server:
        async with SMTPConnection("127.0.0.1", server.port, name="client.test",
                                  **options) as conn:
            for message in messages:
                await conn.send(message, ENV)
    return [content for _, _, content in recorder.messages]


async def test_dkim_signs_bytes_email_messages_and_files(tmp_path: Any) -> None:
    email_message = EmailMessage()
    email_message["From"] = "a@x.test"
    email_message["To"] = "b@y.test"
    email_message["Subject"] = "ünïcode"
    email_message.set_content("body\n.with a dot\n")
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))  # bare LF: signed as sent, CRLF
    with path.open("rb") as file:
        received = await _send_all([MESSAGE, email_message, file, MESSAGE.decode()],
                                   dkim=_signer())
    assert len(received) == 4
    for i, content in enumerate(received):
        assert content.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple;")
        assert _verify(content), (i, content)
    assert received[2].endswith(MESSAGE) and received[0].endswith(MESSAGE)
    # A changed body no longer verifies: the check is real.
    assert not _verify(received[0].replace(b"bye", b"BYE"))


async def test_dkim_several_keys_header_list_and_simple_canonicalisation() -> None:
    signer = DKIMSigner(
        [DKIMKey("x.test", "s1", KEY_A), DKIMKey("other.test", "s2", KEY_B.decode())],
        headers=["From", "Subject", "To"], canonicalize=("simple", "simple"),
    )
    (content,) = await _send_all([MESSAGE], dkim=signer)
    assert content.count(b"DKIM-Signature:") == 2
    assert b"c=simple/simple" in content and b"h=from : subject : to" in content.replace(
        b"\r\n ", b" ")
    assert _verify(content, 0) and _verify(content, 1)
    assert b"d=x.test" in content.split(b"DKIM-Signature:")[1]
    assert b"d=other.test" in content.split(b"DKIM-Signature:")[2]


async def test_dkim_option_from_a_nodemailer_mapping_and_on_a_pool() -> None:
    recorder = Recorder()
    async with serve(recorder) as server:
        async with SMTPPool(host="127.0.0.1", port=server.port, name="client.test",
                            dkim={"domainName": "x.test", "keySelector": "s1",
                                  "privateKey": KEY_A.decode()}) as pool:
            await pool.send(MESSAGE, ENV)
    assert _verify(recorder.messages[0][2])


async def test_dkim_refuses_a_one_shot_stream_before_mail() -> None:
    async def chunks() -> Any:
        yield MESSAGE

    script = greet(b"250 peer.test\r\n") + QUIT  # nothing between EHLO and QUIT
    async with ScriptedPeer(script) as peer:
        async with SMTPConnection("127.0.0.1", peer.port, name="client.test",
                                  dkim=_signer()) as conn:
            with pytest.raises(SMTPInvalidMessage, match="DKIM signing needs the whole message"):
                await conn.send(chunks(), ENV)
            with pytest.raises(SMTPInvalidMessage, match="DKIM"):
                await conn.send(iter([MESSAGE]), ENV)
            with pytest.raises(SMTPInvalidMessage, match="max_size"):
                big = DKIMSigner(DKIMKey("x.test", "s1", KEY_A), max_size=10)
                big.sign_payload(io.BytesIO(MESSAGE), iter([MESSAGE]))
    peer.check()


class RefuseFirst(Recorder):
    """451 to the first message, then accept (the pool retries the same message)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.seen += 1
        if self.seen == 1:
            return "451 4.3.0 try again"
        return await super().handle_DATA(server, session, envelope)


async def test_dkim_cache_resends_the_signed_file_on_a_retry(tmp_path: Any) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    recorder = RefuseFirst()
    signer = _signer(cache_size=4)
    async with serve(recorder) as server:
        async with SMTPPool(host="127.0.0.1", port=server.port, name="client.test",
                            dkim=signer, retry_delay=0.01) as pool:
            with path.open("rb") as file:
                await pool.send(file, ENV)
    # The file was read once; the retry sent the cached signed bytes, body included.
    (content,) = [m[2] for m in recorder.messages]
    assert recorder.seen == 2 and content.endswith(MESSAGE) and _verify(content)


def test_dkim_bad_options_are_clear() -> None:
    with pytest.raises(ValueError, match="not a PEM RSA private key"):
        DKIMSigner(DKIMKey("x.test", "s1", b"not a key"))
    with pytest.raises(ValueError, match="include 'from'"):
        _signer(headers=["subject"])
    with pytest.raises(ValueError, match="canonicalize"):
        _signer(canonicalize=("relaxed", "fancy"))
    with pytest.raises(TypeError, match="DKIMSigner or a mapping"):
        ConnectionOptions(dkim="x.test")  # type: ignore[arg-type]
    assert "BEGIN" not in repr(_signer()) and "hidden" in repr(_signer())


# -- proxies ---------------------------------------------------------------------------------


async def test_http_connect_proxy_carries_the_session() -> None:
    recorder = Recorder()
    async with serve(recorder) as server, http_proxy("u", "s3cret:x") as proxy:
        port = server.port
        url = f"http://u:s3cret%3Ax@127.0.0.1:{proxy.port}"
        async with SMTPConnection("127.0.0.1", server.port, name="client.test",
                                  proxy=url) as conn:
            assert "s3cret" not in repr(conn.options)
            await conn.send(MESSAGE, ENV)
    assert proxy.targets == [f"127.0.0.1:{port}"]
    assert proxy.credentials == ["u:s3cret:x"]
    assert proxy.requests[0] == (
        f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Proxy-Authorization: Basic {base64.b64encode(b'u:s3cret:x').decode()}\r\n\r\n"
    ).encode()
    assert recorder.messages[0][2] == MESSAGE


async def test_http_proxy_bad_credentials_name_the_reply_not_the_password() -> None:
    async with serve(Recorder()) as server, http_proxy("u", "right") as proxy:
        conn = SMTPConnection("127.0.0.1", server.port, name="client.test",
                              proxy=f"http://u:wrongpw@127.0.0.1:{proxy.port}")
        with pytest.raises(SMTPProxyError) as info:
            await conn.connect()
    message = str(info.value)
    assert "407 Proxy Authentication Required" in message and "wrongpw" not in message
    assert f"http://127.0.0.1:{proxy.port}" in message and info.value.code == "EPROXY"


async def test_socks5_proxy_with_username_and_password_from_a_url() -> None:
    recorder = Recorder()
    async with serve(recorder) as server, socks5_proxy("user", "pw") as proxy:
        port = server.port
        # ?proxy= in a pool URL; the SMTP host name is resolved by the proxy.
        url = (f"smtp://mail.test:{server.port}/?name=client.test"
               f"&proxy=socks5%3A%2F%2Fuser%3Apw%40127.0.0.1%3A{proxy.port}")
        assert parse_url(url)["proxy"] == f"socks5://user:pw@127.0.0.1:{proxy.port}"
        async with SMTPPool(url) as pool:
            await pool.send(MESSAGE, ENV)
    assert proxy.targets == [f"mail.test:{port}"]
    assert proxy.credentials == [("user", "pw")]
    assert recorder.messages[0][2] == MESSAGE


async def test_socks5_bad_credentials_are_a_proxy_error() -> None:
    async with serve(Recorder()) as server, socks5_proxy("user", "pw") as proxy:
        conn = SMTPConnection("127.0.0.1", server.port, name="client.test",
                              proxy=f"socks5://user:nope@127.0.0.1:{proxy.port}")
        with pytest.raises(SMTPProxyError, match="refused the tunnel") as info:
            await conn.connect()
    assert "nope" not in str(info.value) and proxy.credentials == [("user", "nope")]


async def test_an_unreachable_proxy_is_named() -> None:
    from support.ports import refused_port

    with refused_port() as port:
        conn = SMTPConnection("127.0.0.1", 25, name="client.test",
                              proxy=f"http://127.0.0.1:{port}")
        with pytest.raises(SMTPProxyError, match=f"cannot reach the proxy http://127.0.0.1:{port}"):
            await conn.connect()


def test_bad_proxy_urls() -> None:
    with pytest.raises(ValueError, match="unsupported proxy scheme 'ftp'"):
        ConnectionOptions(proxy="ftp://h:1")
    with pytest.raises(ValueError, match="no host"):
        ConnectionOptions(proxy="http://:8080")
    with pytest.raises(ValueError, match="user id only"):
        ConnectionOptions(proxy="socks4://u:p@h")
    assert ConnectionOptions(proxy="socks5://h").proxy_url.port == 1080  # type: ignore[union-attr]


# -- DNS -------------------------------------------------------------------------------------


class CountingResolver:
    """A resolver hook: ``mail.test`` is 127.0.0.2 (nothing listens) then 127.0.0.1."""

    def __init__(self, addresses: list[str] | None = None) -> None:
        self.calls: list[str] = []
        self.addresses = addresses or ["127.0.0.2", "127.0.0.1"]

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        await asyncio.sleep(0)  # a real lookup yields: concurrent callers overlap
        return self.addresses


async def test_a_dead_first_address_moves_on_to_the_next() -> None:
    resolver = CountingResolver()
    recorder = Recorder()
    async with serve(recorder) as server:
        # A long delay: the refused first address must not make the client wait for it.
        async with SMTPConnection("mail.test", server.port, name="client.test",
                                  resolver=resolver, happy_eyeballs_delay=60,
                                  connection_timeout=30) as conn:
            assert conn._proto is not None
            assert conn._proto.transport.get_extra_info("peername")[0] == "127.0.0.1"
            await conn.send(MESSAGE, ENV)
    assert resolver.calls == ["mail.test"] and len(recorder.messages) == 1


async def test_every_address_dead_names_each_one() -> None:
    from support.ports import refused_port

    with refused_port() as port:
        conn = SMTPConnection("mail.test", port, name="client.test",
                              resolver=CountingResolver(["127.0.0.2", "127.0.0.3"]))
        with pytest.raises(SMTPConnectionError, match="127.0.0.2.*127.0.0.3"):
            await conn.connect()


class Peers(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.peers: set[Any] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.add(session.peer)
        return await super().handle_DATA(server, session, envelope)


async def test_a_pool_resolves_once_for_eight_connections() -> None:
    resolver = CountingResolver()
    recorder = Peers()
    async with serve(recorder) as server:
        async with SMTPPool(host="mail.test", port=server.port, name="client.test",
                            resolver=resolver, max_connections=8) as pool:
            await asyncio.gather(*(pool.send(MESSAGE, ENV) for _ in range(8)))
            await pool.send(MESSAGE, ENV)
    assert len(recorder.messages) == 9
    assert len(recorder.peers) == 8  # eight connections ...
    assert resolver.calls == ["mail.test"]  # ... one resolution
    assert pool.options.dns_cache.lookups == 1


async def test_without_a_cache_each_connection_resolves() -> None:
    resolver = CountingResolver(["127.0.0.1"])
    async with serve(Recorder()) as server:
        options = ConnectionOptions("mail.test", server.port, name="client.test",
                                    resolver=resolver, dns_cache_ttl=0)
        for _ in range(2):
            async with SMTPConnection(options=options):
                pass
    assert resolver.calls == ["mail.test", "mail.test"]


async def test_the_default_resolver_finds_localhost() -> None:
    async with serve(Recorder()) as server:
        async with SMTPConnection("localhost", server.port, name="client.test") as conn:
            assert conn.is_connected
            assert conn.options.dns_cache.lookups == 1


# -- REQUIRETLS (RFC 8689) -------------------------------------------------------------------

TLS_EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250 REQUIRETLS\r\n"
TLS_ENV = Envelope("a@x.test", ["b@y.test"], require_tls=True)


async def test_requiretls_is_sent_on_mail_when_offered_over_tls(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    script = greet(TLS_EHLO) + [
        Expect(b"MAIL FROM:<a@x.test> REQUIRETLS\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"hi\r\n.\r\n"),
        Send(b"250 queued\r\n"),
        Expect(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
        Send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        Expect(b"hi\r\n.\r\n"),
        Send(b"250 queued\r\n"),
    ] + QUIT
    async with ScriptedPeer(script, tls=server_ssl_context) as peer:
        async with SMTPConnection("127.0.0.1", peer.port, name="client.test", secure=True,
                                  tls=client_ssl_context) as conn:
            await conn.send(b"hi", TLS_ENV)
            await conn.send(b"hi", ENV)  # without the flag: no parameter
    peer.check()


async def test_requiretls_not_offered_fails_before_mail(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    script = greet(b"250-peer.test\r\n250 PIPELINING\r\n") + QUIT
    async with ScriptedPeer(script, tls=server_ssl_context) as peer:
        async with SMTPConnection("127.0.0.1", peer.port, name="client.test", secure=True,
                                  tls=client_ssl_context) as conn:
            with pytest.raises(SMTPRequireTLSNotSupported, match="does not offer REQUIRETLS") \
                    as info:
                await conn.send(b"hi", TLS_ENV)
    assert info.value.code == "EREQUIRETLS"
    peer.check()


async def test_requiretls_offered_in_plaintext_is_not_trusted() -> None:
    script = greet(TLS_EHLO) + QUIT
    async with ScriptedPeer(script) as peer:
        async with SMTPConnection("127.0.0.1", peer.port, name="client.test") as conn:
            results = [r async for _, r in conn.send_many([(b"hi", TLS_ENV)])]
    assert isinstance(results[0], SMTPRequireTLSNotSupported)
    assert "not TLS" in str(results[0])
    peer.check()


def test_require_tls_must_be_a_bool() -> None:
    from fastsmtp.errors import SMTPInvalidEnvelope

    with pytest.raises(SMTPInvalidEnvelope, match="require_tls"):
        Envelope("a@x.test", "b@y.test", require_tls="yes")  # type: ignore[arg-type]
    assert not ENV.require_tls and TLS_ENV.require_tls
