"""Ports without races: bind port 0 and hand the bound socket over.

Choosing a "free" port by binding, closing and passing the number on races with every
other process on the machine (another test run, a peer program): the port can be taken
between the close and the second bind. So:

* :func:`listening_socket` binds 127.0.0.1:0 and listens; give the socket itself to the
  server (``asyncio.start_server(sock=...)``);
* :func:`refused_port` keeps a port bound but not listening for the length of a ``with``
  block: connecting to it is refused, and nobody else can listen there meanwhile;
* :func:`retry_port_in_use` is for the few users that must be given a port number (a
  peer program such as Postfix's ``smtp-sink``, a client's ``local_address``): it picks
  a port and tries again with another one when the port turned out to be in use.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

__all__ = ["PortInUse", "listening_socket", "refused_port", "retry_port_in_use"]

T = TypeVar("T")

#: Tries of :func:`retry_port_in_use` before the error is the test's.
PORT_ATTEMPTS = 5


class PortInUse(OSError):
    """Raised by a port user that found its port taken (for :func:`retry_port_in_use`)."""

    def __init__(self, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} is already in use")


def listening_socket(backlog: int = 128) -> socket.socket:
    """A non-blocking TCP socket listening on 127.0.0.1, on a port the kernel picked."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """Yield a loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _unused_port() -> int:
    # Only for retry_port_in_use, which copes with the race this has.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _in_use(exc: BaseException | None) -> bool:
    """Whether ``exc`` or anything in its cause/context chain is EADDRINUSE."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def retry_port_in_use(
    attempt: Callable[[int], Awaitable[T]], attempts: int = PORT_ATTEMPTS
) -> T:
    """Run ``attempt(port)`` on an unused port; on EADDRINUSE, again on another one."""
    for remaining in range(attempts - 1, -1, -1):
        try:
            return await attempt(_unused_port())
        except Exception as exc:
            if not remaining or not _in_use(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
