"""Built-in server handlers: :class:`Sink`, :class:`StreamingHandler`, :class:`Maildir`,
:class:`Printing`, :class:`Collector` (with :class:`ReceivedMessage`).

Any aiosmtpd handler works with :class:`fastsmtp.server.SMTPServer` too; these are the
ones fastsmtp ships. See ``fastsmtp.server`` for the hook protocol.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hmac
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, BinaryIO, TextIO

from .auth import AuthResult, CramMD5Credentials

__all__ = ["Sink", "StreamingHandler", "Maildir", "Printing", "Collector", "ReceivedMessage"]

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


class ReceivedMessage:
    """One message a :class:`Collector` received, with its envelope.

    Attributes:
        mail_from: The reverse path (``""`` for the null sender).
        rcpt_tos: The accepted recipients, in order.
        content: The message as received (bytes, CRLF line endings, dots unstuffed).
        mail_options: The MAIL parameters (``["SIZE=1024", "BODY=8BITMIME"]``).
        rcpt_options: The RCPT parameters of all recipients.
        peer: The client's address.
        login: The user the client authenticated as, or None.
        tls: True when the message came over TLS (implicit or STARTTLS).
    """

    __slots__ = ("mail_from", "rcpt_tos", "content", "mail_options", "rcpt_options", "peer",
                 "login", "tls", "_message")

    def __init__(self, mail_from: str, rcpt_tos: list[str], content: bytes, *,
                 mail_options: list[str] | None = None, rcpt_options: list[str] | None = None,
                 peer: Any = None, login: str | None = None, tls: bool = False) -> None:
        self.mail_from = mail_from
        self.rcpt_tos = rcpt_tos
        self.content = content
        self.mail_options = mail_options or []
        self.rcpt_options = rcpt_options or []
        self.peer = peer
        self.login = login
        self.tls = tls
        self._message: EmailMessage | None = None

    @property
    def message(self) -> EmailMessage:
        """The content parsed with :data:`email.policy.default` (parsed once, on first use)."""
        if self._message is None:
            parsed = email.message_from_bytes(self.content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)  # what policy.default builds
            self._message = parsed
        return self._message

    def __repr__(self) -> str:
        return (f"<ReceivedMessage from={self.mail_from!r} to={self.rcpt_tos!r} "
                f"size={len(self.content)}>")


class Collector:
    """Keep every message in :attr:`messages` (a test server's handler, or a dev inbox).

    It is what the pytest fixture ``smtp_server`` (:mod:`fastsmtp.testing`) runs, and works
    with any :class:`~fastsmtp.server.SMTPServer` or
    :class:`~fastsmtp.server.SMTPServerThread`. The 250 to the final dot is sent only
    after the message was appended, so once a client's send returned the message is in
    :attr:`messages`, whichever thread looks.

    Args:
        users: ``{user: password}`` accepted by its :meth:`authenticator` (PLAIN, LOGIN and
            CRAM-MD5); None refuses every login. The server offers AUTH only when told to
            (``enable_auth`` / ``require_auth``).
    """

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self.users: dict[str, str] = dict(users or {})
        #: The received messages, oldest first.
        self.messages: list[ReceivedMessage] = []
        # The server's loop thread appends while a test thread reads or clears.
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message; accept it."""
        login = session.auth_data if isinstance(session.auth_data, str) else None
        received = ReceivedMessage(
            envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content),
            mail_options=list(envelope.mail_options), rcpt_options=list(envelope.rcpt_options),
            peer=session.peer, login=login if session.authenticated else None,
            tls=session.ssl is not None,
        )
        with self._lock:
            self.messages.append(received)
        return "250 2.0.0 OK: message accepted"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        """Accept the users of :attr:`users` (the server calls this for AUTH)."""
        # Duck-typed: once the application imported aiosmtpd, PLAIN and LOGIN hand out
        # aiosmtpd's own LoginPassword (see fastsmtp.server.auth), not fastsmtp's.
        login = getattr(auth_data, "login", None)
        if isinstance(login, bytes):
            user = login.decode("utf-8", "replace")
            password = self.users.get(user)
            if password is not None:
                if isinstance(auth_data, CramMD5Credentials):
                    ok = auth_data.verify(password)
                else:
                    given = getattr(auth_data, "password", None)
                    ok = isinstance(given, bytes) and hmac.compare_digest(
                        given, password.encode("utf-8"))
                if ok:
                    return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False)

    def clear(self) -> None:
        """Forget every message received so far."""
        with self._lock:
            self.messages.clear()
