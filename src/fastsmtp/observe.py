"""What a pool reports about itself: its counters and one event per settled message.

The pool keeps a :class:`PoolCounters` (plain integers, bumped where a message is settled
or retried) and, when observers are registered with
:meth:`SMTPPool.add_observer <fastsmtp.pool.SMTPPool.add_observer>`, calls each of them
with one :class:`MessageEvent` per settled message. Tracing (:mod:`fastsmtp.tracing`) and
Prometheus metrics (:mod:`fastsmtp.metrics`) are built on these events instead of being
wired into the pool, and a pool without observers pays nothing for them.

No asyncio and no sockets here: this is a values module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .errors import SMTPError, SMTPMaybeDelivered

if TYPE_CHECKING:
    from ._transaction import SendResult

__all__ = [
    "OUTCOMES",
    "SENT",
    "REFUSED",
    "FAILED",
    "MAYBE_DELIVERED",
    "MessageEvent",
    "Observer",
    "PoolCounters",
    "outcome_of",
]

#: The message was accepted by the server (some recipients may have been refused).
SENT: Final = "sent"
#: The server refused it with a reply (4xx after the last attempt, or 5xx).
REFUSED: Final = "refused"
#: ``send()`` raised without a refusal: connection, TLS, timeout, local error, pool closed.
FAILED: Final = "failed"
#: The connection was lost after the final dot: the server may have the message.
MAYBE_DELIVERED: Final = "maybe_delivered"
#: Every outcome a message can have; each settled message has exactly one.
OUTCOMES: Final = (SENT, REFUSED, FAILED, MAYBE_DELIVERED)


def outcome_of(error: BaseException) -> str:
    """The outcome of a message whose ``send()`` raised ``error``."""
    if isinstance(error, SMTPMaybeDelivered):
        return MAYBE_DELIVERED
    if isinstance(error, SMTPError) and error.reply is not None:
        return REFUSED
    return FAILED


class PoolCounters:
    """Running totals of one pool; :meth:`SMTPPool.stats` reports them.

    Integers only, bumped in place: the per-message cost is one increment. The four
    outcome counters are disjoint (each settled message counts in exactly one of them). A
    message whose caller cancelled ``send()`` is counted in none.

    Attributes:
        sent: Messages the server accepted.
        refused: Messages the server refused (see :data:`REFUSED`).
        failed: Messages that failed without a refusal (see :data:`FAILED`).
        maybe_delivered: Messages whose connection was lost after the final dot.
        retried: Failed attempts put back for another one (a failed connect charges
            every waiting message an attempt, so each of them counts).
        in_flight: Messages in a transaction on a connection right now (a gauge).
    """

    __slots__ = ("sent", "refused", "failed", "maybe_delivered", "retried", "in_flight")

    def __init__(self) -> None:
        self.sent = 0
        self.refused = 0
        self.failed = 0
        self.maybe_delivered = 0
        self.retried = 0
        self.in_flight = 0

    def count_failure(self, error: BaseException) -> str:
        """Count a message whose ``send()`` raised ``error``; return its outcome."""
        outcome = outcome_of(error)
        if outcome is MAYBE_DELIVERED:
            self.maybe_delivered += 1
        elif outcome is REFUSED:
            self.refused += 1
        else:
            self.failed += 1
        return outcome


class MessageEvent:
    """One settled message, as the pool's observers see it.

    Attributes:
        outcome: One of :data:`OUTCOMES`.
        host: The server's host name or address.
        port: The server's port.
        recipients: Recipients in the envelope.
        size: Bytes of message data written (:attr:`SendResult.size`); 0 when the
            message failed.
        code: The server's reply code: the final reply for a sent message, the refusing
            reply for a refused one; None when there was no reply.
        duration: Seconds from the ``send()`` call to the outcome (queueing, connecting,
            retries and the transaction itself).
        result: The :class:`~fastsmtp.connection.SendResult` of a sent message, else None.
        error: What ``send()`` raised, else None.
    """

    __slots__ = ("outcome", "host", "port", "recipients", "size", "code", "duration",
                 "result", "error")

    def __init__(self, outcome: str, host: str, port: int, recipients: int, size: int,
                 code: int | None, duration: float, result: SendResult | None = None,
                 error: BaseException | None = None) -> None:
        self.outcome = outcome
        self.host = host
        self.port = port
        self.recipients = recipients
        self.size = size
        self.code = code
        self.duration = duration
        self.result = result
        self.error = error

    @classmethod
    def of(cls, outcome: SendResult | BaseException, kind: str, host: str, port: int,
           recipients: int, duration: float) -> MessageEvent:
        """The event of a message settled with ``outcome`` (a result or an error)."""
        if isinstance(outcome, BaseException):
            reply = outcome.reply if isinstance(outcome, SMTPError) else None
            return cls(kind, host, port, recipients, 0,
                       reply.code if reply is not None else None, duration, None, outcome)
        return cls(kind, host, port, recipients, outcome.size, outcome.response.code,
                   duration, outcome, None)

    def __repr__(self) -> str:
        return (f"MessageEvent({self.outcome}, {self.host}:{self.port}, "
                f"recipients={self.recipients}, size={self.size}, code={self.code}, "
                f"duration={self.duration:.6f})")


#: An observer: called once per settled message, on the pool's event loop, in the
#: context (:mod:`contextvars`) of the ``send()`` call, so that a tracing observer's span
#: gets the caller's span as its parent. It must not block; an exception it raises is
#: logged and otherwise ignored.
Observer = Callable[[MessageEvent], object]
