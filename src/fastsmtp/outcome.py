"""What one send's outcome means for a recipient: the statuses a journal or store records.

:func:`classify` maps a send outcome to ``(status, reply code, reply text)``;
:func:`should_send` reads a status back when a run resumes. The campaign journal
(``fastsmtp send``) and the Celery store (:mod:`fastsmtp.celery`) share this vocabulary:
``accepted``, ``deferred``, ``maybe-delivered``, ``rejected``, ``failed``, ``pending``
(and ``sending`` while a message is in flight). The decision itself is the one retry
policy's (:func:`fastsmtp.retry.verdict`).
"""

from __future__ import annotations

from ._transaction import SendResult
from .errors import SMTPError, SMTPPoolClosed
from .retry import Verdict, verdict

__all__ = ["classify", "deferred", "should_send"]


def should_send(status: str | None, resend_uncertain: bool = False) -> bool:
    """Whether a recipient with this journal status gets the message in this run.

    Never attempted (None, ``pending``) and ``deferred`` (the server said "not now", or
    no connection: not delivered) are sent. ``accepted``, ``rejected`` and ``failed`` are
    final. Uncertain (``maybe-delivered``, or ``sending`` left by a crash) only with
    ``resend_uncertain``.
    """
    if status in (None, "pending", "deferred"):
        return True
    if status in ("maybe-delivered", "sending"):
        return resend_uncertain
    return False


def _one_line(text: str | None) -> str:
    return " / ".join((text or "").splitlines())


def classify(outcome: SendResult | BaseException) -> tuple[str, int | None, str]:
    """Map a one-recipient send outcome to ``(status, reply code, reply text)``.

    ``accepted`` (250 to the final dot), ``deferred`` (not delivered and retryable by
    :func:`fastsmtp.retry.verdict`: a 4xx, a lost connection, a garbled reply),
    ``maybe-delivered`` (connection lost after the final dot), ``rejected`` (a final 5xx),
    ``pending`` (never attempted: the pool was closed), ``failed`` (anything else final,
    e.g. a local error). The pool retries exactly what this calls ``deferred``.
    """
    if isinstance(outcome, SendResult):
        if outcome.accepted:
            reply = outcome.response
            return "accepted", reply.code, _one_line(str(reply))
        if not outcome.rejected_errors:
            return "rejected", None, "recipient refused"
        outcome = outcome.rejected_errors[0]  # judged like the error it is
    if isinstance(outcome, SMTPPoolClosed):
        return "pending", None, ""
    # The one retry policy (fastsmtp.retry) decides, as it does for the pool.
    judged = verdict(outcome)
    if judged is Verdict.MAYBE_DELIVERED:
        return "maybe-delivered", None, _one_line(str(outcome))
    if isinstance(outcome, SMTPError):
        code = outcome.response_code
        text = _one_line(outcome.response or str(outcome))
        if judged is Verdict.RETRY:
            return "deferred", code, text
        return ("rejected" if code is not None and code >= 500 else "failed"), code, text
    return "failed", None, _one_line(f"{type(outcome).__name__}: {outcome}")


def deferred(outcome: BaseException) -> tuple[str, int | None, str]:
    """``classify`` for a refusal that is the configuration's fault, not the message's
    (:func:`fastsmtp.retry.is_configuration_error`): ``deferred``, so that a resumed run
    with the right settings sends it."""
    if isinstance(outcome, SMTPError):
        return "deferred", outcome.response_code, _one_line(outcome.response or str(outcome))
    return "deferred", None, _one_line(str(outcome))
