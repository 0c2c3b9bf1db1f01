"""Built-in server handlers: :class:`Sink`, :class:`StreamingHandler`, :class:`Maildir`,
:class:`Printing`.

Any aiosmtpd handler works with :class:`fastsmtp.server.SMTPServer` too; these are the
ones fastsmtp ships. See ``fastsmtp.server`` for the hook protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
import time
from typing import Any, BinaryIO, TextIO

__all__ = ["Sink", "StreamingHandler", "Maildir", "Printing"]

log = logging.getLogger("fastsmtp.handlers")


class Sink:
    """Accept and discard every message.

    It defines no hook at all, so the server answers everything from precomputed
    replies: this is the fastest possible handler (the benchmark sink).
    """


class StreamingHandler:
    """Base class for handlers that receive the message in chunks (never all in memory).

    The seed's ``startData`` / ``data`` / ``dataReady`` events. Override what you need;
    each method may be ``async def`` or a plain ``def``. Chunks are the unstuffed message
    bytes with CRLF line endings, in order; reading from the client pauses while an
    awaited ``data_chunk`` runs, so a slow sink slows the client instead of filling memory.
    """

    async def start_data(self, session: Any, envelope: Any) -> str | None:
        """The client sent DATA. Return None to go on, or a 4xx/5xx reply to refuse."""
        return None

    async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
        """Consume one chunk of the message."""

    async def data_ready(self, session: Any, envelope: Any) -> str:
        """The whole message arrived; return the final reply (e.g. with a queue id)."""
        return "250 2.0.0 OK: message accepted"

    async def data_abort(self, session: Any, envelope: Any) -> None:
        """The message was refused (too big, bare newline, failure) or the client left."""


_counter = itertools.count()


class Maildir(StreamingHandler):
    """Deliver every message into a Maildir, durably, streaming it to disk.

    Each message is written to ``tmp/`` as it arrives, fsynced, renamed into ``new/`` and
    the directory fsynced, all *before* the 250 is sent: a crash never loses a message the
    client was told was accepted. A ``Return-Path`` and a ``Delivered-To`` header are
    prepended; the rest is stored exactly as received (CRLF line endings).

    Args:
        path: The Maildir (``tmp``, ``new`` and ``cur`` are created as needed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def _unique(self) -> str:
        now = time.time()
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{self._host}"

    def start_data(self, session: Any, envelope: Any) -> None:  # type: ignore[override]
        """Open ``tmp/<unique>`` for the message and write the delivery headers."""
        name = self._unique()
        tmp = os.path.join(self.path, "tmp", name)
        fh: BinaryIO = open(tmp, "xb")  # noqa: SIM115 - closed in data_ready/data_abort
        envelope.maildir_file = (fh, name)
        rcpts = ", ".join(envelope.rcpt_tos)
        fh.write(f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {rcpts}\r\n".encode())
        return None

    def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:  # type: ignore[override]
        """Append a chunk (a buffered write: the page cache absorbs it)."""
        envelope.maildir_file[0].write(chunk)

    async def data_ready(self, session: Any, envelope: Any) -> str:
        """Fsync, move into ``new/``, fsync the directory, then accept."""
        fh, name = envelope.maildir_file
        del envelope.maildir_file
        # fsync blocks for milliseconds: keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, self._commit, fh, name)
        return f"250 2.0.0 OK: queued as {name.split('.')[1]}"

    def _commit(self, fh: BinaryIO, name: str) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        os.rename(os.path.join(self.path, "tmp", name), os.path.join(self.path, "new", name))
        dir_fd = os.open(os.path.join(self.path, "new"), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def data_abort(self, session: Any, envelope: Any) -> None:  # type: ignore[override]
        """Remove the partial file of a refused or abandoned message."""
        entry = getattr(envelope, "maildir_file", None)
        if entry is None:
            return
        del envelope.maildir_file
        fh, name = entry
        fh.close()
        try:
            os.unlink(os.path.join(self.path, "tmp", name))
        except OSError:
            log.warning("could not remove %s from %s/tmp", name, self.path)


class Printing:
    """Print every message with its envelope (a development sink, like aiosmtpd's Debugging).

    Args:
        stream: Where to print (default: ``sys.stdout``).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Print the message; accept it."""
        out = self.stream or sys.stdout
        content = envelope.content.decode("utf-8", "replace").replace("\r\n", "\n")
        print("---------- MESSAGE FOLLOWS ----------", file=out)
        print(f"X-Peer: {session.peer!r}", file=out)
        print(f"X-MailFrom: {envelope.mail_from}", file=out)
        print(f"X-RcptTo: {', '.join(envelope.rcpt_tos)}", file=out)
        print(content, end="" if content.endswith("\n") else "\n", file=out)
        print("------------ END MESSAGE ------------", file=out, flush=True)
        return "250 2.0.0 OK"
