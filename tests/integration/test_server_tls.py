"""The server's simplesmtp-style ``credentials``: PEM files or PEM text, STARTTLS or SMTPS.

Each test completes a real TLS handshake over loopback with verification on, so a wrong
certificate, a key that was not loaded, or a context used for the wrong mode fails it.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from fastsmtp import SMTPConnection, make_server_ssl_context
from fastsmtp.handlers import Sink
from fastsmtp.message import Envelope
from fastsmtp.server import SMTPServer

ENV = Envelope("alice@example.com", ["bob@example.com"])
BODY = b"Subject: tls\r\n\r\nover TLS\r\n"


class TLSRecorder:
    """Records, for every message, whether its session was protected by TLS."""

    def __init__(self) -> None:
        self.tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.tls.append(session.ssl is not None and envelope.content == BODY)
        return "250 OK"


def leftover_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("fastsmtp-tls-*")}


def pem_files(tls_cert: Any, directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    for blob in tls_cert.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    tls_cert.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def pem_text(tls_cert: Any) -> tuple[str, str]:
    chain = "".join(blob.bytes().decode() for blob in tls_cert.cert_chain_pems)
    return chain, tls_cert.private_key_pem.bytes().decode()


async def send_with_starttls(port: int, client_ssl_context: ssl.SSLContext) -> None:
    async with SMTPConnection(host="127.0.0.1", port=port, require_tls=True,
                              tls=client_ssl_context) as conn:
        result = await conn.send(BODY, ENV)
        assert result.accepted == ["bob@example.com"]


@pytest.mark.parametrize("form", ["paths", "pem-text", "pem-bytes"])
async def test_credentials_offer_starttls(form: str, tls_cert: Any, tmp_path: Path,
                                          client_ssl_context: ssl.SSLContext) -> None:
    if form == "paths":
        cert, key = pem_files(tls_cert, tmp_path)
        credentials: dict[str, Any] = {"cert": cert, "key": key}
    else:
        cert, key = pem_text(tls_cert)
        credentials = {"cert": cert, "key": key}
        if form == "pem-bytes":
            credentials = {"cert": cert.encode(), "key": key.encode()}
    before = leftover_temp_dirs()
    handler = TLSRecorder()
    server = SMTPServer(handler, credentials=credentials)
    assert leftover_temp_dirs() == before  # PEM text was loaded and its files removed
    await server.start()
    try:
        await send_with_starttls(server.port, client_ssl_context)
    finally:
        await server.close()
    assert handler.tls == [True]


async def test_credentials_with_secure_mean_implicit_tls(tls_cert: Any,
                                                         client_ssl_context: ssl.SSLContext) -> None:
    cert, key = pem_text(tls_cert)
    handler = TLSRecorder()
    server = SMTPServer(handler, secure=True, credentials={"cert": cert, "key": key})
    await server.start()
    try:
        # A peer's client: aiosmtplib over implicit TLS, verifying the chain.
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, use_tls=True,
                                 tls_context=client_ssl_context)
        async with client:
            errors, _ = await client.sendmail(ENV.mail_from, ENV.rcpt_to, BODY)
        assert errors == {}
    finally:
        await server.close()
    assert handler.tls == [True]


async def test_certificate_and_key_in_one_file(tls_cert: Any, tmp_path: Path,
                                               client_ssl_context: ssl.SSLContext) -> None:
    both = tmp_path / "both.pem"
    tls_cert.private_key_and_cert_chain_pem.write_to_path(str(both))
    server = SMTPServer(Sink(), tls_context=make_server_ssl_context(str(both)))
    await server.start()
    try:
        await send_with_starttls(server.port, client_ssl_context)
    finally:
        await server.close()


async def test_ca_verifies_client_certificates(tls_ca: Any, tls_cert: Any,
                                               client_ssl_context: ssl.SSLContext) -> None:
    cert, key = pem_text(tls_cert)
    ca = tls_ca.cert_pem.bytes().decode()
    context = make_server_ssl_context(cert, key, ca=ca)
    assert context.verify_mode == ssl.CERT_OPTIONAL
    server = SMTPServer(Sink(), tls_context=context)
    await server.start()
    try:
        await send_with_starttls(server.port, client_ssl_context)  # no client cert: allowed
    finally:
        await server.close()


def test_bad_credentials_are_refused(tls_cert: Any, tls_ca: Any, tmp_path: Path) -> None:
    cert, key = pem_text(tls_cert)
    with pytest.raises(ValueError, match="unknown credentials"):
        SMTPServer(Sink(), credentials={"cert": cert, "key": key, "passphrase": "x"})
    with pytest.raises(ValueError, match="need a certificate"):
        SMTPServer(Sink(), credentials={"key": key})
    with pytest.raises(ValueError, match="not both"):
        SMTPServer(Sink(), tls_context=make_server_ssl_context(cert, key),
                   credentials={"cert": cert, "key": key})
    with pytest.raises(ValueError, match="ssl_context or credentials"):
        SMTPServer(Sink(), secure=True)
    # A key that does not belong to the certificate is an SSL error at construction.
    other_key = tls_ca.issue_cert("other.example").private_key_pem.bytes().decode()
    with pytest.raises(ssl.SSLError):
        SMTPServer(Sink(), credentials={"cert": cert, "key": other_key})
    with pytest.raises(OSError):
        SMTPServer(Sink(), credentials={"cert": str(tmp_path / "missing.pem")})
