"""The error tree: smtplib parents, local vs reply errors, attributes, str(), pickling.

The unit tests build errors by hand; the socket tests make a real fastsmtp server on
127.0.0.1 refuse something and check what ``except smtplib...`` code sees.
"""

from __future__ import annotations

import contextlib
import pickle
import smtplib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastsmtp import errors
from fastsmtp.server.auth import AuthResult
from fastsmtp.connection import SMTPConnection
from fastsmtp.message import Envelope
from fastsmtp.reply import Reply
from fastsmtp.server import SMTPServer

REPLY_550 = Reply(550, ("5.1.1 no such user",))

# -- the parents the issue lists --------------------------------------------------------------

# (fastsmtp class, smtplib class it must also be): exactly the issue's list.
SMTPLIB_PARENTS = [
    (errors.SMTPError, smtplib.SMTPException),
    (errors.SMTPResponseError, smtplib.SMTPResponseException),
    (errors.SMTPSenderRefused, smtplib.SMTPSenderRefused),
    (errors.SMTPRecipientsRefused, smtplib.SMTPRecipientsRefused),
    (errors.SMTPServerDisconnected, smtplib.SMTPServerDisconnected),
    (errors.SMTPAuthRefused, smtplib.SMTPAuthenticationError),
    (errors.SMTPDataRefused, smtplib.SMTPDataError),
    (errors.SMTPNotSupported, smtplib.SMTPNotSupportedError),
]


def _classes() -> list[type[errors.SMTPError]]:
    return [c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.SMTPError)]


def _make(cls: type[errors.SMTPError], reply: Reply | None = REPLY_550) -> errors.SMTPError:
    if cls is errors.SMTPRecipientsRefused:
        one = errors.SMTPRecipientRefused("recipient a@x.test refused", reply=reply,
                                          recipient="a@x.test")
        return cls("every recipient was refused", rejected=["a@x.test"],
                   rejected_errors=[one])
    return cls(f"{cls.__name__} happened", reply=reply)


@pytest.mark.parametrize(("cls", "parent"), SMTPLIB_PARENTS, ids=lambda c: c.__name__)
def test_the_smtplib_parents_the_issue_lists(cls, parent) -> None:
    error = _make(cls)
    assert isinstance(error, parent)
    with pytest.raises(parent):
        raise error


def test_every_error_is_an_smtplib_exception_and_every_listed_class_exported() -> None:
    assert {c.__name__ for c in _classes()} <= set(errors.__all__)
    for cls in _classes():
        assert issubclass(cls, smtplib.SMTPException), cls


def test_auth_errors_local_and_remote_are_both_smtp_auth_errors() -> None:
    remote = _make(errors.SMTPAuthRefused, Reply(535, ("5.7.8 bad credentials",)))
    local = errors.SMTPInvalidAuth("refusing to send credentials over plaintext")
    missing = errors.SMTPAuthNotSupported("the server does not offer authentication")
    for error in (remote, local, missing):
        assert isinstance(error, errors.SMTPAuthError) and error.code == "EAUTH"
    assert isinstance(remote, smtplib.SMTPAuthenticationError) and remote.smtp_code == 535
    assert not isinstance(local, smtplib.SMTPResponseException)
    assert isinstance(local, errors.SMTPLocalError)
    assert isinstance(missing, smtplib.SMTPNotSupportedError)


def test_local_errors_are_never_reply_errors() -> None:
    local = [c for c in _classes() if issubclass(c, errors.SMTPLocalError)]
    assert {errors.SMTPInvalidEnvelope, errors.SMTPInvalidMessage, errors.SMTPInvalidAuth,
            errors.SMTPNotSupported, errors.SMTPPoolClosed} <= set(local)
    for cls in local:
        assert not issubclass(cls, smtplib.SMTPResponseException), cls
        assert not issubclass(cls, errors.SMTPResponseError), cls


def test_reply_classes_of_each_category() -> None:
    # A call site names the category; the reply flavour is raised, and it is always an
    # smtplib.SMTPResponseException of that category.
    for category in (errors.SMTPError, errors.SMTPProtocolError, errors.SMTPConnectionError,
                     errors.SMTPServerDisconnected, errors.SMTPTLSError, errors.SMTPAuthError,
                     errors.SMTPEnvelopeError, errors.SMTPMessageError,
                     errors.SMTPSenderRefused, errors.SMTPDataRefused):
        flavour = errors.reply_error_class(category)
        assert issubclass(flavour, category)
        assert issubclass(flavour, smtplib.SMTPResponseException)


def test_smtp_code_and_smtp_error_as_smtplib_has_them() -> None:
    reply = Reply(550, ("5.1.1 no such user", "try another"))
    error = errors.SMTPDataRefused("message refused", reply=reply)
    assert error.smtp_code == 550
    assert error.smtp_error == b"5.1.1 no such user\ntry another"
    assert error.response == "550 5.1.1 no such user\n550 try another"
    assert error.response_code == 550 and error.message == "message refused"
    bare = errors.SMTPResponseError("no reply at all")
    assert bare.smtp_code == -1 and bare.smtp_error == b"no reply at all"


