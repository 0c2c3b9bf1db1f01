"""A blocking facade over :class:`~fastsmtp.pool.SMTPPool` for code without an event loop.

:class:`SyncSMTPPool` runs the async pool on an event loop in a background thread of its
own and waits for each call's result, so it works from plain scripts, from threads (it is
thread-safe: every call is handed to the loop thread), and even from inside a running event
loop (the caller's loop is not the pool's, so nothing deadlocks; the calling coroutine does
block while it waits, as any blocking call would).

It survives ``fork()`` (Celery's prefork workers, gunicorn, ``multiprocessing`` with a
pool created at import time): the child's pool starts a loop thread of its own and opens
fresh connections on first use. The connections inherited from the parent are let go in
the child without a byte written (no QUIT: they are the parent's sessions, which go on
working); the old loop and pool are never touched again by the child.

Example::

    from fastsmtp.sync import SyncSMTPPool

    with SyncSMTPPool("smtp://localhost:2525", ignore_tls=True) as pool:
        result = pool.send(email_message)
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from ._loop import new_event_loop
from .connection import SendResult
from .message import Envelope, MessageSource
from .pool import SMTPPool

__all__ = ["SyncSMTPPool"]

T = TypeVar("T")

#: Live pools, for the fork handler.
_pools: weakref.WeakSet[SyncSMTPPool] = weakref.WeakSet()
#: What forked children inherited: the parent's loops, threads and pools. Kept referenced
#: for the life of the child and never used: collecting them could run their finalizers,
#: and a loop's (uvloop's) would deregister descriptors from an epoll instance the child
#: shares with its parent.
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SyncSMTPPool:
    """A thread-backed, blocking :class:`~fastsmtp.pool.SMTPPool`.

    Takes exactly the arguments of :class:`~fastsmtp.pool.SMTPPool`, and ``use_uvloop``
    (None: uvloop when installed; False: asyncio's loop). Call :meth:`close` (or use
    ``with``) to stop the loop thread. After ``fork()`` the child's pool is a fresh one
    (see the module docs).
    """

    def __init__(self, *args: Any, use_uvloop: bool | None = None, **kwargs: Any) -> None:
        self._args, self._kwargs, self._use_uvloop = args, kwargs, use_uvloop
        self._closed = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start()  # in the caller's process: bad options fail here
        _pools.add(self)

    def _start(self) -> SMTPPool:
        """Start the loop thread and build the pool on it (once per process)."""
        self._loop = new_event_loop(self._use_uvloop)
        self._thread = threading.Thread(target=self._loop.run_forever, name="fastsmtp-pool",
                                        daemon=True)
        self._thread.start()
        args, kwargs = self._args, self._kwargs

        async def build() -> SMTPPool:
            return SMTPPool(*args, **kwargs)

        try:
            self._pool: SMTPPool | None = self._call(build())
        except BaseException:
            self._stop()
            raise
        return self._pool

    @property
    def pool(self) -> SMTPPool:
        """The async pool behind this facade (a new one in a forked child)."""
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool if self._pool is not None else self._start()
        return pool

    def _forked(self) -> None:
        """In a forked child: forget the parent's loop, thread and pool (never touch
        them) and start afresh on first use. The inherited connections were already let
        go by :mod:`fastsmtp.connection`'s own fork handler, without a byte written."""
        _inherited.append((self._loop, self._thread, self._pool))
        self._loop = self._thread = self._pool = None
        self._lock = threading.Lock()  # the parent's may have been held at the fork

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncSMTPPool cannot be called from its own loop thread")
        assert self._loop is not None
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

    def stats(self) -> dict[str, Any]:
        """The pool's counters and gauges (see :meth:`SMTPPool.stats`), read on its loop."""
        pool = self.pool

        async def read() -> dict[str, Any]:
            return pool.stats()

        return self._call(read())

    def close(self) -> None:
        """Close the pool (in-flight messages finish) and stop the loop thread."""
        if self._closed:
            return
        if self._pool is None:  # a forked child that never used it: nothing to close
            self._closed = True
            return
        try:
            self._call(self._pool.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _check_open(self) -> None:
        if self._closed:
            from .errors import SMTPPoolClosed

            raise SMTPPoolClosed("the pool is closed")

    def __enter__(self) -> SyncSMTPPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
