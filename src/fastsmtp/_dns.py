"""Name resolution with a short-lived shared cache, and Happy Eyeballs connects.

Theory of operation
-------------------
A connection to a host name resolves it through its options' :class:`DNSCache` (one per
:class:`~fastsmtp.options.ConnectionOptions`, hence one per pool: eight connections
opened at once share one lookup, concurrent callers wait for the lookup in flight).
Every address returned, IPv6 and IPv4 alike, is then tried by :func:`connect_addresses`:
the families interleaved (RFC 8305 section 4), the next attempt started
``happy_eyeballs_delay`` seconds after the previous one or at once when it fails, the
first socket to connect wins and the others are closed. The caller bounds the whole
race with ``connection_timeout``, so a dead first address costs a refusal (or the
delay), not the timeout.

The resolver is a hook (``resolver=``, ``async resolver(host) -> [address, ...]``):
the default asks ``loop.getaddrinfo``; tests and special set-ups give their own (no
``/etc/hosts`` needed to make a name resolve to two loopback addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_DNS_CACHE_TTL",
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "DNSCache",
    "Resolver",
    "connect_addresses",
    "default_resolver",
    "interleave",
    "is_ip",
]

#: An address resolver: ``await resolver(host)`` -> IP address strings, best first.
Resolver = Callable[[str], Awaitable[Sequence[str]]]

#: Seconds a resolution is reused (short: long enough for a pool's burst of connects,
#: short enough that a DNS change is seen within a minute).
DEFAULT_DNS_CACHE_TTL = 30.0
#: Seconds before the next address is tried while one is still connecting (RFC 8305
#: recommends 250 ms; asyncio's ``happy_eyeballs_delay``).
DEFAULT_HAPPY_EYEBALLS_DELAY = 0.25


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 address literal (nothing to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def default_resolver(host: str) -> list[str]:
    """Every address of ``host`` (A and AAAA), in the system resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, None, type=socket.SOCK_STREAM
    )
    # dict.fromkeys: each address once, in order (getaddrinfo repeats them per protocol).
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def interleave(addresses: Sequence[str]) -> list[str]:
    """Alternate the address families, the first address's family first (RFC 8305 4)."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    if not v6 or not v4:
        return list(addresses)
    first, second = (v6, v4) if ":" in addresses[0] else (v4, v6)
    out: list[str] = []
    for i in range(max(len(first), len(second))):
        out.extend(group[i] for group in (first, second) if i < len(group))
    return out


class DNSCache:
    """Resolutions kept for ``ttl`` seconds, shared by every connection of one options.

    Args:
        resolver: The lookup; None: :func:`default_resolver`.
        ttl: Seconds an answer is reused; 0 resolves every time (lookups in flight are
            still shared).

    Attributes:
        lookups: Resolver calls made so far (what the cache saved is visible in tests
            and metrics).
    """

    __slots__ = ("resolver", "ttl", "lookups", "_answers", "_inflight")

    def __init__(self, resolver: Resolver | None = None, ttl: float = DEFAULT_DNS_CACHE_TTL) -> None:
        self.resolver: Resolver = resolver or default_resolver
        self.ttl = ttl
        self.lookups = 0
        self._answers: dict[str, tuple[float, list[str]]] = {}
        # A lookup in flight belongs to one event loop; another loop starts its own.
        self._inflight: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    def __repr__(self) -> str:
        return f"DNSCache(ttl={self.ttl:g}, entries={len(self._answers)})"

    def clear(self) -> None:
        """Forget every answer (a failed connect to a cached address may call it)."""
        self._answers.clear()

    async def resolve(self, host: str) -> list[str]:
        """The addresses of ``host``: cached, joined to a lookup in flight, or looked up.

        Raises:
            OSError: The name does not resolve (``socket.gaierror``), or resolves to
                nothing. A failure is not cached.
        """
        now = time.monotonic()
        hit = self._answers.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        loop = asyncio.get_running_loop()
        key = (host, id(loop))
        pending = self._inflight.get(key)
        if pending is not None:
            return list(await asyncio.shield(pending))
        pending = self._inflight[key] = loop.create_future()
        try:
            self.lookups += 1
            addresses = [str(a) for a in await self.resolver(host)]
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                pending.cancel()  # joiners see the cancellation (a Future refuses it)
            else:
                pending.set_exception(exc)
                pending.exception()  # retrieved: there may be no joiner
            raise
        else:
            if self.ttl > 0:
                self._answers[host] = (time.monotonic() + self.ttl, addresses)
            pending.set_result(addresses)
            return addresses
        finally:
            del self._inflight[key]


async def _attempt(
    loop: asyncio.AbstractEventLoop, address: str, port: int,
    local_addr: tuple[str, int] | None,
) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if local_addr is not None:
            sock.bind(local_addr)
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_addresses(
    addresses: Sequence[str],
    port: int,
    *,
    delay: float = DEFAULT_HAPPY_EYEBALLS_DELAY,
    local_addr: tuple[str, int] | None = None,
) -> socket.socket:
    """Connect to the first address that answers (Happy Eyeballs, RFC 8305).

    Attempts start in :func:`interleave` order, each ``delay`` seconds after the
    previous one or as soon as it failed. The caller bounds the whole race in time.

    Returns:
        A connected non-blocking socket (the losers are closed).

    Raises:
        OSError: Every address failed (the message lists each address's error).
    """
    loop = asyncio.get_running_loop()
    order = interleave(addresses)
    if local_addr is not None:
        # Only the local address's family can be bound: skip the others.
        local_v6 = ":" in local_addr[0]
        order = [a for a in order if (":" in a) == local_v6] or order
    if len(order) == 1:
        return await _attempt(loop, order[0], port, local_addr)
    errors: list[tuple[str, BaseException]] = []
    running: dict[asyncio.Task[socket.socket], str] = {}
    winner: socket.socket | None = None
    next_index = 0
    try:
        while winner is None:
            if next_index < len(order):
                address = order[next_index]
                next_index += 1
                running[loop.create_task(_attempt(loop, address, port, local_addr))] = address
            if not running:
                break
            timeout = delay if next_index < len(order) else None
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                address = running.pop(task)
                exc = task.exception()
                if exc is not None:
                    errors.append((address, exc))
                elif winner is None:
                    winner = task.result()
                else:
                    task.result().close()
    finally:
        for task in running:
            task.cancel()
        for task in running:
            # A loser that connected in the meantime must not leak its socket.
            task.add_done_callback(_close_result)
    if winner is not None:
        return winner
    detail = "; ".join(f"{address}: {exc}" for address, exc in errors)
    first: Any = errors[0][1] if errors else None
    raise OSError(getattr(first, "errno", None), f"every address failed ({detail})")


def _close_result(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()
