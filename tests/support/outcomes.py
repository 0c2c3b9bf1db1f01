"""A handler with a scripted outcome per recipient or subject, for the observability tests.

Recipients ``nobody@...`` are refused (550); ``busy@...`` are deferred once (450) and
accepted on the retry; a message whose subject is ``drop`` has its connection reset after
the final dot (maybe delivered) the first time it arrives; DATA waits while ``gate`` is
set and clear.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Outcomes:
    """A handler with a scripted outcome per recipient or subject (see the module doc)."""

    def __init__(self) -> None:
        self.deferred: set[str] = set()
        self.dropped: set[bytes] = set()
        self.delivered: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.in_data = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@") and address not in self.deferred:
            self.deferred.add(address)
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | None:
        self.in_data += 1
        if self.gate is not None:
            await self.gate.wait()
        content = envelope.content
        if b"Subject: drop" in content and content not in self.dropped:
            self.dropped.add(content)
            server.transport.abort()  # after the final dot, before the reply
            return None
        self.delivered.append(content)
        return "250 2.0.0 queued"
