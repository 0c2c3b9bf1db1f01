"""The sans-IO client transaction, tested with vectors and no socket (like the codec).

Envelope + capabilities -> the exact command bytes; reply sequences -> what the
connection must do next, the result or the error (and whether it ends the session).
"""

from __future__ import annotations

import pytest

from fastsmtp._transaction import (
    BODY,
    DOT_RSET_FAIL,
    RSET_FAIL,
    SEND_DATA,
    RawReply,
    Transaction,
    bdat,
    breaks_session,
    split_item,
)
from fastsmtp.ehlo import Capabilities
from fastsmtp.errors import (
    SMTPDataRefused,
    SMTPEnvelopeError,
    SMTPEnvelopeNotSupported,
    SMTPMaybeDelivered,
    SMTPMessageError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from fastsmtp.message import DSN, Envelope

ENV = Envelope("a@x.test", ["b@x.test", "c@x.test"])
ALL = Capabilities(size=0, eightbitmime=True, smtputf8=True, dsn=True, pipelining=True)


def r(code: int, text: str = "ok") -> RawReply:
    return (code, [text.encode()])


# -- envelope + capabilities -> command bytes ----------------------------------------------

COMMANDS = [
    ("plain", Envelope("a@x.test", "b@x.test"), Capabilities(), b"hi\r\n",
     [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
    # SIZE counts after CRLF normalization (bare LF -> CRLF), and only when offered.
    ("size", Envelope("a@x.test", "b@x.test"), Capabilities(size=0), b"hi\n",
     [b"MAIL FROM:<a@x.test> SIZE=4\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
    ("declared size", Envelope("a@x.test", "b@x.test", size=99), Capabilities(size=100),
     iter([b"x"]), [b"MAIL FROM:<a@x.test> SIZE=99\r\n", b"RCPT TO:<b@x.test>\r\n",
                    b"DATA\r\n"]),
    ("8bitmime", Envelope("a@x.test", "b@x.test", use_8bit_mime=True),
     Capabilities(eightbitmime=True), b"x",
     [b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
    ("8bitmime not offered", Envelope("a@x.test", "b@x.test", use_8bit_mime=True),
     Capabilities(), b"x",
     [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
    ("smtputf8", Envelope("jö@x.test", "b@x.test"), Capabilities(smtputf8=True), b"x",
     ["MAIL FROM:<jö@x.test> SMTPUTF8\r\n".encode(), b"RCPT TO:<b@x.test>\r\n",
      b"DATA\r\n"]),
    ("dsn", Envelope("a@x.test", ["b@x.test", "c@x.test"],
                     dsn=DSN(ret="hdrs", envid="id 1", notify="failure,delay")),
     Capabilities(dsn=True), b"x",
     [b"MAIL FROM:<a@x.test> RET=HDRS ENVID=id+201\r\n",
      b"RCPT TO:<b@x.test> NOTIFY=FAILURE,DELAY\r\n",
      b"RCPT TO:<c@x.test> NOTIFY=FAILURE,DELAY\r\n", b"DATA\r\n"]),
    ("dsn not offered", Envelope("a@x.test", "b@x.test", dsn=DSN(ret="FULL")),
     Capabilities(), b"x",
     [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
    ("null sender, all at once", Envelope("", "b@x.test", use_8bit_mime=True), ALL, b"abc",
     [b"MAIL FROM:<> SIZE=5 BODY=8BITMIME\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]),
]


@pytest.mark.parametrize("name, envelope, caps, message, expected", COMMANDS,
                         ids=[c[0] for c in COMMANDS])
def test_commands(name, envelope, caps, message, expected) -> None:
    assert Transaction(message, envelope, caps).commands == expected


@pytest.mark.parametrize("envelope, caps, message, error", [
    (Envelope("a@x.test", "b@x.test"), Capabilities(size=3), b"four", SMTPMessageError),
    (Envelope("jö@x.test", "b@x.test"), Capabilities(), b"x", SMTPEnvelopeError),
    (Envelope("a@x.test> RET=FULL", "b@x.test"), ALL, b"x", SMTPEnvelopeError),
    (Envelope("a@x.test", "b@x.test\r\nRSET"), ALL, b"x", SMTPEnvelopeError),
    (Envelope("a@x.test", "b" * 3000 + "@x.test"), ALL, b"x", SMTPEnvelopeError),
])
def test_bad_input_is_refused_before_any_byte(envelope, caps, message, error) -> None:
    with pytest.raises(error):
        Transaction(message, envelope, caps)


def test_no_envelope_needs_a_message_with_headers() -> None:
    with pytest.raises(TypeError, match="envelope=Envelope"):
        Transaction(b"x", None, ALL)


# -- the send_many item rule ----------------------------------------------------------------

@pytest.mark.parametrize("item, expected", [
    ((b"m", ENV), (b"m", ENV)),
    ((b"m", None), (b"m", None)),
    (b"m", (b"m", None)),
    ((b"chunk1", b"chunk2"), ((b"chunk1", b"chunk2"), None)),  # a message of 2 chunks
    ([b"m", ENV], ([b"m", ENV], None)),  # only a tuple is a pair
    ((b"a", b"b", ENV), ((b"a", b"b", ENV), None)),
])
def test_split_item(item, expected) -> None:
    assert split_item(item) == expected


# -- replies -> next step, result or error --------------------------------------------------

def tr(lmtp: bool = False, envelope: Envelope = ENV) -> Transaction:
    return Transaction(b"x\r\n", envelope, ALL, lmtp)


def test_everything_accepted() -> None:
    t = tr()
    assert t.envelope_replies([r(250), r(250), r(251), r(354)], data_sent=True) == BODY
    assert t.expected_final() == 1
    result = t.result([r(250, "queued as 1")], 5)
    assert result.accepted == ["b@x.test", "c@x.test"] and result.rejected == []
    assert result.size == 5 and str(result.response) == "250 queued as 1"


def test_partial_recipient_refusal() -> None:
    t = tr()
    assert t.envelope_replies([r(250), r(550, "no such user"), r(250), r(354)], True) == BODY
    result = t.result([r(250)], 5)
    assert result.accepted == ["c@x.test"] and result.rejected == ["b@x.test"]
    [error] = result.rejected_errors
    assert isinstance(error, SMTPEnvelopeError) and error.reply.code == 550


def test_all_refused_asks_for_rset_then_fails() -> None:
    t = tr()
    assert t.envelope_replies([r(250), r(550), r(450), r(554, "no valid rcpt")], True) \
        == RSET_FAIL
    assert isinstance(t.error, SMTPRecipientsRefused)
    assert t.error.rejected == ["b@x.test", "c@x.test"] and t.error.reply.code == 450
    assert not breaks_session(t.error)


def test_all_refused_but_data_accepted_ends_the_empty_message_first() -> None:
    t = tr()
    assert t.envelope_replies([r(250), r(550), r(550), r(354)], True) == DOT_RSET_FAIL
    assert isinstance(t.error, SMTPRecipientsRefused)


@pytest.mark.parametrize("replies", [
    [r(250), r(421, "closing"), r(250), r(354)],  # 421 mid-way
    [r(421), r(503), r(503), r(503)],
])
def test_421_ends_the_session(replies) -> None:
    with pytest.raises(SMTPServerDisconnected) as info:
        tr().envelope_replies(replies, True)
    assert breaks_session(info.value) and info.value.reply.code == 421


def test_354_to_mail_is_a_protocol_error() -> None:
    with pytest.raises(SMTPProtocolError) as info:
        tr().envelope_replies([r(354), r(250), r(250), r(354)], True)
    assert breaks_session(info.value)


def test_data_accepted_after_mail_refused_is_a_protocol_error() -> None:
    with pytest.raises(SMTPProtocolError, match="MAIL was refused"):
        tr().envelope_replies([r(550), r(503), r(503), r(354)], True)


def test_sender_refused_keeps_the_session() -> None:
    with pytest.raises(SMTPSenderRefused) as info:
        tr().envelope_replies([r(553, "bad sender"), r(503), r(503), r(503)], True)
    assert not breaks_session(info.value) and info.value.reply.code == 553


def test_data_refused_asks_for_rset() -> None:
    t = tr()
    assert t.envelope_replies([r(250), r(250), r(250), r(451, "later")], True) == RSET_FAIL
    assert isinstance(t.error, SMTPDataRefused) and t.error.reply.code == 451


def test_without_pipelining_one_command_at_a_time() -> None:
    t = tr()
    assert not t.wants_more([r(550)])  # MAIL refused: no RCPT
    assert t.wants_more([r(250)])
    assert not t.wants_more([r(250), r(421)])
    assert not t.wants_more([r(250), r(250), r(250)])  # every RCPT written: DATA next
    assert t.envelope_replies([r(250), r(250), r(250)], data_sent=False) == SEND_DATA
    assert t.data_reply(r(354)) == BODY
    with pytest.raises(SMTPProtocolError):
        tr().data_reply(r(334))


@pytest.mark.parametrize("dot, error, fatal", [
    (r(554, "spam"), SMTPDataRefused, False),
    (r(451, "later"), SMTPDataRefused, False),
    (r(421, "bye"), SMTPServerDisconnected, True),
    (r(354), SMTPProtocolError, True),
])
def test_reply_to_the_dot(dot, error, fatal) -> None:
    t = tr()
    t.envelope_replies([r(250), r(250), r(250), r(354)], True)
    with pytest.raises(error) as info:
        t.result([dot], 5)
    assert breaks_session(info.value) is fatal


def test_lmtp_one_reply_per_recipient() -> None:
    t = tr(lmtp=True, envelope=Envelope("a@x.test", ["b@x.test", "c@x.test", "d@x.test"]))
    assert t.envelope_replies([r(250), r(250), r(550), r(250), r(354)], True) == BODY
    assert t.expected_final() == 2  # the accepted ones
    result = t.result([r(250, "b ok"), r(452, "c full")], 5)
    assert result.accepted == ["b@x.test"]
    assert result.rejected == ["c@x.test", "d@x.test"]
    assert [e.reply.code for e in result.rejected_errors] == [550, 452]
    assert str(result.response) == "452 c full"


def test_lmtp_refused_by_everyone_is_an_error_with_the_worst_reply() -> None:
    t = tr(lmtp=True)
    t.envelope_replies([r(250), r(250), r(250), r(354)], True)
    with pytest.raises(SMTPDataRefused) as info:
        t.result([r(452), r(550, "gone")], 5)
    assert info.value.reply.code == 550 and not breaks_session(info.value)


def test_lmtp_3xx_is_a_protocol_error() -> None:
    t = tr(lmtp=True)
    t.envelope_replies([r(250), r(250), r(250), r(354)], True)
    with pytest.raises(SMTPProtocolError):
        t.result([r(250), r(354)], 5)


# -- BDAT (RFC 3030) -----------------------------------------------------------------------

CHUNKING = Capabilities(size=0, eightbitmime=True, pipelining=True, chunking=True,
                        binarymime=True)


def test_bdat_commands_have_no_data_and_the_line_is_built_here() -> None:
    tr = Transaction(b"a\n.b", Envelope("a@x.test", "b@x.test"), CHUNKING, chunking=True)
    # SIZE= is the BDAT size: normalized, not stuffed, the last line ended.
    assert tr.commands == [b"MAIL FROM:<a@x.test> SIZE=7\r\n", b"RCPT TO:<b@x.test>\r\n"]
    assert tr.chunking and not tr.binary
    assert bdat(7, True) == b"BDAT 7 LAST\r\n" and bdat(0, False) == b"BDAT 0\r\n"


def test_binary_mime_under_bdat_only() -> None:
    binary = Envelope("a@x.test", "b@x.test", binary_mime=True, use_8bit_mime=True)
    tr = Transaction(b"\x00\n", binary, CHUNKING, chunking=True)
    assert tr.commands[0] == b"MAIL FROM:<a@x.test> SIZE=2 BODY=BINARYMIME\r\n"
    assert tr.binary
    with pytest.raises(SMTPEnvelopeNotSupported, match="BINARYMIME"):
        Transaction(b"x", binary, CHUNKING)  # DATA: a binary body cannot go
    no_ext = Capabilities(pipelining=True, chunking=True)
    with pytest.raises(SMTPEnvelopeNotSupported, match="BINARYMIME"):
        Transaction(b"x", binary, no_ext, chunking=True)


def bdat_tr(rcpts: int = 2) -> Transaction:
    rcpt = ["b@x.test", "c@x.test"][:rcpts]
    return Transaction(b"hi\r\n", Envelope("a@x.test", rcpt), CHUNKING, chunking=True)


def test_bdat_delivered_with_a_refused_recipient() -> None:
    result = bdat_tr().chunk_result([r(250), r(550, "no"), r(250)], [r(250, "queued")], 4)
    assert result.accepted == ["c@x.test"] and result.rejected == ["b@x.test"]
    assert result.size == 4 and str(result.response) == "250 queued"


# (envelope replies, chunk replies, LAST written, error, session kept)
BDAT_FAILURES = [
    ("sender", [r(550), r(503), r(503)], [r(503)], True, SMTPSenderRefused, True),
    ("recipients", [r(250), r(550), r(551)], [r(554)], True, SMTPRecipientsRefused, True),
    ("data", [r(250), r(250), r(250)], [r(552)], True, SMTPDataRefused, True),
    ("chunk then stop", [r(250), r(250), r(250)], [r(250), r(552)], False, SMTPDataRefused,
     True),
    ("421 to MAIL", [r(421), r(250), r(250)], [r(250)], True, SMTPServerDisconnected, False),
    ("421 to LAST", [r(250), r(250), r(250)], [r(421)], True, SMTPServerDisconnected, False),
    ("354 to RCPT", [r(250), r(354), r(250)], [r(250)], True, SMTPProtocolError, False),
    # LAST accepted although MAIL was refused: not a refusal, maybe delivered.
    ("accepted after refusal", [r(550), r(250), r(250)], [r(250)], True,
     SMTPMaybeDelivered, False),
    ("accepted after refused chunk", [r(250), r(250), r(250)], [r(552), r(250)], True,
     SMTPMaybeDelivered, False),
]


@pytest.mark.parametrize(("name", "envelope", "chunks", "last", "error", "kept"),
                         BDAT_FAILURES, ids=[case[0] for case in BDAT_FAILURES])
def test_bdat_failures(name, envelope, chunks, last, error, kept) -> None:
    with pytest.raises(error) as info:
        bdat_tr().chunk_result(envelope, chunks, 4, last)
    assert breaks_session(info.value) is not kept
    if error is SMTPRecipientsRefused:
        assert info.value.rejected == ["b@x.test", "c@x.test"]
