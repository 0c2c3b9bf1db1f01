"""Client asyncio Protocol: server bytes -> ReplyParser -> replies to waiting futures.

Theory of operation
-------------------
The connection writes commands straight to the transport and, for each group of commands
it wrote, calls :meth:`SMTPClientProtocol.expect` with the number of replies that group
will produce. Waiters form a FIFO that mirrors the order of the bytes written, so
pipelined groups (even across messages) need no bookkeeping beyond that order: replies
from the parser fill the oldest waiter, and a waiter's future resolves with the raw
``(code, lines)`` tuples once it has all of them. One future per *group* instead of one
per reply keeps the per-message object churn low; ``Reply`` objects are only built where
the caller needs one.

Failure is total and immediate: a malformed or unexpected reply, a timeout, or the
connection being lost fails every waiter at once with the same error and closes the
transport, so nobody waits for a timeout after the peer is gone and a broken connection
can never be reused. Failed futures are marked retrieved, because later waiters of a
pipelined group are legitimately never awaited after an earlier one failed.

The protocol owns every write (:meth:`SMTPClientProtocol.write`): the connection never
touches the transport. That keeps in one place what every write must get right: the
*trace* (the ``C:``/``S:`` debug log, with AUTH data masked), and the transport itself,
which :meth:`SMTPClientProtocol.start_tls` swaps for the TLS one after STARTTLS.
(Nothing is ever held back: the connection's one pipeline joins the next message's
commands to the dot before it writes, so each pipelined message is one write.)

Timeouts are one lazily re-armed timer, not one per await: it only exists while a reply
or a drain is awaited, and when it fires early (because bytes arrived meanwhile) it
re-arms itself at the new deadline. A busy connection pays about one timer per timeout
period instead of one per command.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any

from ._codec import ReplyParser
from ._transaction import RawReply
from .errors import (
    SMTPError,
    SMTPProtocolError,
    SMTPServerDisconnected,
    SMTPServiceClosing,
    SMTPSocketError,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .reply import Reply

__all__ = ["SMTPClientProtocol", "RawReply"]

#: Bytes of the receive buffer each connection reads into (replies are small: one read
#: rarely fills it, and a longer burst just takes another read).
READ_BUFFER = 16 * 1024


class SMTPClientProtocol(asyncio.BufferedProtocol):
    """Moves bytes between the transport and the reply parser; see the module docstring.

    Attributes:
        transport: The current transport (the TLS one after :meth:`start_tls`).
        greeting: Future of the server's greeting (registered, and its timeout started,
            when the connection is made: before any byte can arrive).
        closed: Future resolved (with None) once the connection is lost, for whatever reason.
        error: The error that broke the connection, or None while it is healthy.
        timeout: Seconds of silence allowed while something is awaited.
        trace: The logger that gets the SMTP traffic at DEBUG, or None (no tracing).
    """

    __slots__ = (
        "_loop",
        "transport",
        "_parser",
        "_waiters",
        "error",
        "closed",
        "paused",
        "_drain_waiter",
        "timeout",
        "_timer",
        "_last",
        "trace",
        "greeting",
        "heard",
        "written",
        "_ends",
        "_last_end",
        "_read_buffer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        # Each waiter: [future, replies wanted, replies so far, pause reading when done]
        self._waiters: deque[list[Any]] = deque()
        self.error: SMTPError | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.paused = False  # the transport asked us to stop writing
        self._drain_waiter: asyncio.Future[None] | None = None
        self.timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last sign of life (or of starting to wait)
        self.trace: logging.Logger | None = None
        # Registered (and its timer armed) in connection_made: the greeting timeout
        # starts once TCP and, with implicit TLS, the handshake are done; until then the
        # connection timeout applies.
        self.greeting: asyncio.Future[list[RawReply]] = loop.create_future()
        self.heard = False  # any byte received yet (a silent server: see SMTPConnection)
        self.written = 0  # bytes handed to the transport, for the end offsets (mark_end)
        # End offsets (mark_end) whose bytes may still sit in the transport's buffer,
        # oldest first; every other end has reached the kernel.
        self._ends: deque[int] = deque()
        self._last_end = 0
        # A buffered protocol: the transport reads into this one buffer (the parser copies
        # what it keeps), instead of a new bytes object per read. Under TLS it matters
        # most: uvloop's SSL transport otherwise allocates a 256 KiB bytes object per
        # read for plain protocols (an mmap, mremap and munmap per message, measured
        # with strace in bench/bench_tls.py's set-up).
        self._read_buffer = memoryview(bytearray(READ_BUFFER))

    # -- waiting for replies -----------------------------------------------------------

    def expect(
        self, count: int, pause: bool = False,
        future: asyncio.Future[list[RawReply]] | None = None,
    ) -> asyncio.Future[list[RawReply]]:
        """Register a waiter for the next ``count`` replies (after all earlier waiters).

        Args:
            count: Replies the bytes just written will produce.
            pause: Stop reading from the transport as soon as they have arrived, and
                fail if any byte follows them (STARTTLS: nothing may sit between the 220
                and the TLS handshake).
            future: The future to resolve (the greeting's, made with the protocol);
                None makes a new one.

        Returns:
            A future resolved with the raw replies, or failed with the connection error.
        """
        fut = self._loop.create_future() if future is None else future
        if self.error is not None:
            fut.set_exception(self.error)
            fut.exception()  # mark retrieved: the caller may never await it
            return fut
        if not self._waiters:
            self._last = self._loop.time()
            if self._timer is None:
                self._timer = self._loop.call_at(self._last + self.timeout, self._on_timer)
        self._waiters.append([fut, count, [], pause])
        return fut

    def set_timeout(self, timeout: float) -> None:
        """Change the inactivity timeout (greeting -> socket timeout)."""
        self.timeout = timeout
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._loop.call_at(self._last + timeout, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._waiters and self._drain_waiter is None:
            return
        deadline = self._last + self.timeout
        if self._loop.time() >= deadline:
            self.fail(SMTPTimeoutError(f"no reply from the server within {self.timeout:g}s"))
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.greeting.done() and not self._waiters:
            # The first waiter, before any byte can arrive; its timer starts now.
            self.expect(1, future=self.greeting)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        try:
            replies = self._parser.feed(self._read_buffer[:nbytes])
        except SMTPProtocolError as exc:
            self.fail(exc)
            return
        self._last = self._loop.time()
        self.heard = True
        if not replies:
            return
        if self.trace is not None:
            self._trace_replies(replies)
        # Handed out a waiter at a time (a slice each), not a reply at a time: a busy
        # pipelined connection reads a dot's reply and the next envelope's in one go.
        waiters = self._waiters
        n = len(replies)
        i = 0
        while i < n:
            if not waiters:
                self._unexpected(replies[i])
                return
            waiter = waiters[0]
            got = waiter[2]
            end = i + waiter[1] - len(got)  # where this waiter's replies end
            if end == i + 1:
                got.append(replies[i])  # one reply (a dot's, most often): no slice
            else:
                got += replies[i:end]
                if end > n:
                    return  # the rest of its replies are still to come
            i = end
            waiters.popleft()
            if waiter[3]:
                self._pause_after(waiter, n - end)
                return
            fut = waiter[0]
            if not fut.done():
                fut.set_result(got)

    def _pause_after(self, waiter: list[Any], more: int) -> None:
        # Bytes after the STARTTLS 220 were sent before the handshake, in plaintext, and
        # would otherwise be read as replies once TLS is up (CVE-2011-0411 style
        # injection). Drop them and refuse to go on.
        assert self.transport is not None
        self.transport.pause_reading()
        dropped = self._parser.clear()
        fut = waiter[0]
        if more or dropped:
            self._waiters.appendleft(waiter)  # so that fail() fails it too
            self.fail(SMTPTLSError("the server sent data after its 220 reply to STARTTLS"))
            return
        if not fut.done():
            fut.set_result(waiter[2])

    def _unexpected(self, reply: RawReply) -> None:
        if reply[0] == 421:
            # A server may announce that it is closing an idle connection (421 timeout).
            self.fail(
                SMTPServiceClosing(
                    "the server is closing the connection", reply=Reply.from_core(*reply)
                ),
                abort=False,
            )
        else:
            self.fail(SMTPProtocolError(f"unexpected reply from the server: {reply[0]}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            reply = None
            head = self._waiters[0][2] if self._waiters else None
            if head and head[-1][0] == 421:
                reply = Reply.from_core(*head[-1])
            error: SMTPServerDisconnected
            if isinstance(exc, OSError):
                # ECONNRESET, EPIPE, ...: the socket itself failed (nodemailer's ESOCKET).
                error = SMTPSocketError(f"connection lost: {exc}", reply=reply)
            elif exc is not None:
                error = SMTPServerDisconnected(f"connection lost: {exc}", reply=reply)
            elif self._parser.buffered:
                error = SMTPServerDisconnected(
                    "the server closed the connection in the middle of a reply", reply=reply
                )
            elif reply is not None:
                # The server said 421 and closed: an error caused by a reply.
                error = SMTPServiceClosing(f"the server closed the connection: {reply}",
                                           reply=reply)
            else:
                error = SMTPServerDisconnected("the server closed the connection")
            error.__cause__ = exc
            self.fail(error, abort=False)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(self.error)  # type: ignore[arg-type]
            self._drain_waiter.exception()
        self._drain_waiter = None
        if not self.closed.done():
            self.closed.set_result(None)

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes | memoryview, secret: bool = False) -> None:
        """Write ``data``, tracing it when traffic is logged.

        Args:
            data: Whole command lines (or message data).
            secret: Credentials: the trace shows the verb and mechanism only.

        Raises:
            SMTPError: The connection is broken (its error).
        """
        if self.error is not None:
            raise self.error
        if self.trace is not None:
            self._trace_write(data, secret)
        self.transport.write(data)  # type: ignore[union-attr]
        self.written += len(data)
        if self._ends:
            self._track_ends()  # more bytes behind an unsent end: move its mark

    def _trace_write(self, data: bytes | memoryview, secret: bool) -> None:
        log = self.trace
        assert log is not None
        if secret:
            # Keep the verb and mechanism ("AUTH PLAIN"), never the credentials. The line
            # ending goes first: a CRLF must not end up inside the log record.
            words = bytes(data).rstrip(b"\r\n").split(b" ")
            if words[0] != b"AUTH":
                shown = b"****"
            else:
                shown = b" ".join(words[:2]) + (b" ****" if len(words) > 2 else b"")
            log.debug("C: %s", shown.decode("ascii", "replace"))
            return
        if len(data) > 2048:
            log.debug("C: <%d bytes of data>", len(data))
            return
        for line in bytes(data).decode("utf-8", "replace").split("\r\n")[:-1]:
            log.debug("C: %s", line)

    def _trace_replies(self, replies: list[RawReply]) -> None:
        log = self.trace
        assert log is not None
        for code, lines in replies:
            for i, line in enumerate(lines):
                sep = " " if i == len(lines) - 1 else "-"
                text = line.decode("utf-8", "replace")
                if code == 334:
                    text = "****"  # SASL challenges may echo credentials (XOAUTH2 errors)
                log.debug("S: %d%s%s", code, sep, text)

    # -- STARTTLS --------------------------------------------------------------------------

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float
    ) -> None:
        """Upgrade to TLS after a 220 to STARTTLS and write through the TLS transport.

        Raises:
            SMTPTLSError: The handshake failed.
            SMTPError: The connection failed meanwhile (other than by being closed).
        """
        try:
            transport = await self._loop.start_tls(
                self.transport,  # type: ignore[arg-type]
                self,
                context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except (ssl.SSLError, ssl.CertificateError, OSError, asyncio.TimeoutError,
                ConnectionError) as exc:
            if self.error is not None and not isinstance(self.error, SMTPServerDisconnected):
                raise self.error from exc
            raise SMTPTLSError(f"TLS handshake failed: {exc}") from exc
        if transport is None:
            raise SMTPTLSError("TLS handshake failed: the connection was closed")
        self.transport = transport

    # -- write backpressure --------------------------------------------------------------

    def mark_end(self, keep: int = 0) -> int:
        """Note that the bytes written so far, but for the last ``keep``, end a message.

        Those bytes end with the message's final dot or ``BDAT ... LAST`` chunk (``keep``
        counts what follows it in the same write: the next message's pipelined
        commands). :meth:`sent` tells, from now on, whether that end has been handed to
        the kernel: a message whose end never left the process cannot have been
        delivered, whatever happens next, so it is retried like any failure before it
        instead of being reported "maybe delivered". Several ends may be outstanding at
        once (a BDAT window); they leave in the order written.

        Returns:
            The end's offset in the connection's output, for :meth:`sent`.

        Costs one buffer-size read when the write went straight to the kernel (the
        usual case). Otherwise the transport's write limits are lowered to the bytes
        behind the oldest unsent end, so that :meth:`resume_writing` reports the moment
        it drains past it (moved on every later write). (Behind TLS this sees the TLS
        layer's buffer: the few kilobytes of ciphertext the raw socket transport may
        still hold count as sent, the safe side: "maybe".)
        """
        end = self._last_end = self.written - keep
        ends = self._ends
        if ends or self.transport.get_write_buffer_size() > keep:  # type: ignore[union-attr]
            ends.append(end)
            self._track_ends()
        return end

    def sent(self, end: int) -> bool:
        """Has the end at offset ``end`` (from :meth:`mark_end`) reached the kernel?"""
        ends = self._ends
        return not ends or end < ends[0]

    @property
    def end_sent(self) -> bool:
        """Has the last end marked (:meth:`mark_end`) reached the kernel?"""
        return self.sent(self._last_end)

    def _track_ends(self) -> None:
        # Drop the ends that have left user space; arm the limits for the oldest other.
        transport = self.transport
        assert transport is not None
        ends = self._ends
        flushed = self.written - transport.get_write_buffer_size()
        while ends and ends[0] <= flushed:
            ends.popleft()
        if ends:
            behind = self.written - ends[0]
            transport.set_write_buffer_limits(high=behind, low=behind)
        else:
            transport.set_write_buffer_limits()  # back to the defaults

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._last = self._loop.time()
        if self._ends:
            self._track_ends()  # an end may have left user space
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark.

        Raises:
            SMTPError: The connection failed meanwhile (or had failed already).
        """
        if self.error is not None:
            raise self.error
        if not self.paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
            self._last = self._loop.time()
            if self._timer is None:
                self._timer = self._loop.call_at(self._last + self.timeout, self._on_timer)
        await waiter

    # -- failure -------------------------------------------------------------------------

    def fail(self, error: SMTPError, abort: bool = True) -> None:
        """Break the connection: every waiter fails with ``error``; the transport closes.

        Only the first error is kept; later calls just make sure the transport is closed.

        Args:
            error: Why the connection is unusable.
            abort: Drop unsent bytes (a broken peer); False lets queued bytes go out.
        """
        if self.error is None:
            self.error = error
            waiters = self._waiters
            while waiters:
                fut = waiters.popleft()[0]
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # later pipelined waiters may never be awaited
            drain = self._drain_waiter
            if drain is not None and not drain.done():
                self._drain_waiter = None
                drain.set_exception(error)
                drain.exception()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
