"""Shared test vectors of the byte codec (``fastsmtp._core`` and its twin ``_core_py``).

Each vector is plain data: the bytes that go in and what must come out, so the same case
runs on both implementations, fed whole, byte by byte and split at every position (see
``tests/test_core.py``). The drivers below turn a sequence of fed parts into results
that do not depend on where the input was split, which is what makes that possible.

Line endings in the comments: CRLF, bare LF (``\\n`` alone), bare CR (``\\r`` alone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# -- drivers -------------------------------------------------------------------------------

#: Vectors longer than this are split at a sample of positions, not at all of them.
EVERY_SPLIT_UP_TO = 700


def split_points(n: int) -> list[int]:
    """Positions to split an input of ``n`` bytes at: all of them, or a dense sample."""
    if n <= EVERY_SPLIT_UP_TO:
        return list(range(n + 1))
    edge = list(range(0, 150)) + list(range(n - 150, n + 1))
    return sorted(set(edge + list(range(0, n, max(1, n // 300)))))


def feedings(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Yield ``(how, parts)``: whole, byte by byte, and split in two at every position."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    for cut in split_points(len(data)):
        yield f"split@{cut}", [data[:cut], data[cut:]]


def run_replies(core: ModuleType, parts: Iterable[bytes], **kwargs: int) -> tuple[list, int]:
    """Feed ``parts`` to a ReplyParser; return (all replies, bytes buffered at the end).

    Raises the parser's SMTPProtocolError unchanged.
    """
    parser = core.ReplyParser(**kwargs)
    replies: list = []
    for part in parts:
        replies.extend(parser.feed(part))
    return replies, parser.buffered


def run_encoder(
    core: ModuleType, parts: Iterable[bytes], stuff: bool = True
) -> tuple[bytes, int, int]:
    """Encode ``parts`` as one message; return (wire bytes with the end, bytes_out, longest).

    ``stuff=False``: the BDAT form (normalized, no dot doubled, no terminator line).
    """
    encoder = core.DataEncoder(stuff=stuff)
    out = [bytes(encoder.encode(part)) for part in parts]
    out.append(encoder.end())
    return b"".join(out), encoder.bytes_out, encoder.longest_line


def run_server(
    core: ModuleType,
    parts: Iterable[bytes],
    *,
    max_size: int = 0,
    stop_on_runaway: bool = True,
    **kwargs: int,
) -> list[tuple[Any, ...]]:
    """A minimal server loop over a ServerReader; return its events.

    Events: ``("line", status, line)`` for each command line, and after a ``DATA``
    line, ``("data", body, flags)`` once the terminator was read (``body`` is None when
    ``DATA_TOO_BIG`` is set, since how much came before the limit depends on the
    splits). These do not depend on how the input was split.

    A ``BDAT <size> [LAST]`` line starts a chunk (``start_chunk``; the first chunk after
    a LAST, or the first of all, starts a message): ``("chunk", octets, flags)`` once its
    last octet was read (``octets`` is b"" when refused as too big).
    """
    reader = core.ServerReader(**kwargs)
    events: list[tuple[Any, ...]] = []
    body: list[bytes] = []
    chunking = False  # in chunk mode (else DATA mode while reader.in_data)
    first = True  # the next chunk starts a message
    for part in parts:
        reader.feed(part)
        while True:
            if reader.in_data:
                got = reader.next_data()
                if got is None:
                    break
                chunk, flags = got
                assert isinstance(chunk, bytes)
                body.append(chunk)
                if chunking:
                    assert not flags & (core.DATA_BARE_EOL | core.DATA_LONG_LINE)
                    if flags & core.DATA_END:
                        events.append(("chunk", b"".join(body), flags))
                        body = []
                    continue
                if flags & core.DATA_END:
                    too_big = flags & core.DATA_TOO_BIG
                    events.append(("data", None if too_big else b"".join(body), flags))
                    body = []
                continue
            line = reader.next_line()
            if line is None:
                break
            events.append(("line", *line))
            if line[0] == core.LINE_RUNAWAY and stop_on_runaway:
                return events
            chunking = False
            if line == (core.LINE_OK, b"DATA"):
                reader.start_data(max_size)
            words = line[1].split(b" ")
            if line[0] == core.LINE_OK and words[0] == b"BDAT" and words[1:2] != [b""]:
                reader.start_chunk(int(words[1]), max_size, first)
                chunking = True
                first = words[2:] == [b"LAST"]
    return events


def has_bare_eol(wire: bytes) -> bool:
    """True when ``wire`` holds a CR not followed by LF or an LF not preceded by CR."""
    return re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is not None


# -- ReplyParser ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCase:
    """Bytes from a server and the replies they complete (or that they are malformed)."""

    id: str
    data: bytes
    replies: list[tuple[int, list[bytes]]] = field(default_factory=list)
    buffered: int = 0
    error: bool = False  # an SMTPProtocolError must be raised by some feed
    kwargs: dict[str, int] = field(default_factory=dict)


EHLO = (
    b"250-mail.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n"
)

REPLY_CASES = [
    ReplyCase("single", b"220 mail.example.com ESMTP\r\n", [(220, [b"mail.example.com ESMTP"])]),
    ReplyCase(
        "multi-line",
        EHLO,
        [
            (
                250,
                [
                    b"mail.example.com Hello",
                    b"PIPELINING",
                    b"SIZE 35882577",
                    b"8BITMIME",
                    b"STARTTLS",
                    b"AUTH PLAIN LOGIN",
                    b"SMTPUTF8",
                ],
            )
        ],
    ),
    ReplyCase(
        "several-in-one-feed",
        b"250 2.1.0 OK\r\n550 5.1.1 no\r\n354 go ahead\r\n",
        [(250, [b"2.1.0 OK"]), (550, [b"5.1.1 no"]), (354, [b"go ahead"])],
    ),
    ReplyCase("code-without-text", b"250\r\n", [(250, [b""])]),
    ReplyCase("hyphen-without-text", b"250-\r\n250\r\n", [(250, [b"", b""])]),
    ReplyCase("lf-only", b"250-a\n250 b\n221 bye\n", [(250, [b"a", b"b"]), (221, [b"bye"])]),
    ReplyCase("mixed-endings", b"250-a\r\n250 b\n", [(250, [b"a", b"b"])]),
    ReplyCase("8bit-text", b"250 h\xc3\xa9llo\r\n", [(250, [b"h\xc3\xa9llo"])]),
    ReplyCase("cr-inside-text", b"250 a\rb\r\n", [(250, [b"a\rb"])]),
    ReplyCase("incomplete-tail", b"250 OK\r\n250-x\r\n25", [(250, [b"OK"])], buffered=9),
    ReplyCase("incomplete-line", b"250 O", [], buffered=5),
    ReplyCase(
        "line-at-limit",
        b"250 " + b"x" * (8192 - 6) + b"\r\n",
        [(250, [b"x" * (8192 - 6)])],
    ),
    ReplyCase("limits-are-parameters", b"250-ab\r\n250 c\r\n", [(250, [b"ab", b"c"])],
              kwargs={"max_line": 8, "max_reply": 15}),
    # Malformed: each must raise SMTPProtocolError.
    ReplyCase("bad-digit", b"2x0 no\r\n", error=True),
    ReplyCase("first-digit-1", b"150 no\r\n", error=True),
    ReplyCase("first-digit-6", b"650 no\r\n", error=True),
    ReplyCase("first-digit-0", b"050 no\r\n", error=True),
    ReplyCase("two-digit-code", b"25 ok\r\n", error=True),
    ReplyCase("two-digit-line", b"25\r\n", error=True),
    ReplyCase("four-digit-code", b"2500 ok\r\n", error=True),
    ReplyCase("bad-separator", b"250_ok\r\n", error=True),
    ReplyCase("tab-separator", b"250\tok\r\n", error=True),
    ReplyCase("empty-line", b"\r\n", error=True),
    ReplyCase("code-change-mid-reply", b"250-a\r\n251 b\r\n", error=True),
    ReplyCase("error-after-good-reply", b"250 ok\r\nhello\r\n", error=True),
    ReplyCase("over-long-line", b"250 " + b"x" * 8192 + b"\r\n", error=True),
    ReplyCase("over-long-line-unended", b"250 " + b"x" * 8200, error=True),
    ReplyCase("over-long-reply-unended", (b"250-" + b"y" * 60 + b"\r\n") * 1100, error=True),
    ReplyCase("small-limit-line", b"250-abc\r\n", error=True, kwargs={"max_line": 8}),
    ReplyCase("small-limit-reply", b"250-ab\r\n250-cd\r\n250 e\r\n", error=True,
              kwargs={"max_line": 8, "max_reply": 15}),
]


# -- DataEncoder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeCase:
    """A message in chunks and its DATA wire form (terminator included)."""

    id: str
    chunks: list[bytes]
    wire: bytes
    longest_line: int


ENCODE_CASES = [
    EncodeCase("clean", [b"Subject: hi\r\n\r\nbody\r\n"], b"Subject: hi\r\n\r\nbody\r\n.\r\n", 11),
    EncodeCase("no-final-eol", [b"abc"], b"abc\r\n.\r\n", 3),
    EncodeCase("bare-lf", [b"a\nbb\n"], b"a\r\nbb\r\n.\r\n", 2),
    EncodeCase("bare-cr", [b"a\rbb\r"], b"a\r\nbb\r\n.\r\n", 2),
    EncodeCase("cr-cr-lf", [b"a\r\r\nb"], b"a\r\n\r\nb\r\n.\r\n", 1),
    EncodeCase("lf-cr", [b"a\n\rb"], b"a\r\n\r\nb\r\n.\r\n", 1),
    EncodeCase("cr-at-chunk-end-then-lf", [b"a\r", b"\nb"], b"a\r\nb\r\n.\r\n", 1),
    EncodeCase("cr-at-chunk-end-then-text", [b"a\r", b"b"], b"a\r\nb\r\n.\r\n", 1),
    EncodeCase("cr-at-chunk-end-then-cr", [b"a\r", b"\r", b"\n"], b"a\r\n\r\n.\r\n", 1),
    EncodeCase("cr-at-message-end", [b"a\r"], b"a\r\n.\r\n", 1),
    EncodeCase("dot-at-message-start", [b".a\r\n"], b"..a\r\n.\r\n", 3),
    EncodeCase("dot-line", [b"a\r\n.\r\nb"], b"a\r\n..\r\nb\r\n.\r\n", 2),
    EncodeCase("dots-on-every-line", [b".\r\n.\r\n..\r\n"], b"..\r\n..\r\n...\r\n.\r\n", 3),
    EncodeCase("dot-after-bare-lf", [b"a\n.b"], b"a\r\n..b\r\n.\r\n", 3),
    EncodeCase("dot-after-bare-cr", [b"a\r.b"], b"a\r\n..b\r\n.\r\n", 3),
    EncodeCase("dot-after-chunk-crlf", [b"a\r\n", b".b"], b"a\r\n..b\r\n.\r\n", 3),
    EncodeCase("dot-after-split-cr", [b"a\r", b".b"], b"a\r\n..b\r\n.\r\n", 3),
    EncodeCase("dot-inside-line", [b"a.b\r\n"], b"a.b\r\n.\r\n", 3),
    EncodeCase("empty-message", [], b".\r\n", 0),
    EncodeCase("empty-chunk", [b""], b".\r\n", 0),
    EncodeCase("lone-dot", [b"."], b"..\r\n.\r\n", 2),
    EncodeCase("only-crlf", [b"\r\n"], b"\r\n.\r\n", 0),
    EncodeCase("only-lf", [b"\n"], b"\r\n.\r\n", 0),
    EncodeCase("only-cr", [b"\r"], b"\r\n.\r\n", 0),
    EncodeCase("longest-counts-stuffing", [b"..x\r\nab"], b"...x\r\nab\r\n.\r\n", 4),
    EncodeCase("8bit", [b"\xff\x00\x80\r\n"], b"\xff\x00\x80\r\n.\r\n", 3),
    EncodeCase(
        "long-text",
        [b"word " * 400 + b"\r\n" + b".x\n" * 50],
        b"word " * 400 + b"\r\n" + b"..x\r\n" * 50 + b".\r\n",
        2000,
    ),
]


def unstuffed(wire: bytes) -> bytes:
    """The BDAT form of a DATA wire form: no terminator line, no doubled dots."""
    return re.sub(rb"(?:^|(?<=\r\n))\.", b"", wire[:-3])


# -- ServerReader --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerCase:
    """Bytes from a client and the events of ``run_server`` they produce."""

    id: str
    data: bytes
    events: list[tuple[Any, ...]]
    max_size: int = 0
    kwargs: dict[str, int] = field(default_factory=dict)


OK, BARE, TOO_LONG, RUNAWAY = 0, 1, 2, 3  # LINE_* (checked against the module in tests)
END, DBARE, LONG, BIG = 1, 2, 4, 8  # DATA_*

SERVER_CASES = [
    ServerCase(
        "crlf-commands",
        b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n",
        [("line", OK, b"EHLO client.example"), ("line", OK, b"MAIL FROM:<a@b.example>")],
    ),
    ServerCase("bare-lf-command", b"NOOP\nQUIT\r\n", [("line", BARE, b"NOOP"), ("line", OK, b"QUIT")]),
    ServerCase("bare-cr-command", b"NOOP\rQUIT\r\n", [("line", BARE, b"NOOP"), ("line", OK, b"QUIT")]),
    ServerCase("empty-line", b"\r\nNOOP\r\n", [("line", OK, b""), ("line", OK, b"NOOP")]),
    ServerCase("cr-at-buffer-end", b"NOOP\r", []),
    ServerCase("incomplete", b"NOO", []),
    ServerCase("8bit-command", b"MAIL FROM:<\xc3\xa9@x>\r\n", [("line", OK, b"MAIL FROM:<\xc3\xa9@x>")]),
    ServerCase("line-at-limit", b"x" * 510 + b"\r\nNOOP\r\n",
               [("line", OK, b"x" * 510), ("line", OK, b"NOOP")]),
    ServerCase("line-over-limit", b"x" * 511 + b"\r\nNOOP\r\n",
               [("line", TOO_LONG, b""), ("line", OK, b"NOOP")]),
    ServerCase("over-long-then-fine", b"x" * 3000 + b"\r\nNOOP\r\n",
               [("line", TOO_LONG, b""), ("line", OK, b"NOOP")]),
    ServerCase("runaway", b"x" * 70000, [("line", RUNAWAY, b"")]),
    ServerCase("runaway-small-limits", b"y" * 200, [("line", RUNAWAY, b"")],
               kwargs={"max_line": 16, "max_discard": 100}),
    ServerCase(
        "pipelined-with-data",
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        [
            ("line", OK, b"MAIL FROM:<a@b>"),
            ("line", OK, b"RCPT TO:<c@d>"),
            ("line", OK, b"DATA"),
            ("data", b"Subject: x\r\n\r\nhi\r\n", END),
            ("line", OK, b"QUIT"),
        ],
    ),
    ServerCase(
        "data-unstuffing",
        b"DATA\r\nline1\r\n..dot\r\n...\r\n.\r\nQUIT\r\n",
        [("line", OK, b"DATA"), ("data", b"line1\r\n.dot\r\n..\r\n", END), ("line", OK, b"QUIT")],
    ),
    ServerCase("data-empty", b"DATA\r\n.\r\nNOOP\r\n",
               [("line", OK, b"DATA"), ("data", b"", END), ("line", OK, b"NOOP")]),
    ServerCase("data-unended", b"DATA\r\nabc\r\n", [("line", OK, b"DATA")]),
    ServerCase("data-bare-lf", b"DATA\r\na\nb\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"a\r\nb\r\n", END | DBARE)]),
    ServerCase("data-bare-cr", b"DATA\r\na\rb\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"a\r\nb\r\n", END | DBARE)]),
    ServerCase("data-dot-line-bare-lf", b"DATA\r\na\r\n.\nb\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"a\r\n\r\nb\r\n", END | DBARE)]),
    ServerCase("data-dot-line-bare-cr", b"DATA\r\na\r\n.\rb\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"a\r\n\r\nb\r\n", END | DBARE)]),
    ServerCase(
        "data-too-big-drained",
        b"DATA\r\n" + b"x" * 50 + b"\r\n..\r\n.\r\nQUIT\r\n",
        [("line", OK, b"DATA"), ("data", None, END | BIG), ("line", OK, b"QUIT")],
        max_size=10,
    ),
    ServerCase("data-at-max-size", b"DATA\r\n12345678\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"12345678\r\n", END)], max_size=10),
    ServerCase("data-line-at-limit", b"DATA\r\n" + b"y" * 998 + b"\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"y" * 998 + b"\r\n", END)]),
    ServerCase("data-long-line", b"DATA\r\n" + b"y" * 999 + b"\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"y" * 999 + b"\r\n", END | LONG)]),
    ServerCase("data-long-stuffed-line", b"DATA\r\n." + b"y" * 998 + b"\r\n.\r\n",
               [("line", OK, b"DATA"), ("data", b"y" * 998 + b"\r\n", END)]),
    ServerCase(
        "two-messages",
        b"DATA\r\na\r\n.\r\nDATA\r\n.b\r\n.\r\n",
        [("line", OK, b"DATA"), ("data", b"a\r\n", END),
         ("line", OK, b"DATA"), ("data", b"b\r\n", END)],
    ),
    # -- chunk mode (BDAT, RFC 3030): exactly <size> octets, nothing interpreted --------
    ServerCase("chunk-last", b"BDAT 5 LAST\r\nhelloNOOP\r\n",
               [("line", OK, b"BDAT 5 LAST"), ("chunk", b"hello", END), ("line", OK, b"NOOP")]),
    ServerCase(
        "chunk-raw-octets",  # a "." line, a bare LF, a lone CR, a CRLF.CRLF: all data
        b"BDAT 18 LAST\r\n.\r\n..x\ny\rz\r\n.\r\nQ\r\nNOOP\r\n",
        [("line", OK, b"BDAT 18 LAST"), ("chunk", b".\r\n..x\ny\rz\r\n.\r\nQ\r\n", END),
         ("line", OK, b"NOOP")],
    ),
    ServerCase("chunk-zero", b"BDAT 0 LAST\r\nNOOP\r\n",
               [("line", OK, b"BDAT 0 LAST"), ("chunk", b"", END), ("line", OK, b"NOOP")]),
    ServerCase("chunk-zero-at-end", b"BDAT 0 LAST\r\n",
               [("line", OK, b"BDAT 0 LAST"), ("chunk", b"", END)]),
    ServerCase(
        "chunks-pipelined",
        b"BDAT 3\r\nabcBDAT 2\r\n\r\nBDAT 1 LAST\r\n.MAIL FROM:<a@b>\r\n",
        [("line", OK, b"BDAT 3"), ("chunk", b"abc", END),
         ("line", OK, b"BDAT 2"), ("chunk", b"\r\n", END),
         ("line", OK, b"BDAT 1 LAST"), ("chunk", b".", END),
         ("line", OK, b"MAIL FROM:<a@b>")],
    ),
    ServerCase("chunk-unended", b"BDAT 10 LAST\r\nabc", [("line", OK, b"BDAT 10 LAST")]),
    ServerCase(
        "chunk-cr-at-end",  # a CR that ends a chunk is data, not half a line ending
        b"BDAT 2\r\na\rBDAT 1 LAST\r\n\n",
        [("line", OK, b"BDAT 2"), ("chunk", b"a\r", END),
         ("line", OK, b"BDAT 1 LAST"), ("chunk", b"\n", END)],
    ),
    ServerCase(
        "chunks-at-max-size",
        b"BDAT 4\r\n1234BDAT 6 LAST\r\n567890NOOP\r\n",
        [("line", OK, b"BDAT 4"), ("chunk", b"1234", END),
         ("line", OK, b"BDAT 6 LAST"), ("chunk", b"567890", END), ("line", OK, b"NOOP")],
        max_size=10,
    ),
    ServerCase(
        "chunks-over-max-size",  # the total counts: the second chunk is refused whole
        b"BDAT 4\r\n1234BDAT 7\r\n567890.BDAT 1 LAST\r\nxNOOP\r\n",
        [("line", OK, b"BDAT 4"), ("chunk", b"1234", END),
         ("line", OK, b"BDAT 7"), ("chunk", b"", END | BIG),
         ("line", OK, b"BDAT 1 LAST"), ("chunk", b"", END | BIG), ("line", OK, b"NOOP")],
        max_size=10,
    ),
    ServerCase(
        "chunks-total-restarts",  # after LAST the next chunk starts a new message
        b"BDAT 8 LAST\r\n12345678BDAT 8 LAST\r\nabcdefgh",
        [("line", OK, b"BDAT 8 LAST"), ("chunk", b"12345678", END),
         ("line", OK, b"BDAT 8 LAST"), ("chunk", b"abcdefgh", END)],
        max_size=10,
    ),
    ServerCase(
        "chunk-then-data",
        b"BDAT 5 LAST\r\n.\r\n\r\nDATA\r\n..a\r\n.\r\n",
        [("line", OK, b"BDAT 5 LAST"), ("chunk", b".\r\n\r\n", END),
         ("line", OK, b"DATA"), ("data", b".a\r\n", END)],
    ),
]

# -- SMTP smuggling --------------------------------------------------------------------------

#: End-of-data look-alikes that are NOT CRLF "." CRLF, as ``(sequence, wire, body)``. A
#: receiver that ends DATA at one of these while the relay before it did not lets a client
#: smuggle a second message. Between "A" and "B", each becomes a stuffed dot line on the
#: wire (encoder) and an empty line in the body (reader), never the end of the data.
_WIRE = b"A\r\n..\r\nB\r\n.\r\n"
_BODY = b"A\r\n\r\nB\r\n"
SMUGGLING = [
    (b"\n.\n", _WIRE, _BODY),
    (b"\r.\r", _WIRE, _BODY),
    (b"\r\n.\r", _WIRE, _BODY),
    (b"\n.\r\n", _WIRE, _BODY),
    (b"\r.\r\n", _WIRE, _BODY),
    (b"\r\n.\n", _WIRE, _BODY),
    (b"\n.\r", _WIRE, _BODY),
    (b"\r.\n", _WIRE, _BODY),
    (b"\r\n.\r\r\n", b"A\r\n..\r\n\r\nB\r\n.\r\n", b"A\r\n\r\n\r\nB\r\n"),
    (b"\n.\n\r\n", b"A\r\n..\r\n\r\nB\r\n.\r\n", b"A\r\n\r\n\r\nB\r\n"),
]
