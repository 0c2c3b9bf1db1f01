"""A fast raw SMTP sink with per-session faults, for the pool's resilience tests.

:class:`Sink` answers pipelined ESMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) on
127.0.0.1, port 0, and records each message it accepted (by its ``X-Serial`` header) and
every reply code it sent. Faults, chosen per test:

* ``reset_sessions``: session numbers (0-based, in accept order) that are aborted with a
  TCP RST before the greeting;
* ``cut_after``: a session that has accepted that many messages answers the next MAIL
  with ``421 4.3.2 too many messages in this session`` and closes;
* ``max_age``: a session older than that many seconds answers MAIL with a ``421``
  "session too long" and closes;
* ``silent_after``: in session 0, after that many accepted messages, the sink reads and
  never answers again (a session dropped by a middlebox);
* ``throttle``: at most that many MAILs accepted in any sliding second; beyond, ``454
  4.7.0 Throttling failure: Maximum sending rate exceeded``.

Our own SMTPServer is the peer elsewhere; this sink exists because these faults sit
below any handler hook (before the greeting, per session, per second).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import Counter, deque

from .peer import RawServer, reset

__all__ = ["Sink"]

_SERIAL = re.compile(rb"X-Serial: (\d+)")
CUT = b"421 4.3.2 too many messages in this session, closing\r\n"
AGED = b"421 4.4.2 session too long, closing\r\n"
THROTTLED = b"454 4.7.0 Throttling failure: Maximum sending rate exceeded\r\n"


class Sink(RawServer):
    """See the module docs; use as ``async with Sink(...) as sink`` (``sink.port``)."""

    def __init__(self, *, reset_sessions: frozenset[int] | set[int] = frozenset(),
                 cut_after: int | None = None, max_age: float | None = None,
                 silent_after: int | None = None, throttle: int | None = None) -> None:
        self.reset_sessions = set(reset_sessions)
        self.cut_after = cut_after
        self.max_age = max_age
        self.silent_after = silent_after
        self.throttle = throttle
        self.sessions = 0
        self.accepted: Counter[int] = Counter()  # serial -> times accepted (250 after dot)
        self.codes: Counter[int] = Counter()  # every reply code sent to MAIL
        self.commands: list[tuple[int, bytes]] = []  # (session, verb) of RSET/NOOP
        self._mails: deque[float] = deque()
        super().__init__()

    stream_limit = 1 << 20

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.sessions
        self.sessions += 1
        if index in self.reset_sessions:
            reset(writer)
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # replies are small writes: never wait for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        born = loop.time()
        delivered = 0
        mail = rcpt = False  # a transaction is open / has a recipient
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if index == 0 and self.silent_after is not None \
                        and delivered >= self.silent_after:
                    self.commands.append((index, verb))
                    while await reader.read(65536):
                        pass
                    return
                if verb in (b"EHLO", b"HELO", b"LHLO"):
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    reply = b"250 2.1.0 ok\r\n"
                    now = loop.time()
                    if self.cut_after is not None and delivered >= self.cut_after:
                        reply = CUT
                    elif self.max_age is not None and now - born > self.max_age:
                        reply = AGED
                    elif self.throttle is not None:
                        mails = self._mails
                        while mails and mails[0] <= now - 1.0:
                            mails.popleft()
                        if len(mails) >= self.throttle:
                            reply = THROTTLED
                        else:
                            mails.append(now)
                    self.codes[int(reply[:3])] += 1
                    mail = reply[:1] == b"2"
                    writer.write(reply)
                    if reply[:3] == b"421":
                        await writer.drain()
                        return
                elif verb == b"RCPT":
                    rcpt = mail
                    writer.write(b"250 2.1.5 ok\r\n" if mail else b"503 5.5.1 MAIL first\r\n")
                elif verb == b"DATA":
                    if not rcpt:
                        writer.write(b"503 5.5.1 no valid recipients\r\n")
                        await writer.drain()
                        continue
                    mail = rcpt = False
                    writer.write(b"354 go ahead\r\n")
                    data = await reader.readuntil(b"\r\n.\r\n")
                    match = _SERIAL.search(data)
                    if match:
                        self.accepted[int(match[1])] += 1
                    delivered += 1
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb in (b"RSET", b"NOOP"):
                    self.commands.append((index, verb))
                    mail = rcpt = False
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"500 5.5.1 what\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.transport.abort()
