"""Shared fixtures: both event loops, trustme TLS material.

Every async test runs once on asyncio's default loop and once on uvloop (when installed),
through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook. The core implementation is chosen
for the whole run by ``FASTSMTP_IMPLEMENTATION`` (``make test`` runs the suite once each).

Fixtures only: helpers live in the ``support`` package (``tests/support``, importable
because pyproject's pytest ``pythonpath`` puts ``tests/`` on ``sys.path``); test modules
import from there, never from this file or from each other.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional on some platforms
    uvloop = None

_LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    _LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


def pytest_asyncio_loop_factories(config, item):
    """Run each async test on the default asyncio loop and on uvloop."""
    return _LOOP_FACTORIES


@pytest.fixture(scope="session")
def tls_ca():
    """A throwaway certificate authority (trustme)."""
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def tls_cert(tls_ca):
    """A server certificate for localhost and 127.0.0.1, signed by ``tls_ca``."""
    return tls_ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def server_ssl_context(tls_cert) -> ssl.SSLContext:
    """Server-side TLS context presenting ``tls_cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_cert.configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca) -> ssl.SSLContext:
    """Client-side TLS context that trusts ``tls_ca`` (verification stays on)."""
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def tmp_maildir(tmp_path) -> Iterator[str]:
    """A fresh directory path for Maildir tests."""
    yield str(tmp_path / "Maildir")

