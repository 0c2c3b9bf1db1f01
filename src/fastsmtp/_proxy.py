"""Open the connection's socket: directly (DNS cache, Happy Eyeballs) or through a proxy.

``proxy="http://user:pass@host:port"`` tunnels with HTTP CONNECT (built in: one request
and one status line over the socket); ``socks5://`` and ``socks4://`` go through
python-socks (the ``fastsmtp[socks]`` extra), which resolves the SMTP host *at the proxy*
(SOCKS5 domain addresses, SOCKS4a), as nodemailer does. Either way the result is a
connected socket the connection hands to ``loop.create_connection(sock=...)``, so TLS,
the greeting and everything after are the same as without a proxy.

Credentials never reach a log or an error message: :class:`ProxyURL` hides the password
in ``repr`` and errors name the proxy as ``scheme://host:port``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

from ._dns import DNSCache, connect_addresses, is_ip
from .errors import SMTPProxyError

if TYPE_CHECKING:  # pragma: no cover
    from .options import ConnectionOptions

__all__ = [
    "MAX_PROXY_HEAD",
    "PROXY_SCHEMES",
    "ProxyURL",
    "connect_via",
    "open_socket",
    "parse_proxy",
]

#: Scheme -> default port (1080 is SOCKS's IANA port; 8080 the usual HTTP proxy port).
PROXY_SCHEMES = {"http": 8080, "socks4": 1080, "socks5": 1080}
#: The longest HTTP CONNECT response head read (status line and headers), in bytes.
MAX_PROXY_HEAD = 8192

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A parsed ``proxy=`` URL.

    Attributes:
        scheme: ``"http"``, ``"socks4"`` or ``"socks5"``.
        host: The proxy's host name or address.
        port: Its port.
        username: User name for the proxy, or None.
        password: Password for the proxy, or None (hidden by ``repr``).
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """``scheme://host:port``: how errors and logs name the proxy (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __repr__(self) -> str:
        auth = "" if self.username is None else f", username={self.username!r}, password=<hidden>"
        return f"ProxyURL({str(self)!r}{auth})"


