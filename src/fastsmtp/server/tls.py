"""Server TLS credentials: simplesmtp's ``credentials`` option as an ``ssl.SSLContext``.

simplesmtp took ``{key, cert, ca}`` as PEM *contents*; Python's :mod:`ssl` loads a
certificate chain and key only from files. Both are accepted here: a value that holds a
PEM block is written to a private temporary directory (mode 0700, file 0600), loaded and
removed at once, so key material never sits on disk longer than the load takes. Anything
else is taken as a path.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CREDENTIAL_KEYS", "context_from_credentials", "make_server_ssl_context"]

#: The keys a ``credentials`` mapping may hold.
CREDENTIAL_KEYS = frozenset({"cert", "key", "ca", "password"})

PemOrPath = str | bytes | os.PathLike[str]


def _pem(value: PemOrPath | None) -> bytes | None:
    """The value's bytes if it is PEM text, None if it is a path (or None)."""
    if isinstance(value, str):
        value = value.encode("ascii") if "-----BEGIN " in value else None
    elif not isinstance(value, bytes) or b"-----BEGIN " not in value:
        return None
    return value


def make_server_ssl_context(
    cert: PemOrPath,
    key: PemOrPath | None = None,
    *,
    ca: PemOrPath | None = None,
    password: str | bytes | None = None,
) -> ssl.SSLContext:
    """Build a server-side TLS context from a certificate chain and its private key.

    Args:
        cert: The certificate chain: a PEM file path or PEM text (leaf first).
        key: The private key: a PEM file path or PEM text; None when ``cert`` holds it.
        ca: CA certificates (path or PEM text) to verify client certificates with. A
            client is then asked for a certificate but may connect without one
            (``CERT_OPTIONAL``); one it presents must verify.
        password: Passphrase of an encrypted key.

    Returns:
        A context with the secure defaults of
        ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``.

    Raises:
        ValueError: ``cert`` is empty.
        ssl.SSLError, OSError: The files or PEM data cannot be loaded, or the key does
            not match the certificate.
    """
    if not cert:
        raise ValueError("credentials need a certificate ('cert')")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_pem, key_pem = _pem(cert), _pem(key)
    if cert_pem is None and key_pem is None:
        context.load_cert_chain(cert, key, password)
    else:
        with tempfile.TemporaryDirectory(prefix="fastsmtp-tls-") as private:
            context.load_cert_chain(
                cert if cert_pem is None else _write_private(cert_pem, Path(private, "cert")),
                key if key_pem is None else _write_private(key_pem, Path(private, "key")),
                password,
            )
    if ca is not None:
        ca_pem = _pem(ca)
        if ca_pem is not None:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        else:
            context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _write_private(pem: bytes, path: Path) -> Path:
    """Write PEM bytes to a new owner-only file at ``path`` and return the path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return path


def context_from_credentials(credentials: Mapping[str, PemOrPath | None]) -> ssl.SSLContext:
    """Build a server context from simplesmtp-style ``{"cert", "key", "ca", "password"}``.

    Raises:
        ValueError: An unknown key, or no ``cert``.
    """
    unknown = set(credentials) - CREDENTIAL_KEYS
    if unknown:
        raise ValueError(f"unknown credentials key(s): {', '.join(sorted(unknown))}")
    cert = credentials.get("cert")
    if cert is None:
        raise ValueError("credentials need a certificate ('cert')")
    password = credentials.get("password")
    if password is not None and not isinstance(password, (str, bytes)):
        raise ValueError("credentials 'password' must be str or bytes")
    return make_server_ssl_context(
        cert, credentials.get("key"), ca=credentials.get("ca"), password=password
    )
