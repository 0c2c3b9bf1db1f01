"""An :class:`~fastsmtp.server.SMTPServer` on its own loop in a thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .._loop import new_event_loop
from .listener import SMTPServer

__all__ = ["SMTPServerThread"]


class SMTPServerThread:
    """Run an :class:`SMTPServer` on its own loop in a thread (like aiosmtpd's Controller).

    ``start()`` returns once the server listens; ``stop()`` closes it and joins the
    thread. Usable as a context manager. Arguments are those of :class:`SMTPServer`.

    Args:
        handler: The handler object.
        host: Address to listen on.
        port: Port (0 picks a free one; read :attr:`port` after ``start()``).
        use_uvloop: Use uvloop (default: when installed).
        ready_timeout: Seconds ``start()`` waits for the server to listen.
        **options: Further :class:`SMTPServer` options.
    """

    def __init__(
        self,
        handler: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        use_uvloop: bool | None = None,
        ready_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self._use_uvloop = use_uvloop
        self._ready_timeout = ready_timeout
        self._options = options
        self.server: SMTPServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port once started."""
        return self.server.port if self.server is not None else self._port

    @property
    def hostname(self) -> str:
        """The address the server listens on (for clients)."""
        return self.host

    def _run(self) -> None:
        loop = self.loop = new_event_loop(self._use_uvloop)
        asyncio.set_event_loop(loop)
        try:
            self.server = SMTPServer(self.handler, self.host, self._port, **self._options)
            loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> None:
        """Start the thread and wait until the server listens (raises its error)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="fastsmtp-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._ready_timeout):
            raise TimeoutError("SMTP server thread did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self, timeout: float | None = None) -> None:
        """Close the server gracefully and join the thread."""
        thread, loop, server = self._thread, self.loop, self.server
        if thread is None or loop is None or server is None:
            return

        async def shutdown() -> None:
            try:
                await server.close(timeout)
            finally:
                loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join()
        self._thread = None

    def __enter__(self) -> SMTPServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