def test_builtin_parents_are_kept() -> None:
    assert isinstance(errors.SMTPInvalidEnvelope("bad"), ValueError)
    assert isinstance(_make(errors.SMTPSenderRefused), ValueError)
    assert isinstance(errors.SMTPServerDisconnected("gone"), ConnectionError)
    assert isinstance(errors.SMTPTimeoutError("slow"), TimeoutError)
    assert isinstance(errors.SMTPTLSNotSupported("no STARTTLS"), ConnectionError)


# -- str() ------------------------------------------------------------------------------------


def test_recipients_refused_names_every_address_and_reply() -> None:
    first = errors.SMTPRecipientRefused("r", reply=REPLY_550, recipient="a@x.test")
    second = errors.SMTPRecipientRefused(
        "r", reply=Reply(452, ("4.2.2 mailbox full", "later")), recipient="b@y.test"
    )
    error = errors.SMTPRecipientsRefused(
        "every recipient was refused", rejected=["a@x.test", "b@y.test"],
        rejected_errors=[first, second],
    )
    assert str(error) == (
        "every recipient was refused: a@x.test (550 5.1.1 no such user), "
        "b@y.test (452 4.2.2 mailbox full / 452 later)"
    )
    assert error.recipients == {
        "a@x.test": (550, b"5.1.1 no such user"),
        "b@y.test": (452, b"4.2.2 mailbox full\nlater"),
    }
    assert error.reply == second.reply and error.smtp_code == 452  # the last refusal
    assert error.rejected == ["a@x.test", "b@y.test"] and error.rejected_errors == [first, second]


def test_recipients_refused_str_stays_bounded() -> None:
    many = [f"r{i}@x.test" for i in range(50)]
    refusals = [errors.SMTPRecipientRefused("r", reply=REPLY_550, recipient=a) for a in many]
    error = errors.SMTPRecipientsRefused("every recipient was refused", rejected=many,
                                         rejected_errors=refusals)
    text = str(error)
    limit = errors.MAX_NAMED_RECIPIENTS
    assert f"r{limit - 1}@x.test (550" in text and f"r{limit}@x.test" not in text
    assert text.endswith(f" and {50 - limit} more")
    assert len(error.recipients) == 50  # the dict is complete


# -- pickling ---------------------------------------------------------------------------------


def test_new_attributes_survive_pickling() -> None:
    sender = errors.SMTPSenderRefused("sender <a@x.test> refused: 553", sender="a@x.test",
                                      reply=Reply(553, ("5.7.1 not you",)))
    one = errors.SMTPRecipientRefused("r", reply=REPLY_550, recipient="b@y.test")
    refused = errors.SMTPRecipientsRefused("every recipient was refused",
                                           rejected=["b@y.test"], rejected_errors=[one])
    for error in (sender, one, refused):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.smtp_code == error.smtp_code and copy.smtp_error == error.smtp_error
        assert copy.args == error.args and copy.code == error.code
    assert pickle.loads(pickle.dumps(sender)).sender == "a@x.test"
    assert pickle.loads(pickle.dumps(one)).recipient == "b@y.test"
    copy = pickle.loads(pickle.dumps(refused))
    assert copy.recipients == {"b@y.test": (550, b"5.1.1 no such user")}
    assert type(copy.rejected_errors[0]) is errors.SMTPRecipientRefused


# -- the documented table ---------------------------------------------------------------------


def _kind(cls: type[errors.SMTPError]) -> str:
    if issubclass(cls, errors.SMTPLocalError):
        return "local"
    if issubclass(cls, errors.SMTPResponseError):
        return "reply"
    if any(issubclass(c, cls) and issubclass(c, errors.SMTPLocalError) for c in _classes()):
        return "any"  # a category whose subclasses span the kinds
    return "remote"


def _nearest(classes: list[type]) -> str:
    return ", ".join(k.__name__ for k in classes
                     if not any(o is not k and issubclass(o, k) for o in classes))