def parse_proxy(url: str) -> ProxyURL:
    """Parse ``http://[user:pass@]host[:port]``, ``socks5://...`` or ``socks4://...``.

    User and password are percent-decoded. Without a port: 8080 for HTTP, 1080 for SOCKS.

    Raises:
        ValueError: Another scheme, no host, a path or query, or a bad port (the URL's
            credentials are not repeated in the message).
    """
    if not isinstance(url, str):
        raise TypeError("proxy must be a URL string such as 'http://host:3128'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = f"{parts.scheme}://{parts.hostname or ''}"
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"unsupported proxy scheme {parts.scheme!r} in {shown!r}: use http://, "
            "socks5:// or socks4://"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"proxy {shown!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"proxy URL {shown!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy URL {shown!r} must be scheme://[user:pass@]host:port only")
    user = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    if scheme == "socks4" and password is not None:
        raise ValueError("a SOCKS4 proxy takes a user id only, no password")
    return ProxyURL(scheme, parts.hostname, port or PROXY_SCHEMES[scheme], user, password)


def _target(host: str, port: int) -> str:
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError(f"host {host[:60]!r} cannot be sent to a proxy")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _direct(
    cache: DNSCache, host: str, port: int, opts: ConnectionOptions
) -> socket.socket:
    addresses = [host] if is_ip(host) else await cache.resolve(host)
    return await connect_addresses(
        addresses, port, delay=opts.happy_eyeballs_delay, local_addr=opts.local_addr
    )


async def _read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    # One byte at a time: whatever follows the head (the SMTP greeting, possibly in the
    # same segment) must stay in the socket for the SMTP protocol to read.
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) >= MAX_PROXY_HEAD:
            raise SMTPProxyError(f"the proxy's reply head is longer than {MAX_PROXY_HEAD} bytes")
        byte = await loop.sock_recv(sock, 1)
        if not byte:
            raise SMTPProxyError(
                f"the proxy closed the connection during CONNECT (got {bytes(head[:80])!r})"
            )
        head += byte
    return bytes(head)


async def _http_connect(
    proxy: ProxyURL, host: str, port: int, opts: ConnectionOptions
) -> socket.socket:
    loop = asyncio.get_running_loop()
    target = _target(host, port)
    try:
        sock = await _direct(opts.dns_cache, proxy.host, proxy.port, opts)
    except OSError as exc:
        raise SMTPProxyError(f"cannot reach the proxy {proxy}: {exc}") from exc
    try:
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.username is not None:
            token = base64.b64encode(
                f"{proxy.username}:{proxy.password or ''}".encode()
            ).decode("ascii")
            request += f"Proxy-Authorization: Basic {token}\r\n"
        await loop.sock_sendall(sock, (request + "\r\n").encode("utf-8"))
        try:
            head = await _read_head(loop, sock)
        except SMTPProxyError as exc:
            raise SMTPProxyError(f"proxy {proxy}: {exc}") from None
        status = head.split(b"\r\n", 1)[0]
        fields = status.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or fields[1] != b"200":
            text = status[:200].decode("latin-1")
            raise SMTPProxyError(
                f"the proxy {proxy} refused CONNECT {target}: {text!r}"
                + (" (check the proxy's user and password)" if fields[1:2] == [b"407"] else "")
            )
    except BaseException:
        sock.close()
        raise
    return sock


async def _socks_connect(
    proxy: ProxyURL, host: str, port: int, opts: ConnectionOptions
) -> socket.socket:
    try:
        from python_socks import (
            ProxyConnectionError,
            ProxyError,
            ProxyTimeoutError,
            ProxyType,
        )
        from python_socks.async_.asyncio import Proxy
    except ImportError:  # pragma: no cover - the extra is installed in the test env
        raise ImportError(
            f"a {proxy.scheme}:// proxy needs python-socks: pip install 'fastsmtp[socks]'"
        ) from None
    loop = asyncio.get_running_loop()
    target = _target(host, port)
    kind = ProxyType.SOCKS5 if proxy.scheme == "socks5" else ProxyType.SOCKS4
    try:
        # The proxy's own name goes through the options' resolver and cache too.
        address = proxy.host if is_ip(proxy.host) else (await opts.dns_cache.resolve(proxy.host))[0]
    except OSError as exc:
        raise SMTPProxyError(f"cannot resolve the proxy {proxy}: {exc}") from exc
    tunnel = Proxy(kind, address, proxy.port, proxy.username, proxy.password,
                   rdns=True, loop=loop)
    try:
        sock: socket.socket = await tunnel.connect(
            host, port, timeout=opts.connection_timeout,
            local_addr=opts.local_addr,
        )
    except ProxyTimeoutError:
        raise TimeoutError(f"the proxy {proxy} did not answer in time") from None
    except ProxyConnectionError as exc:
        raise SMTPProxyError(f"cannot reach the proxy {proxy}: {exc}") from None
    except ProxyError as exc:
        raise SMTPProxyError(
            f"the proxy {proxy} refused the tunnel to {target}: {exc}"
        ) from None
    return sock


async def open_socket(opts: ConnectionOptions) -> socket.socket:
    """A socket connected to ``opts.host:opts.port``, through ``opts.proxy`` if set.

    Raises:
        SMTPProxyError: The proxy could not be reached or refused the tunnel.
        OSError: The host does not resolve, or no address accepted the connection.
        TimeoutError: A SOCKS proxy timed out (the caller bounds the rest).
    """
    port: int = opts.port  # type: ignore[assignment]  # never None after __post_init__
    proxy = opts.proxy_url
    if proxy is None:
        return await _direct(opts.dns_cache, opts.host, port, opts)
    if proxy.scheme == "http":
        return await _http_connect(proxy, opts.host, port, opts)
    return await _socks_connect(proxy, opts.host, port, opts)


async def connect_via(
    opts: ConnectionOptions, then: Callable[[socket.socket], Awaitable[_T]]
) -> _T:
    """:func:`open_socket`, then ``then(sock)`` (e.g. ``loop.create_connection(sock=)``).

    The socket is closed if ``then`` fails or is cancelled before taking it over.
    """
    sock = await open_socket(opts)
    try:
        return await then(sock)
    except BaseException:
        sock.close()
        raise
