"""What one send's outcome means for a recipient, and who is sent to in this run.

:func:`classify` maps a pool result to a journal status; :func:`should_send` reads the
status back on ``--resume``. The statuses are :data:`fastsmtp.cli.progress.STATUSES`.
"""

from __future__ import annotations

from ...connection import SendResult
from ...errors import SMTPError, SMTPMaybeDelivered, SMTPPoolClosed

__all__ = ["classify", "should_send"]


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

    ``accepted`` (250 to the final dot), ``rejected`` (a 5xx), ``deferred`` (a 4xx, or no
    connection: not delivered, may be retried), ``maybe-delivered`` (connection lost after
    the final dot), ``pending`` (never attempted: the pool was closed), ``failed`` (anything
    else, e.g. a local error or a garbled reply).
    """
    if isinstance(outcome, SendResult):
        if outcome.accepted:
            reply = outcome.response
            return "accepted", reply.code, _one_line(str(reply))
        error = outcome.rejected_errors[0] if outcome.rejected_errors else None
        code = error.response_code if error is not None else None
        text = (error.response or str(error)) if error is not None else "recipient refused"
        status = "deferred" if code is not None and code < 500 else "rejected"
        return status, code, _one_line(text)
    if isinstance(outcome, SMTPPoolClosed):
        return "pending", None, ""
    if isinstance(outcome, SMTPMaybeDelivered):
        return "maybe-delivered", None, _one_line(str(outcome))
    if isinstance(outcome, SMTPError):
        code = outcome.response_code
        text = _one_line(outcome.response or str(outcome))
        if code is not None:
            return ("rejected" if code >= 500 else "deferred"), code, text
        return ("deferred" if outcome.transient else "failed"), None, text
    return "failed", None, _one_line(f"{type(outcome).__name__}: {outcome}")
