"""What the connections of one server share: :class:`ServerState`, one object per server.

The listener (:class:`~fastsmtp.server.SMTPServer`) creates it and hands it to every
protocol it builds; neither reads the other's private attributes. It holds the options,
the open connections (so that ``max_clients`` is enforced and :meth:`SMTPServer.close
<fastsmtp.server.SMTPServer.close>` can reach them), the hook tasks still running, and an
event set whenever no connection is open, which ``close()`` waits on instead of polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .config import ServerConfig

__all__ = ["ServerState"]

#: Bytes of :attr:`ServerState.read_buffer`: one read rarely fills it; a longer burst
#: just takes more reads.
READ_BUFFER = 64 * 1024


class ServerState:
    """The state one server's connections share.

    Args:
        config: The server's validated options.

    Attributes:
        config: The :class:`~fastsmtp.server.ServerConfig`.
        connections: The open (admitted) connections' protocols.
        tasks: Tasks running handler hooks; a closing server waits for them.
        closing: The server is shutting down: new connections get 421, sessions end.
        idle: Set while no connection is open.
        read_buffer: The one buffer every connection's transport reads into (see
            :class:`~fastsmtp.server.protocol.SMTPServerProtocol`): a server's
            connections all run on one loop, which hands each read to the protocol
            before the next one, and the reader copies what it keeps.
    """

    __slots__ = ("config", "connections", "tasks", "closing", "idle", "read_buffer")

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.read_buffer = memoryview(bytearray(READ_BUFFER))

    def open(self) -> None:
        """The server starts listening (again): accept connections, a fresh ``idle`` event.

        A new event, because an event belongs to the loop that first waited on it.
        """
        self.closing = False
        self.idle = asyncio.Event()
        if not self.connections:
            self.idle.set()

    def admit(self, connection: Any) -> bool:
        """Count a new connection in; False (not counted) when ``max_clients`` are open."""
        connections = self.connections
        limit = self.config.max_clients
        if limit and len(connections) >= limit:
            return False
        connections.add(connection)
        self.idle.clear()
        return True

    def release(self, connection: Any) -> None:
        """A connection has closed; the last one sets ``idle``."""
        connections = self.connections
        connections.discard(connection)
        if not connections:
            self.idle.set()

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the server keeps track of until it is done."""
        task = loop.create_task(coro)
        tasks = self.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
