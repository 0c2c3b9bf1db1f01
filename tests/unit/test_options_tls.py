"""Issue 10, finding 5: a TLS context is built only when TLS is used, the default once."""

from __future__ import annotations

import ssl

import pytest

from fastsmtp.connection import SMTPConnection
from fastsmtp.options import ConnectionOptions, default_ssl_context, parse_url

from support.server import serve


async def test_a_plaintext_connection_builds_no_tls_context() -> None:
    async with serve() as server:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True) as conn:
            assert not conn.secure
        # Nothing asked for the context: it was never built (no CA store loaded).
        assert conn.options._ssl_context is None


def test_the_default_context_is_built_once_per_process() -> None:
    a, b = ConnectionOptions(), ConnectionOptions(port=25)
    assert a.ssl_context is b.ssl_context is default_ssl_context()
    assert a.ssl_context.verify_mode == ssl.CERT_REQUIRED and a.ssl_context.check_hostname


def test_a_tls_mapping_is_checked_at_once_and_built_on_first_use() -> None:
    with pytest.raises(ValueError, match="unknown tls option"):
        ConnectionOptions(ignore_tls=True, tls={"cafle": "x"})
    opts = ConnectionOptions(tls={"verify": False})
    assert opts._ssl_context is None
    ctx = opts.ssl_context
    assert ctx.verify_mode == ssl.CERT_NONE and opts.ssl_context is ctx
    given = ssl.create_default_context()
    assert ConnectionOptions(tls=given).ssl_context is given


def test_url_tls_cafile() -> None:
    options = parse_url("smtps://mail.example.com:465/?tls.cafile=/etc/ca.pem")
    assert options["tls"] == {"cafile": "/etc/ca.pem"} and options["secure"] is True
    ConnectionOptions(host=options["host"], port=options["port"], secure=True,
                      tls=options["tls"])  # accepted as is
