"""The asyncio Protocol of one server connection: bytes between the socket and the session.

``data_received`` feeds the core's ``ServerReader``, hands every complete command line (or
DATA chunk) to the sans-IO :class:`~fastsmtp.server.session.ServerSession`, and writes all
replies produced by one read in a single ``transport.write`` (pipelined clients get one
segment back, not one per command).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .._codec import ServerReader
from .config import peer_in
from .hooks import PENDING, HookRunner
from .proxy import ProxyError, ProxyHeader, ProxyParser
from .session import (
    ACT_CHUNK,
    ACT_CLOSE,
    ACT_DATA,
    ACT_STARTTLS,
    Action,
    ChunkAction,
    Envelope,
    HookCall,
    ServerSession,
    Session,
)
from .state import ServerState

if TYPE_CHECKING:
    from .listener import SMTPServer

__all__ = ["SMTPServerProtocol"]

log = logging.getLogger("fastsmtp.server")

#: Replies gathered before a write, so that a paused transport stops processing early.
_FLUSH_REPLIES = 64
#: ``_pre`` while the greeting is delayed (``greeting_delay``).
_GREETING_PENDING = object()


def _ssl_info(transport: asyncio.BaseTransport) -> dict[str, Any]:
    ssl_object = transport.get_extra_info("ssl_object")
    return {
        "cipher": transport.get_extra_info("cipher"),
        "peercert": transport.get_extra_info("peercert"),
        "ssl_object": ssl_object,
        "version": ssl_object.version() if ssl_object is not None else None,
    }


class SMTPServerProtocol(asyncio.Protocol):
    """One client connection (the ``server`` argument of handler hooks).

    Built on the loop that serves it (it is bound to the running loop).

    Args:
        server: The :class:`SMTPServer` (for handlers: ``server.server``).
        state: What the server's connections share; default: ``server.state``.

    Attributes:
        server: The :class:`SMTPServer`.
        transport: The connection's transport (replaced by the TLS one after STARTTLS).
        loop: The event loop.
    """

    def __init__(self, server: SMTPServer, state: ServerState | None = None) -> None:
        self.server = server
        state = self._state = state if state is not None else server.state
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        config = self._config = state.config
        self.transport: Any = None
        self._sm: ServerSession | None = None
        # Where the reader's data-mode output goes: the session's data_received (DATA)
        # or chunk_received (BDAT), bound once per session and picked per message.
        self._on_data: Any = None
        self._on_dot: Any = None
        self._on_chunk: Any = None
        self._reader = ServerReader()
        self._busy = False  # a hook (or the TLS handshake) is in flight; lines wait
        self._closed = False
        # Before the session starts (a PROXY header to read, a greeting delay to wait out)
        # ``_closed`` is True, so the per-read path tests nothing more, and ``_pre`` holds
        # the ProxyParser, or _GREETING_PENDING.
        self._pre: Any = None
        self._lost = False  # connection_lost has run
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._cmd_deadline = 0.0
        self._data_deadline = 0.0
        self._last_rx = 0.0
        # Checked once per connection: the per-line path pays one attribute test.
        self._debug = config.debug and log.isEnabledFor(logging.DEBUG)
        self._hooks = HookRunner(self, config.handler_timeout, self._spawn)

    # aiosmtpd handlers sometimes read these from the server object.
    @property
    def hostname(self) -> str:
        """The server name (greeting, EHLO)."""
        return self._config.name

    @property
    def session(self) -> Session | None:
        """The current :class:`Session` (a new one after STARTTLS)."""
        return self._sm.session if self._sm is not None else None

    @property
    def envelope(self) -> Envelope | None:
        """The current transaction's :class:`Envelope`."""
        return self._sm.envelope if self._sm is not None else None

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport
        state = self._state
        config = self._config
        if not state.admit(self):
            log.warning("too many connections (%d); refusing one", len(state.connections))
            self._closed = True
            self._write(config.r_busy.encode("utf-8"))
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        if config.proxy_protocol and peer_in(config.proxy_trusted, peer):
            # A trusted proxy speaks first: its header names the real client.
            self._closed = True
            self._pre = ProxyParser()
            self._timer = self.loop.call_later(config.proxy_timeout, self._pre_timeout)
            return
        self._open_session(peer, None)

    def _open_session(self, peer: Any, header: ProxyHeader | None) -> None:
        """Start the SMTP session with ``peer`` (the real client); greet now or after the delay."""
        config = self._config
        transport = self.transport
        sm = self._sm = ServerSession(config, peer, config.secure, self.loop)
        self._on_data = self._on_dot = sm.data_received
        self._on_chunk = sm.chunk_received
        sm.session.proxy_data = header
        if self._debug:
            log.debug("%r connected%s", peer, " (TLS)" if config.secure else "")
        if config.secure:
            sm.session.ssl = _ssl_info(transport)
        if self._state.closing:
            action = sm.shutdown()
            assert action is not None  # a new session is idle
            self._closed = True
            self._write(action.reply)
            transport.close()
            return
        if config.greeting_delay:
            # Postfix's smtpd_greet_pause: a client that talks before the greeting is
            # a spam engine that does not wait for replies (an early talker).
            self._closed = True
            self._pre = _GREETING_PENDING
            self._timer = self.loop.call_later(config.greeting_delay, self._greet)
            return
        self._greet()

    def _greet(self) -> None:
        sm = self._sm
        assert sm is not None
        self._timer = None
        self._pre = None
        if self._lost:
            return
        if self._state.closing:
            self._write(self._config.r_closing.encode("utf-8"))
            self.transport.close()
            return
        self._closed = False
        self._write(sm.greeting())
        now = self.loop.time()
        self._cmd_deadline = now + self._config.timeout
        self._timer = self.loop.call_at(self._cmd_deadline, self._on_timer)

    def _pre_data(self, data: bytes) -> None:
        """Bytes before the session started: the PROXY header, or an early talker."""
        pre = self._pre
        if pre is _GREETING_PENDING:
            peer = self._sm.session.peer if self._sm is not None else None
            log.info("%r talked before the greeting; closing", peer)
            self._end_pre()
            self._write(self._config.r_early.encode("utf-8"))
            self.transport.close()
            return
        real = self.transport.get_extra_info("peername")
        try:
            header = pre.feed(data)
        except ProxyError as exc:
            log.warning("%r: bad PROXY header (%s); closing", real, exc)
            self._end_pre()
            self.transport.close()
            return
        if header is None:
            return
        self._end_pre()
        peer = header.source if header.command == "PROXY" and isinstance(header.source, tuple) else real
        self._open_session(peer, header)
        rest = pre.rest
        if rest:
            self.data_received(rest)

    def _end_pre(self) -> None:
        self._pre = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pre_timeout(self) -> None:
        self._timer = None
        if self._pre is not None and not self._lost:
            log.warning(
                "%r: no complete PROXY header within %gs; closing",
                self.transport.get_extra_info("peername"),
                self._config.proxy_timeout,
            )
            self._pre = None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._closed = True
        self._lost = True
        self._state.release(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sm = self._sm
        if sm is None:
            return
        if self._debug:
            log.debug("%r closed%s", sm.session.peer, f" ({exc})" if exc else "")
        # A message in progress is dropped: its handler is told, never asked to accept it;
        # then the seed's close event.
        self._run_detached(sm.closed(self._reader.in_data))

    def pause_writing(self) -> None:  # noqa: D102
        # A client that pipelines without reading our replies must not grow our buffer.
        self._write_paused = True
        if not self._closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._write_paused = False
        if not self._closed and not self._busy:
            self.transport.resume_reading()
            # Lines left in the reader when _process stopped at the high-water mark; not
            # run from inside the transport's write path. (In data mode even with nothing
            # buffered: "BDAT 0" ends without a byte.)
            if self._reader.buffered or self._reader.in_data:
                self.loop.call_soon(self._resume_processing)

    def _resume_processing(self) -> None:
        if not self._closed and not self._busy and not self._write_paused:
            self._process()

    def eof_received(self) -> bool | None:  # noqa: D102
        return None  # close our side too

    # -- input --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self._closed:
            if self._pre is not None:
                self._pre_data(data)
            return
        self._reader.feed(data)
        if self._busy:
            return
        self._last_rx = self.loop.time()
        self._process()

    def _process(self, out: list[bytes] | None = None) -> None:
        """Handle every complete line/chunk buffered; write all replies in one write."""
        reader = self._reader
        sm = self._sm
        assert sm is not None
        if out is None:
            out = []
        lines = 0
        while True:
            if reader.in_data:
                item = reader.next_data()
                if item is None:
                    break
                if self._debug:
                    log.debug("%r >> <%d bytes of message data>", sm.session.peer, len(item[0]))
                r = self._on_data(item[0], item[1])
            else:
                item = reader.next_line()
                if item is None:
                    break
                lines += 1
                if self._debug:
                    self._log_line(sm, item[1])
                r = sm.receive_line(item[0], item[1])
            # Exact-class tests: cheaper than isinstance on this per-line path.
            if r.__class__ is bytes:
                out.append(r)
            elif r is not None:
                if r.__class__ is HookCall:
                    r = self._invoke(r)
                    if r is PENDING:
                        self._flush(out)
                        return
                if r.__class__ is bytes:
                    out.append(r)
                elif r is not None and not self._act(r, out):
                    return
            if len(out) >= _FLUSH_REPLIES:
                # Replies can be 14 times their command's size (HELP, EHLO): answering a
                # whole 256 KiB read at once would buffer megabytes for a client that does
                # not read them. Write in batches; at the high-water mark the rest waits
                # in the reader (reading is paused) until resume_writing.
                self._flush(out)
                if self._write_paused:
                    break
        self._flush(out)
        if lines and not reader.in_data:
            self._cmd_deadline = self.loop.time() + self._config.timeout
        if sm.closing:
            self.shutdown()  # the server is closing: 421 once the transaction has ended

    def _log_line(self, sm: ServerSession, line: bytes) -> None:
        log.debug("%r >> %r", sm.session.peer, sm.loggable(line))

    def _write(self, data: bytes) -> None:
        """Write replies (logged with ``debug``)."""
        self.transport.write(data)
        if self._debug:
            peer = self._sm.session.peer if self._sm is not None else None
            log.debug("%r << %r", peer, data)

    def _flush(self, out: list[bytes]) -> None:
        if out and not self._closed:
            self._write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _act(self, action: Action, out: list[bytes]) -> bool:
        """Send the action's reply and carry it out; False when processing must stop."""
        sm = self._sm
        assert sm is not None
        out.append(action.reply)
        kind = action.kind
        if kind == ACT_DATA or kind == ACT_CHUNK:
            if kind == ACT_DATA:
                self._reader.start_data(self._config.max_size)
                self._on_data = self._on_dot
            else:
                chunk: ChunkAction = action  # type: ignore[assignment]
                self._reader.start_chunk(chunk.size, chunk.max_size, chunk.first)
                self._on_data = self._on_chunk
            now = self.loop.time()
            self._data_deadline = now + self._config.data_timeout
            self._last_rx = now
            timer = self._timer
            if timer is not None and self._data_deadline < timer.when():
                # The only deadline that can come before the armed one (data_timeout
                # shorter than timeout): re-arm once.
                timer.cancel()
                self._timer = self.loop.call_at(self._data_deadline, self._on_timer)
            return True
        self._flush(out)
        if kind == ACT_CLOSE:
            self._close()
            return False
        if kind == ACT_STARTTLS:
            # Pipelined plaintext after STARTTLS must never be read as if it came over TLS
            # (CVE-2011-0411): stop reading now and drop what is buffered.
            self.transport.pause_reading()
            dropped = self._reader.clear()
            if dropped:
                log.warning("%r: %d bytes pipelined after STARTTLS discarded", sm.session.peer, dropped)
            self._busy = True
            self._spawn(self._starttls())
            return False
        return True  # pragma: no cover - no other actions

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.transport.close()
        if self.transport.get_write_buffer_size():
            # close() waits until the buffer is flushed: a client that never reads its
            # last replies would keep the connection, its buffer and a max_clients slot
            # for ever. It gets one more timeout to read them, then the connection is cut.
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(self._config.timeout, self.abort)

    # -- hooks --------------------------------------------------------------------------

    def _invoke(self, call: HookCall) -> Any:
        """Run a hook chain whose output answers the client; see :class:`HookRunner`.

        Returns its output, or ``PENDING`` when a hook is being awaited: reading pauses and
        :meth:`_hook_done` goes on once the chain has finished.
        """
        r = self._hooks.run(call, self._hook_done)
        if r is PENDING:
            self._busy = True
            if not self._closed:
                self.transport.pause_reading()
        return r

    def _hook_done(self, r: bytes | Action | None) -> None:
        self._busy = False
        if self._closed:
            return
        out: list[bytes] = []
        if r.__class__ is bytes:
            out.append(r)
        elif r is not None and not self._act(r, out):  # type: ignore[arg-type]
            return
        self._cmd_deadline = self.loop.time() + self._config.timeout
        self._process(out)
        if not self._busy and not self._closed and not self._write_paused:
            self.transport.resume_reading()

    def _run_detached(self, call: HookCall | None) -> None:
        """Run a chain whose output nobody waits for (``data_abort``, ``handle_CLOSE``)."""
        if call is not None:
            self._hooks.run(call, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._state.spawn(self.loop, coro)

    # -- STARTTLS -----------------------------------------------------------------------

    async def _starttls(self) -> None:
        sm = self._sm
        assert sm is not None
        context = self._config.tls_context
        assert context is not None
        try:
            transport = await self.loop.start_tls(
                self.transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._config.timeout,
            )
        except Exception as exc:
            log.info("%r STARTTLS handshake failed: %s", sm.session.peer, exc)
            self._closed = True
            self.transport.abort()
            return
        if transport is None or self._closed:
            return
        self.transport = transport
        # Everything said before TLS is forgotten (RFC 3207 section 4.2). Bytes in the
        # reader now can only have come through TLS: the plaintext ones were dropped.
        sm.tls_started(_ssl_info(transport))
        self._hook_done(None)

    # -- time limits ----------------------------------------------------------------------

    def _on_timer(self) -> None:
        # One timer per connection, re-armed only when it fires: moving a deadline is a
        # float store, so the per-command path never touches the loop's timer heap.
        self._timer = None
        if self._closed:
            return
        now = self.loop.time()
        timeout = self._config.timeout
        if self._busy:
            due = now + timeout  # waiting for our hook, not for the client
        elif self._reader.in_data:
            due = min(self._data_deadline, self._last_rx + timeout)
        else:
            due = self._cmd_deadline
        if now < due:
            self._timer = self.loop.call_at(due, self._on_timer)
            return
        sm = self._sm
        assert sm is not None
        log.info("%r timed out", sm.session.peer)
        abort = sm.abort_message(self._reader.in_data)
        self._write(sm.timed_out().reply)
        self._close()
        if abort is not None:
            self._run_detached(abort)

    # -- server shutdown ------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is closing: 421 and close now, or once the transaction has ended.

        A session inside a transaction, a running hook or a message being read finishes
        it: the protocol calls this again each time it has processed its input, so the
        421 goes out as soon as the session is idle (or answers its next command).
        """
        sm = self._sm
        if sm is None or self._closed:
            return
        action = sm.shutdown(idle=not (self._busy or self._reader.in_data))
        if action is not None:
            self._write(action.reply)
            self._close()

    def abort(self) -> None:
        """Cut the connection now (a closing server's last resort)."""
        # Also after _close(): a transport still flushing is cut all the same.
        self._closed = True
        if not self._lost:
            self.transport.abort()

