"""A pytest plugin: the ``smtp_server`` fixture, a throwaway SMTP server for tests.

Installing fastsmtp registers this module through the ``pytest11`` entry point, so the
fixture is available in every test suite (``-p fastsmtp.testing`` loads it explicitly,
e.g. from a source checkout; ``-p no:fastsmtp`` disables it).

The server listens on 127.0.0.1, on a port the kernel picks, and runs on its own event
loop in a thread, so sync tests (smtplib, Django) and async tests (on any loop) talk to it
alike. Every received message is kept (:class:`fastsmtp.handlers.Collector`)::

    def test_signup_mail(smtp_server):
        with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
            client.sendmail("me@example.com", ["you@example.org"], b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        (received,) = smtp_server.messages
        assert received.rcpt_tos == ["you@example.org"]
        assert received.message["Subject"] == "hi"

Options come from the marker ``@pytest.mark.smtp_server(...)``: ``users={"u": "p"}``
(accepted logins; offers AUTH), ``require_auth=True`` (refuse MAIL before AUTH),
``tls=True`` (offer STARTTLS), ``secure=True`` (implicit TLS), and any other
:class:`~fastsmtp.server.ServerConfig` option (``max_size=...``, ``lmtp=True`` ...). With
``tls`` or ``secure`` the server presents a certificate for ``localhost`` and
``127.0.0.1`` from a throwaway CA, handed to the client as ``smtp_server.tls_context``
(an :class:`ssl.SSLContext` that trusts it) and ``smtp_server.cafile`` (its PEM file);
this needs the ``trustme`` package. AUTH is accepted without TLS unless the marker says
``auth_require_tls=True``: this is a test server.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .server.handlers import Collector, ReceivedMessage
from .server.thread import SMTPServerThread

__all__ = ["SMTPTestServer", "smtp_server"]

#: The marker's keywords handled by the fixture itself; the others go to the server.
_FIXTURE_KEYWORDS = frozenset({"users", "tls"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``smtp_server`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        "smtp_server(users=None, require_auth=False, tls=False, secure=False, **options): "
        "options of the smtp_server fixture (fastsmtp.testing)",
    )


class SMTPTestServer:
    """What the ``smtp_server`` fixture gives a test.

    Attributes:
        host: The address to connect to (``127.0.0.1``).
        port: The port the server listens on.
        tls_context: A client :class:`ssl.SSLContext` trusting the server's certificate
            (with ``tls`` or ``secure``), else None.
        cafile: The CA certificate as a PEM file (with ``tls`` or ``secure``), else None.
        users: The accepted logins.
        thread: The running :class:`~fastsmtp.server.SMTPServerThread`.
    """

    def __init__(self, thread: SMTPServerThread, collector: Collector,
                 tls_context: ssl.SSLContext | None, cafile: str | None) -> None:
        self.thread = thread
        self.host = thread.host
        self.port = thread.port
        self.tls_context = tls_context
        self.cafile = cafile
        self.users = collector.users
        self._collector = collector

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The received messages, oldest first (each with ``mail_from``, ``rcpt_tos``,
        ``content`` and the parsed ``message``)."""
        return self._collector.messages

    def clear(self) -> None:
        """Forget the messages received so far."""
        self._collector.clear()

    def __repr__(self) -> str:
        return f"<SMTPTestServer {self.host}:{self.port} messages={len(self.messages)}>"


def _tls_material(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, str]:
    """A throwaway CA: (server context, client context, CA file)."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "@pytest.mark.smtp_server(tls=True) or (secure=True) needs the trustme package "
            "for its throwaway certificates: pip install trustme"
        ) from None
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    cafile = directory / "fastsmtp-test-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return server, client, str(cafile)


def _server_options(marker_kwargs: Mapping[str, Any], users: Mapping[str, str],
                    tls_server: ssl.SSLContext | None) -> dict[str, Any]:
    options = {k: v for k, v in marker_kwargs.items() if k not in _FIXTURE_KEYWORDS}
    if users or options.get("require_auth"):
        options.setdefault("enable_auth", True)
        options.setdefault("auth_require_tls", False)
    if tls_server is not None:
        options.setdefault("ssl_context" if options.get("secure") else "tls_context", tls_server)
    return options


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[SMTPTestServer]:
    """An SMTP server on 127.0.0.1 that keeps every message (see :mod:`fastsmtp.testing`)."""
    marker = request.node.get_closest_marker("smtp_server")
    if marker is not None and marker.args:
        raise TypeError("@pytest.mark.smtp_server takes keyword options only, e.g. "
                        "@pytest.mark.smtp_server(tls=True, users={'u': 'p'})")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    users = kwargs.get("users") or {}
    tls_server = tls_client = cafile = None
    if kwargs.get("tls") or kwargs.get("secure"):
        tls_server, tls_client, cafile = _tls_material(tmp_path_factory.mktemp("smtp-tls"))
    collector = Collector(users)
    thread = SMTPServerThread(collector, "127.0.0.1", 0,
                              **_server_options(kwargs, users, tls_server))
    thread.start()
    try:
        yield SMTPTestServer(thread, collector, tls_client, cafile)
    finally:
        thread.stop()