def test_the_module_table_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("SMTP"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {c.__name__ for c in _classes()}
    skip = (object, BaseException, Exception, OSError)
    for cls in _classes():
        smtplib_parents = [k for k in cls.__mro__ if k.__module__ == "smtplib"]
        builtins = [k for k in cls.__mro__ if k.__module__ == "builtins" and k not in skip]
        expected = [cls.code, _kind(cls), _nearest(smtplib_parents),
                    _nearest(builtins) or "OSError"]
        assert rows[cls.__name__] == expected, cls


# -- over a socket: what smtplib-style code sees ----------------------------------------------


class Refusing:
    """Refuses senders starting with 'bad', recipients starting with 'no', data with 'X'."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.startswith("bad"):
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.startswith("no"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if envelope.content.startswith(b"X"):
            return "554 5.6.0 content refused"
        return "250 2.0.0 queued"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    return AuthResult(success=False)


@contextlib.asynccontextmanager
async def _connection(**server_options: Any) -> AsyncIterator[SMTPConnection]:
    server = SMTPServer(Refusing(), host="127.0.0.1", port=0, **server_options)
    await server.start()
    try:
        async with SMTPConnection("127.0.0.1", server.port, ignore_tls=True,
                                  allow_plaintext_auth=True) as conn:
            yield conn
    finally:
        await server.close()


async def _send(conn: SMTPConnection, envelope: Envelope, data: bytes = b"Hi\r\n") -> Any:
    # Keywords: the positional order of send() is being changed to (message, envelope).
    return await conn.send(envelope=envelope, message=data)


async def test_except_smtplib_catches_a_refused_recipient_over_a_socket() -> None:
    async with _connection() as conn:
        try:
            await _send(conn, Envelope("a@x.test", ["no1@y.test", "no2@y.test"]))
        except smtplib.SMTPException as exc:
            caught: BaseException = exc
        else:  # pragma: no cover - the assertion below reports it
            caught = AssertionError("nothing raised")
        assert isinstance(caught, smtplib.SMTPRecipientsRefused)
        assert isinstance(caught, errors.SMTPRecipientsRefused)
        assert caught.recipients == {"no1@y.test": (550, b"5.1.1 no such user"),
                                     "no2@y.test": (550, b"5.1.1 no such user")}
        assert str(caught) == ("every recipient was refused: "
                               "no1@y.test (550 5.1.1 no such user), "
                               "no2@y.test (550 5.1.1 no such user)")
        assert all(isinstance(e, errors.SMTPRecipientRefused) and e.smtp_code == 550
                   for e in caught.rejected_errors)
        assert [e.recipient for e in caught.rejected_errors] == ["no1@y.test", "no2@y.test"]
        assert conn.is_usable  # a refusal leaves the connection usable


async def test_one_refused_recipient_is_an_smtplib_response_in_the_result() -> None:
    async with _connection() as conn:
        result = await _send(conn, Envelope("a@x.test", ["ok@y.test", "no@y.test"]))
    assert result.accepted == ["ok@y.test"] and result.rejected == ["no@y.test"]
    [refusal] = result.rejected_errors
    assert isinstance(refusal, smtplib.SMTPResponseException)
    assert (refusal.smtp_code, refusal.smtp_error) == (550, b"5.1.1 no such user")
    assert str(refusal) == "recipient no@y.test refused: 550 5.1.1 no such user"


async def test_sender_and_data_refusals_are_smtplibs() -> None:
    async with _connection() as conn:
        with pytest.raises(smtplib.SMTPSenderRefused) as sender:
            await _send(conn, Envelope("bad@x.test", ["ok@y.test"]))
        assert isinstance(sender.value, errors.SMTPSenderRefused)
        assert sender.value.sender == "bad@x.test"
        assert (sender.value.smtp_code, sender.value.smtp_error) == (553, b"5.7.1 sender not allowed")
        assert str(sender.value) == "sender <bad@x.test> refused: 553 5.7.1 sender not allowed"
        with pytest.raises(smtplib.SMTPDataError) as data:
            await _send(conn, Envelope("a@x.test", ["ok@y.test"]), b"X-refuse-me: 1\r\n\r\nx\r\n")
        assert isinstance(data.value, errors.SMTPDataRefused)
        assert data.value.smtp_code == 554 and "554 5.6.0 content refused" in str(data.value)


async def test_refused_login_is_smtplibs_authentication_error() -> None:
    async with _connection(enable_auth=True, auth_require_tls=False,
                           authenticator=_authenticator) as conn:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            await conn.login("alice", "wrong")
        assert isinstance(info.value, errors.SMTPAuthRefused)
        assert isinstance(info.value, errors.SMTPAuthError) and info.value.smtp_code == 535


async def test_missing_extensions_are_smtplibs_not_supported() -> None:
    async with _connection(smtputf8=False) as conn:
        with pytest.raises(smtplib.SMTPNotSupportedError) as utf8:
            await _send(conn, Envelope("ü@x.test", ["ok@y.test"]))
        assert isinstance(utf8.value, errors.SMTPEnvelopeError)
        assert utf8.value.code == "EENVELOPE" and "SMTPUTF8" in str(utf8.value)
        with pytest.raises(smtplib.SMTPNotSupportedError) as auth:
            await conn.login("alice", "secret")  # the server offers no AUTH
        assert isinstance(auth.value, errors.SMTPAuthError) and auth.value.code == "EAUTH"
    server = SMTPServer(Refusing(), host="127.0.0.1", port=0)  # no STARTTLS offered
    await server.start()
    try:
        conn = SMTPConnection("127.0.0.1", server.port, require_tls=True)
        with pytest.raises(smtplib.SMTPNotSupportedError) as tls:
            await conn.connect()
        assert isinstance(tls.value, errors.SMTPTLSError) and tls.value.code == "ETLS"
    finally:
        await server.close()


def test_the_readme_table_is_the_module_table() -> None:
    """The README's error table says what the module's does (and so what the code does)."""

    from support.env import readme_path

    readme = readme_path().read_text(encoding="utf-8")
    section = readme.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]

    def rows(text: str) -> list[list[str]]:
        return [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in text.splitlines() if line.strip().startswith("| SMTP")]

    assert rows(section) == rows(errors.__doc__ or "")
    assert len(rows(section)) > 20
