"""A blocking facade over :class:`~fastsmtp.pool.SMTPPool` for code without an event loop.

:class:`SyncSMTPPool` runs the async pool on an event loop in a background thread of its
own and waits for each call's result, so it works from plain scripts, from threads (it is
thread-safe: every call is handed to the loop thread), and even from inside a running event
loop (the caller's loop is not the pool's, so nothing deadlocks; the calling coroutine does
block while it waits, as any blocking call would).

Example::

    from fastsmtp.sync import SyncSMTPPool

    with SyncSMTPPool("smtp://localhost:2525", ignore_tls=True) as pool:
        result = pool.send(email_message)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from ._loop import new_event_loop
from .connection import SendResult
from .message import Envelope, MessageSource
from .pool import SMTPPool

__all__ = ["SyncSMTPPool"]

T = TypeVar("T")


class SyncSMTPPool:
    """A thread-backed, blocking :class:`~fastsmtp.pool.SMTPPool`.

    Takes exactly the arguments of :class:`~fastsmtp.pool.SMTPPool`. Call :meth:`close`
    (or use ``with``) to stop the loop thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fastsmtp-pool",
                                        daemon=True)
        self._thread.start()
        self._closed = False

        async def build() -> SMTPPool:
            return SMTPPool(*args, **kwargs)

        try:
            self.pool = self._call(build())
        except BaseException:
            self._stop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncSMTPPool cannot be called from its own loop thread")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt or a timeout: stop waiting
            raise

    def send(
        self,
        message: MessageSource,
        envelope: Envelope | None = None,
        *,
        timeout: float | None = None,
    ) -> SendResult:
        """Send one message and wait for its result (see :meth:`SMTPPool.send`).

        Args:
            message: The message, as for :meth:`SMTPPool.send`.
            envelope: Sender and recipients; None to derive them from an EmailMessage.
            timeout: Seconds to wait at most; on expiry :class:`TimeoutError` is raised
                and the message is withdrawn if it had not started yet.
        """
        self._check_open()
        return self._call(self.pool.send(message, envelope), timeout)

    def send_many(self, messages: Iterable[Any]) -> Iterator[tuple[Any, SendResult | Exception]]:
        """Send many messages; yield ``(item, result or error)`` as each one finishes.

        Each item is a message or a ``(message, envelope)`` pair (the rule of
        :meth:`SMTPPool.send_many`). The iterable is consumed on the pool's loop thread, as fast as the pool takes
        messages (see :meth:`SMTPPool.send_many`).
        """
        self._check_open()
        agen = self.pool.send_many(messages)
        try:
            while True:
                try:
                    yield self._call(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call(agen.aclose())

    def verify(self) -> None:
        """Connect, log in and QUIT (see :meth:`SMTPPool.verify`)."""
        self._check_open()
        self._call(self.pool.verify())

    def is_idle(self) -> bool:
        """True when a new message would start at once (a snapshot: no lock is taken)."""
        return self.pool.is_idle()

    def close(self) -> None:
        """Close the pool (in-flight messages finish) and stop the loop thread."""
        if self._closed:
            return
        try:
            self._call(self.pool.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _check_open(self) -> None:
        if self._closed:
            from .errors import SMTPPoolClosed

            raise SMTPPoolClosed("the pool is closed")

    def __enter__(self) -> SyncSMTPPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
