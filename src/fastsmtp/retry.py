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

Next to the policy, one more judgement: is a refusal about the *configuration* rather
than the message (:func:`is_configuration_error`, :func:`same_sender_refusal`)? A server
that wants authentication refuses every MAIL with 530 / 5.7.0; marking each recipient
"rejected" would burn a whole list on a wrong URL. Whoever sends a list (the campaign)
stops instead, and keeps the messages for a run with the right settings.

Two refinements of a transient reply live here too, so the pool asks one module:

* :func:`is_slow_down`: the server asks the client to send more slowly (421/450/451/452/
  454 with rate or throttling text, or an RFC 3463 ``4.7.x`` code such as Gmail's
  ``421 4.7.28`` or SES's ``454 Throttling failure``). The pool lowers its own rate.
* :func:`is_session_cut`: a 421 that ends a session which had already delivered
  (``too many messages``, ``session too long``): the server renews sessions, the message
  is not at fault, so the pool retries it on a fresh connection without charging it.
"""

from __future__ import annotations

import enum
import re

from .errors import (
    SMTPConnectionError,
    SMTPError,
    SMTPLocalError,
    SMTPMaybeDelivered,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPTimeoutError,
)

__all__ = [
    "Verdict",
    "verdict",
    "is_retryable",
    "is_configuration_error",
    "same_sender_refusal",
    "CONFIG_CHECK_MESSAGES",
    "is_slow_down",
    "is_session_cut",
    "SLOW_DOWN_CODES",
]

#: Refusals of MAIL that say the session lacks authentication: 530 (RFC 4954's
#: "Authentication required"), or an enhanced 5.7.0 with that meaning.
_AUTH_REQUIRED_CODES = frozenset({530})
_AUTH_WORDS = ("auth", "login")
#: The first messages of a list whose MAIL refusals are compared: the same 5xx to every
#: one of them is a refusal of the sender or the session, not of the recipients.
CONFIG_CHECK_MESSAGES = 5


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


def is_configuration_error(exc: BaseException) -> bool:
    """Does this refusal mean the client's configuration is wrong, whatever the message?

    True for a ``MAIL`` refused with 530, or with a permanent 5.7.0 that speaks of
    authentication: the server wants a login this client did not make (no user given,
    or the wrong server URL). Every further message would get the same.
    """
    if not isinstance(exc, SMTPSenderRefused) or exc.reply is None:
        return False
    reply = exc.reply
    if reply.code in _AUTH_REQUIRED_CODES:
        return True
    if reply.is_permanent and reply.enhanced_status == "5.7.0":
        text = reply.message.lower()
        return any(word in text for word in _AUTH_WORDS)
    return False


def same_sender_refusal(outcomes: list[BaseException]) -> bool:
    """Is this the same permanent refusal of ``MAIL`` for every one of ``outcomes``?

    Used on the first :data:`CONFIG_CHECK_MESSAGES` messages of a list (at least two):
    when the server refuses the sender of each with the same 5xx code, the sender or the
    session is refused (a sender the account may not use, a relay that refuses this
    client), not the recipients.
    """
    if len(outcomes) < 2:
        return False
    codes = {e.reply.code if isinstance(e, SMTPSenderRefused) and e.reply is not None
             and e.reply.is_permanent else None for e in outcomes}
    return len(codes) == 1 and None not in codes


#: Reply codes a "slow down" may come with (RFC 5321 4xx used by large providers).
SLOW_DOWN_CODES = frozenset({421, 450, 451, 452, 454})
# Provider wording for rate limits: Gmail "rate limited", SES "Throttling failure",
# Outlook "exceeded the message rate limit", Yahoo "too many ... slow down". Greylisting
# also uses 4.7.x (451 4.7.1) but asks for a later retry, not a lower rate.
_SLOW_TEXT = re.compile(
    r"rate.?limit|\brate\b|throttl|slow(ing)? down|too fast|too frequent|"
    r"too many (messages|mails|emails|requests|connections) (per|in the last)",
    re.IGNORECASE)
_NOT_SLOW_TEXT = re.compile(r"grey.?list|gray.?list", re.IGNORECASE)


def is_slow_down(exc: BaseException) -> bool:
    """Does the error carry a reply asking the client to send more slowly?

    A transient reply in :data:`SLOW_DOWN_CODES` whose enhanced status is ``4.7.x`` or
    whose text speaks of a rate or throttling, except greylisting. Only failures are
    asked (never a success), so this costs nothing on the hot path.
    """
    reply = getattr(exc, "reply", None)
    if reply is None or reply.code not in SLOW_DOWN_CODES:
        return False
    text = reply.message
    if _NOT_SLOW_TEXT.search(text):
        return False
    status = reply.enhanced_status
    if status is not None and status.startswith("4.7."):
        return True
    return _SLOW_TEXT.search(text) is not None


def is_session_cut(exc: BaseException, delivered_before: int) -> bool:
    """Is this a 421 ending a session that had done work (and not a "slow down")?

    Args:
        exc: The error of the failed attempt.
        delivered_before: Messages the connection had delivered; 0 means the server
            refused the session itself, which is no session cut but a failure.
    """
    reply = getattr(exc, "reply", None)
    return (delivered_before > 0 and reply is not None and reply.code == 421
            and verdict(exc) is Verdict.RETRY and not is_slow_down(exc))
