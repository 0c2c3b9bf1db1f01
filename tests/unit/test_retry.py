"""The one retry policy (fastsmtp.retry): a table of errors and their verdicts.

The pool's requeue decision and ``SMTPError.transient`` must agree with it on every row.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastsmtp import errors
from fastsmtp.server.auth import AuthResult
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool, _retryable
from fastsmtp.reply import Reply
from fastsmtp.retry import Verdict, is_retryable, verdict
from fastsmtp.server import SMTPServer

ENVELOPE = Envelope("a@x.test", ["b@y.test"])
R, F, M = Verdict.RETRY, Verdict.FINAL, Verdict.MAYBE_DELIVERED


def _refused(*codes: int) -> errors.SMTPRecipientsRefused:
    rejected = [f"r{i}@x.test" for i in range(len(codes))]
    refusals = [errors.SMTPRecipientRefused("r", reply=Reply(code, ("no",)), recipient=a)
                for code, a in zip(codes, rejected)]
    return errors.SMTPRecipientsRefused("every recipient was refused", rejected=rejected,
                                        rejected_errors=refusals)


TABLE: list[tuple[str, BaseException, Verdict]] = [
    # After the final dot: never resent, whatever caused it.
    ("maybe delivered", errors.SMTPMaybeDelivered("lost after the dot"), M),
    ("maybe delivered, 421", errors.SMTPMaybeDelivered("x", reply=Reply(421, ("bye",))), M),
    # Local: the same call fails the same way.
    ("bad address", errors.SMTPInvalidEnvelope("invalid address"), F),
    ("over SIZE", errors.SMTPInvalidMessage("exceeds the server's SIZE limit"), F),
    ("plaintext auth", errors.SMTPInvalidAuth("refusing to send credentials"), F),
    ("no AUTH offered", errors.SMTPAuthNotSupported("no AUTH in EHLO"), F),
    ("no SMTPUTF8", errors.SMTPEnvelopeNotSupported("no SMTPUTF8"), F),
    ("no STARTTLS", errors.SMTPTLSNotSupported("require_tls"), F),
    ("no REQUIRETLS", errors.SMTPRequireTLSNotSupported("require_tls envelope"), F),
    ("pool closed", errors.SMTPPoolClosed("the pool is closed"), F),
    # A reply decides: 4xx retry, anything else final.
    ("451 to DATA", errors.SMTPDataRefused("x", reply=Reply(451, ("later",))), R),
    ("554 to DATA", errors.SMTPDataRefused("x", reply=Reply(554, ("no",))), F),
    ("451 to MAIL", errors.SMTPSenderRefused("x", reply=Reply(451, ("later",))), R),
    ("553 to MAIL", errors.SMTPSenderRefused("x", reply=Reply(553, ("no",))), F),
    ("454 to AUTH", errors.SMTPAuthRefused("x", reply=Reply(454, ("4.7.0 temp",))), R),
    ("535 to AUTH", errors.SMTPAuthRefused("x", reply=Reply(535, ("5.7.8 bad",))), F),
    ("454 to STARTTLS", errors.SMTPStartTLSRefused("x", reply=Reply(454, ("temp",))), R),
    ("554 greeting", errors.SMTPGreetingRefused("x", reply=Reply(554, ("go away",))), F),
    ("421 greeting", errors.SMTPGreetingRefused("x", reply=Reply(421, ("busy",))), R),
    ("421 closing", errors.SMTPServiceClosing("x", reply=Reply(421, ("bye",))), R),
    ("354 to MAIL", errors.SMTPUnexpectedReply("x", reply=Reply(354, ("go on",))), F),
    ("500 to EHLO", errors.SMTPHeloRefused("x", reply=Reply(500, ("what?",))), F),
    ("452 to RSET", errors.SMTPResponseError("x", reply=Reply(452, ("busy",))), R),
    ("one recipient, 450", errors.SMTPRecipientRefused("x", reply=Reply(450, ("busy",))), R),
    ("one recipient, 550", errors.SMTPRecipientRefused("x", reply=Reply(550, ("no",))), F),
    # Every recipient refused: retry only when every refusal was transient.
    ("all 4xx", _refused(450, 452), R),
    ("one 5xx", _refused(450, 550), F),
    ("all 5xx", _refused(550, 550), F),
    # No reply: the connection's fate decides.
    ("connection refused", errors.SMTPConnectionError("cannot connect"), R),
    # A proxy that is down or refused the tunnel: a connection failure like any other.
    ("proxy refused", errors.SMTPProxyError("the proxy refused CONNECT"), R),
    ("server closed", errors.SMTPServerDisconnected("closed"), R),
    ("socket reset", errors.SMTPSocketError("connection lost: reset"), R),
    ("timeout", errors.SMTPTimeoutError("no reply within 10s"), R),
    ("garbled reply", errors.SMTPProtocolError("malformed reply"), R),
    ("TLS handshake", errors.SMTPTLSError("certificate verify failed"), F),
    ("bad challenge", errors.SMTPAuthError("challenge is not base64"), F),
    ("bare SMTPError", errors.SMTPError("something"), F),
    # Not fastsmtp's: a bug or a hook that raised.
    ("ValueError", ValueError("odd"), F),
    ("OSError", OSError("hook failed"), F),
    ("TimeoutError", asyncio.TimeoutError(), F),
]


@pytest.mark.parametrize(("name", "exc", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_verdict(name: str, exc: BaseException, expected: Verdict) -> None:
    assert verdict(exc) is expected
    assert is_retryable(exc) is (expected is Verdict.RETRY)
    # The pool and SMTPError.transient ask the same policy: they can no longer disagree.
    assert _retryable(exc) is is_retryable(exc)
    if isinstance(exc, errors.SMTPError):
        assert exc.transient is is_retryable(exc)


def test_the_two_former_disagreements() -> None:
    # A protocol error without a reply: the pool retried it, transient said no.
    garbled = errors.SMTPProtocolError("over-long reply line")
    assert garbled.transient and _retryable(garbled)
    # A 4xx refusal of AUTH: transient said yes, the pool said never.
    busy = errors.SMTPAuthRefused("AUTH", reply=Reply(454, ("4.7.0 try later",)))
    assert busy.transient and _retryable(busy)


def test_the_table_covers_every_error_class() -> None:
    covered = {type(exc) for _, exc, _ in TABLE}
    every = {c for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.SMTPError)}
    # The family bases are only ever raised through a subclass.
    bases = {errors.SMTPLocalError, errors.SMTPNotSupported, errors.SMTPEnvelopeError,
             errors.SMTPMessageError}
    assert every - bases <= covered, every - bases - covered


# -- the pool follows the policy, over a socket -------------------------------------------------


class _Accept:
    """Accepts every message; counts them."""

    def __init__(self) -> None:
        self.delivered = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered += 1
        return "250 2.0.0 queued"


@pytest.mark.parametrize(("first_reply", "delivered"),
                         [("454 4.7.0 temporary authentication failure", True),
                          ("535 5.7.8 authentication credentials invalid", False)])
async def test_the_pool_retries_a_4xx_login_and_not_a_5xx(first_reply: str,
                                                         delivered: bool) -> None:
    calls: list[str] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        calls.append(mechanism)
        if len(calls) == 1:
            return AuthResult(success=False, message=first_reply)
        return AuthResult(success=True)

    handler = _Accept()
    server = SMTPServer(handler, host="127.0.0.1", port=0, enable_auth=True,
                        auth_require_tls=False, authenticator=authenticator)
    await server.start()
    try:
        async with SMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True,
                            allow_plaintext_auth=True, auth=("alice", "secret"),
                            max_connections=1, max_attempts=3, retry_delay=0.01) as pool:
            if delivered:
                result = await pool.send(b"Subject: x\r\n\r\nhi\r\n", ENVELOPE)
                assert result.accepted == ["b@y.test"]
            else:
                with pytest.raises(errors.SMTPAuthRefused) as info:
                    await pool.send(b"Subject: x\r\n\r\nhi\r\n", ENVELOPE)
                assert info.value.smtp_code == 535 and not info.value.transient
    finally:
        await server.close()
    assert len(calls) == (2 if delivered else 1)
    assert handler.delivered == (1 if delivered else 0)


def _mail_refused(code: int, text: str) -> errors.SMTPSenderRefused:
    return errors.SMTPSenderRefused("MAIL refused", reply=Reply(code, (text,)),
                                    sender="a@x.test")


def test_configuration_errors() -> None:
    from fastsmtp.retry import is_configuration_error, same_sender_refusal

    assert is_configuration_error(_mail_refused(530, "5.7.0 Authentication required"))
    assert is_configuration_error(_mail_refused(550, "5.7.0 Authentication needed first"))
    assert not is_configuration_error(_mail_refused(550, "5.7.0 spam detected"))
    assert not is_configuration_error(_mail_refused(553, "5.1.8 bad sender domain"))
    # A 530 to something else than MAIL is judged by the retry policy alone.
    assert not is_configuration_error(errors.SMTPResponseError("x", reply=Reply(530, ("no",))))
    same = [_mail_refused(553, "5.7.1 not yours") for _ in range(3)]
    assert same_sender_refusal(same)
    assert not same_sender_refusal(same[:1])  # one message says nothing of the others
    assert not same_sender_refusal([*same, _mail_refused(550, "5.1.0 other")])
    assert not same_sender_refusal([_mail_refused(451, "4.3.0 later")] * 3)  # transient
