"""Shared fixtures: both event loops, trustme TLS material, external peers.

Every async test runs once on asyncio's default loop and once on uvloop (when installed),
through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook. The core implementation is chosen
for the whole run by ``FASTSMTP_IMPLEMENTATION`` (``make test`` runs the suite once each).
"""

from __future__ import annotations

import asyncio
import os
import shutil
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


def require_peer(program: str) -> str:
    """Return the path of an external peer program, or skip the test without it.

    With ``FASTSMTP_REQUIRE_PEERS=1`` (CI) a missing peer fails the test instead: CI must
    never pass by skipping the interop tests.
    """
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        message = f"{program} is not installed (apt-get install postfix swaks / npm)"
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def tmp_maildir(tmp_path) -> Iterator[str]:
    """A fresh directory path for Maildir tests."""
    yield str(tmp_path / "Maildir")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a ``python -m fastsmtp`` child that imports *this* fastsmtp.

    The child gets the directory the tests imported fastsmtp from at the front of its
    PYTHONPATH: ``src/`` in a development checkout run with ``PYTHONPATH=src``, the
    virtualenv's site-packages (with the compiled core) under ``make test``. Pointing it
    at ``src/`` unconditionally would load a tree without the compiled core in CI.
    """
    import fastsmtp

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastsmtp.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=package_root + (os.pathsep + path if path else ""),
                **extra)
