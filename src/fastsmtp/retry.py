"""The one retry policy: may a failed send be attempted again?

The pool (whether to requeue a job), the campaign (``deferred`` or ``failed``) and
:attr:`fastsmtp.errors.SMTPError.transient` all ask :func:`verdict`, so the same error is
judged the same way everywhere.

The rule, first match wins:

1. :class:`~fastsmtp.errors.SMTPMaybeDelivered` (the connection was lost after the
   final dot): ``MAYBE_DELIVERED``. Never resend silently: it may be a duplicate.
2. A local error (:class:`~fastsmtp.errors.SMTPLocalError`: bad input, a missing
   extension, a closed pool): ``FINAL``. The same call fails the same way.
3. :class:`~fastsmtp.errors.SMTPRecipientsRefused`: ``RETRY`` only if *every*
   recipient was refused with a 4xx; one 5xx makes it ``FINAL``.
4. Any other error caused by a reply: a 4xx is ``RETRY`` (RFC 5321: a transient
   failure; a 454 to AUTH or STARTTLS included), anything else ``FINAL`` (a 5xx will not
   change; an unexpected 2xx/3xx is a server that misbehaves the same way next time).
5. No reply: a lost or refused connection, a timeout, or a garbled peer
   (:class:`~fastsmtp.errors.SMTPProtocolError`) is ``RETRY``: nothing was delivered
   and a fresh connection may work. TLS, authentication and every other failure without
   a reply are ``FINAL``: configuration problems that a retry does not fix.
6. Anything that is not an :class:`~fastsmtp.errors.SMTPError` (a bug, a hook that
   raised): ``FINAL``.

The *budget* (how many attempts, which backoff) belongs to the caller (the pool's
``max_attempts``); this module only says whether another attempt is sensible.
"""

from __future__ import annotations

import enum

from .errors import (
    SMTPConnectionError,
    SMTPError,
    SMTPLocalError,
    SMTPMaybeDelivered,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPTimeoutError,
)

__all__ = ["Verdict", "verdict", "is_retryable"]


class Verdict(enum.Enum):
    """What to do with a message whose attempt failed."""

    #: Not delivered; another attempt (on another connection, later) may succeed.
    RETRY = "retry"
    #: Not delivered, and another attempt would fail the same way.
    FINAL = "final"
    #: Perhaps delivered (lost after the final dot): report it, do not resend it.
    MAYBE_DELIVERED = "maybe-delivered"


# Failures without a reply that a fresh connection may not repeat.
_RETRY_WITHOUT_REPLY = (SMTPConnectionError, SMTPTimeoutError, SMTPProtocolError)


def verdict(exc: BaseException) -> Verdict:
    """Judge a failed attempt (see the module docs for the rule).

    Args:
        exc: What the attempt raised (or the error a ``send_many`` result holds).
    """
    if isinstance(exc, SMTPMaybeDelivered):
        return Verdict.MAYBE_DELIVERED
    if not isinstance(exc, SMTPError) or isinstance(exc, SMTPLocalError):
        return Verdict.FINAL
    if isinstance(exc, SMTPRecipientsRefused) and exc.rejected_errors:
        transient = all(
            e.reply is not None and e.reply.is_transient for e in exc.rejected_errors
        )
        return Verdict.RETRY if transient else Verdict.FINAL
    reply = exc.reply
    if reply is not None:
        return Verdict.RETRY if reply.is_transient else Verdict.FINAL
    if isinstance(exc, _RETRY_WITHOUT_REPLY):
        return Verdict.RETRY
    return Verdict.FINAL


def is_retryable(exc: BaseException) -> bool:
    """``verdict(exc) is Verdict.RETRY``: may the message be sent again?"""
    return verdict(exc) is Verdict.RETRY
