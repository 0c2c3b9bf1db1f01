"""The byte codec's vectors on both implementations: the twin ("py") and the compiled core ("c").

Every vector runs fed whole, byte by byte and split in two at every position (see
``vectors.feedings``). The "c" parameter skips only when the extension is not built and
``FASTSMTP_REQUIRE_EXTENSION`` is not "1" (CI sets it, so CI cannot silently skip).
"""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from fastsmtp import _core_py
from fastsmtp.errors import SMTPProtocolError

from support import vectors as V
from support.cores import load_core


@pytest.fixture(params=["py", "c"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation of the codec in turn."""
    return load_core(request.param)


def _ids(cases: list) -> list[str]:
    return [case.id for case in cases]


# -- module surface ---------------------------------------------------------------------


def test_constants_match_twin(core: ModuleType) -> None:
    for name in _core_py.__all__:
        assert hasattr(core, name), name
        if name.isupper():
            assert getattr(core, name) == getattr(_core_py, name), name
    assert (core.LINE_OK, core.LINE_BARE_EOL, core.LINE_TOO_LONG, core.LINE_RUNAWAY) == (
        V.OK, V.BARE, V.TOO_LONG, V.RUNAWAY,
    )
    assert (core.DATA_END, core.DATA_BARE_EOL, core.DATA_LONG_LINE, core.DATA_TOO_BIG) == (
        V.END, V.DBARE, V.LONG, V.BIG,
    )
    assert (core.MAX_REPLY_LINE, core.MAX_REPLY_SIZE, core.MAX_COMMAND_LINE) == (8192, 65536, 512)
    assert (core.MAX_COMMAND_DISCARD, core.MAX_DATA_LINE) == (65536, 1000)


def test_rejects_str(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.ReplyParser().feed("250 ok\r\n")
    with pytest.raises(TypeError):
        core.DataEncoder().encode("text\r\n")
    with pytest.raises(TypeError):
        core.ServerReader().feed("NOOP\r\n")


# -- ReplyParser ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", V.REPLY_CASES, ids=_ids(V.REPLY_CASES))
def test_reply_vectors(core: ModuleType, case: V.ReplyCase) -> None:
    for how, parts in V.feedings(case.data):
        if case.error:
            with pytest.raises(SMTPProtocolError):
                V.run_replies(core, parts, **case.kwargs)
        else:
            got = V.run_replies(core, parts, **case.kwargs)
            assert got == (case.replies, case.buffered), how


def test_reply_parser_stays_broken(core: ModuleType) -> None:
    parser = core.ReplyParser()
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250-a\r\n251 b\r\n")
    for _ in range(2):
        with pytest.raises(SMTPProtocolError):
            parser.feed(b"250 ok\r\n")
    parser.clear()
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250 ok\r\n")


def test_reply_buffered_and_clear(core: ModuleType) -> None:
    parser = core.ReplyParser()
    assert parser.buffered == 0
    assert parser.feed(b"250-a\r\n250-b") == []
    assert parser.buffered == 12
    assert parser.clear() == 12
    assert parser.buffered == 0
    # Nothing of the dropped reply leaks into the next one (the STARTTLS case).
    assert parser.feed(b"220 ready\r\n") == [(220, [b"ready"])]
    assert parser.buffered == 0


def test_reply_accepts_buffers(core: ModuleType) -> None:
    parser = core.ReplyParser()
    assert parser.feed(bytearray(b"250-a\r\n")) == []
    assert parser.feed(memoryview(b"250 b\r\n354 ")) == [(250, [b"a", b"b"])]
    assert parser.feed(memoryview(b"go\r\n")) == [(354, [b"go"])]


def test_reply_lines_are_fresh_lists(core: ModuleType) -> None:
    parser = core.ReplyParser()
    first = parser.feed(b"250 a\r\n")
    second = parser.feed(b"250 b\r\n")
    assert first[0][1] is not second[0][1]
    assert first == [(250, [b"a"])] and second == [(250, [b"b"])]


# -- DataEncoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", V.ENCODE_CASES, ids=_ids(V.ENCODE_CASES))
def test_encode_vectors(core: ModuleType, case: V.EncodeCase) -> None:
    expected = (case.wire, len(case.wire), case.longest_line)
    assert V.run_encoder(core, case.chunks) == expected, "as chunked"
    for how, parts in V.feedings(b"".join(case.chunks)):
        assert V.run_encoder(core, parts) == expected, how
    assert not V.has_bare_eol(case.wire)


@pytest.mark.parametrize("case", V.ENCODE_CASES, ids=_ids(V.ENCODE_CASES))
def test_data_size_vectors(core: ModuleType, case: V.EncodeCase) -> None:
    # RFC 1870's size is the wire form without the doubled dots and the final ".\r\n".
    stored = re.sub(rb"(?:^|(?<=\r\n))\.", b"", case.wire[:-3])
    message = b"".join(case.chunks)
    for form in (message, bytearray(message), memoryview(message)):
        assert core.data_size(form) == len(stored)


def test_data_size_long_text(core: ModuleType) -> None:
    # Past the compiled scan's 16- and 32-byte strides, with bare endings anywhere.
    clean = (b"x" * 76 + b"\r\n") * 40
    assert core.data_size(clean) == len(clean)
    assert core.data_size(clean[:-2]) == len(clean)  # the final CRLF is added
    for at in (0, 15, 16, 31, 32, 33, 77, 78, 1000, len(clean) - 1, len(clean)):
        for dirt in (b"\n", b"\r", b"\r\n", b"\n\r", b"\r\r\n\n"):
            body = clean[:at] + dirt + clean[at:]
            normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
            assert core.data_size(body) == len(normalized), (at, dirt)
    with pytest.raises(TypeError):
        core.data_size("text")


@pytest.mark.parametrize("case", V.ENCODE_CASES, ids=_ids(V.ENCODE_CASES))
def test_encode_without_stuffing_vectors(core: ModuleType, case: V.EncodeCase) -> None:
    # BDAT (RFC 3030): the same normalization, no dot doubled, only the last line ended;
    # its size is the RFC 1870 size, so SIZE= and "BDAT n" agree.
    chunk = V.unstuffed(case.wire)
    message = b"".join(case.chunks)
    assert core.data_size(message) == len(chunk)
    assert V.run_encoder(core, case.chunks, stuff=False)[:2] == (chunk, len(chunk))
    for how, parts in V.feedings(message):
        assert V.run_encoder(core, parts, stuff=False)[:2] == (chunk, len(chunk)), how


def test_encode_without_stuffing_keeps_dots_and_input(core: ModuleType) -> None:
    encoder = core.DataEncoder(stuff=False)
    chunk = b".dot\r\n.\r\n"
    assert encoder.encode(chunk) is chunk
    assert encoder.end() == b""
    assert encoder.bytes_out == len(chunk)
    assert encoder.encode(b".a\n.") == b".a\r\n."
    assert encoder.end() == b"\r\n"
    assert encoder.encode(b"x\r") == b"x\r"
    assert encoder.end() == b"\n"
    assert encoder.bytes_out == 3
    # The default still stuffs (one encoder per mode: the mode is not per message).
    assert core.DataEncoder().encode(b".a") == b"..a"


def test_encode_returns_input_when_unchanged(core: ModuleType) -> None:
    encoder = core.DataEncoder()
    for chunk in (b"Subject: x\r\n\r\n", bytearray(b"a.b\r\n"), memoryview(b"text\r\nmore")):
        assert encoder.encode(chunk) is chunk
    # A CR passed through at a chunk's end, completed by the next chunk's LF.
    chunk1, chunk2 = b" end\r", b"\nnext\r\n"
    assert encoder.encode(chunk1) is chunk1
    assert encoder.encode(chunk2) is chunk2
    changed = b".dot\r\n"
    out = encoder.encode(changed)
    assert out == b"..dot\r\n" and type(out) is bytes


def test_encode_changed_buffers_become_bytes(core: ModuleType) -> None:
    encoder = core.DataEncoder()
    assert encoder.encode(bytearray(b"a\nb")) == b"a\r\nb"
    out = encoder.encode(memoryview(b"\n.x"))
    assert out == b"\r\n..x" and type(out) is bytes
    assert core.DataEncoder().encode(memoryview(b"a\xffb\nc")[::2]) == b"abc"


@pytest.mark.parametrize(
    ("chunks", "tail"),
    [
        ([], b".\r\n"),
        ([b"a\r\n"], b".\r\n"),
        ([b"a\n"], b".\r\n"),
        ([b"a"], b"\r\n.\r\n"),
        ([b"a\r"], b"\n.\r\n"),
        ([b"a\r", b""], b"\n.\r\n"),
        ([b"a\r\n", b"b"], b"\r\n.\r\n"),
    ],
)
def test_end_picks_terminator(core: ModuleType, chunks: list[bytes], tail: bytes) -> None:
    encoder = core.DataEncoder()
    for chunk in chunks:
        encoder.encode(chunk)
    assert encoder.end() == tail


def test_bytes_out_and_longest_line(core: ModuleType) -> None:
    encoder = core.DataEncoder()
    total = 0
    for chunk in (b"12345\n", b".678\r", b"\n", b"ab"):
        total += len(encoder.encode(chunk))
        assert encoder.bytes_out == total
    assert encoder.longest_line == 5
    tail = encoder.end()
    assert encoder.bytes_out == total + len(tail)
    # The counters describe the ended message until the next encode starts a new one.
    assert encoder.longest_line == 5
    assert encoder.encode(b".x") == b"..x"  # the new message starts at a line start
    assert (encoder.bytes_out, encoder.longest_line) == (3, 3)
    assert encoder.end() == b"\r\n.\r\n"


# -- ServerReader --------------------------------------------------------------------------


@pytest.mark.parametrize("case", V.SERVER_CASES, ids=_ids(V.SERVER_CASES))
def test_server_vectors(core: ModuleType, case: V.ServerCase) -> None:
    for how, parts in V.feedings(case.data):
        got = V.run_server(core, parts, max_size=case.max_size, **case.kwargs)
        assert got == case.events, how


def test_cr_at_buffer_end_waits(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.feed(b"NOOP\r")
    assert reader.next_line() is None
    assert reader.buffered == 5
    reader.feed(b"\n")
    assert reader.next_line() == (core.LINE_OK, b"NOOP")
    assert reader.buffered == 0
    reader.feed(b"NOOP\r")
    assert reader.next_line() is None
    reader.feed(b"QUIT\r\n")
    assert reader.next_line() == (core.LINE_BARE_EOL, b"NOOP")
    assert reader.next_line() == (core.LINE_OK, b"QUIT")


def test_bytes_after_terminator_stay_buffered(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_data()
    assert reader.in_data
    assert reader.next_line() is None  # no command lines in data mode
    reader.feed(b"body\r\n.\r\nQUIT\r\nNO")
    assert reader.next_data() == (b"body\r\n", core.DATA_END)
    assert not reader.in_data
    assert reader.buffered == 8
    assert reader.next_data() is None  # no body chunks in command mode
    assert reader.next_line() == (core.LINE_OK, b"QUIT")
    assert reader.next_line() is None
    assert reader.clear() == 2
    assert reader.buffered == 0


def test_data_flags_accumulate(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_data()
    reader.feed(b"a\nb")
    assert reader.next_data() == (b"a\r\nb", core.DATA_BARE_EOL)
    assert reader.next_data() is None
    reader.feed(b"\r\n.\r\n")
    assert reader.next_data() == (b"\r\n", core.DATA_BARE_EOL | core.DATA_END)
    reader.start_data()  # a new message starts without flags
    reader.feed(b"c\r\n.\r\n")
    assert reader.next_data() == (b"c\r\n", core.DATA_END)


def test_data_cr_held_across_feeds(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_data()
    reader.feed(b"abc\r")
    assert reader.next_data() == (b"abc", 0)
    reader.feed(b"\n.")
    assert reader.next_data() == (b"\r\n", 0)
    reader.feed(b"\r")
    assert reader.next_data() == (b"", 0)
    reader.feed(b"\n")
    assert reader.next_data() == (b"", core.DATA_END)


def test_data_too_big_drains(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_data(max_size=8)
    reader.feed(b"1234\r\n")
    assert reader.next_data() == (b"1234\r\n", 0)
    reader.feed(b"5678\r\n")
    assert reader.next_data() == (b"", core.DATA_TOO_BIG)
    reader.feed(b"more\r\n" * 100 + b".\r\nRSET\r\n")
    assert reader.next_data() == (b"", core.DATA_TOO_BIG | core.DATA_END)
    assert reader.next_line() == (core.LINE_OK, b"RSET")


def test_data_long_line_reported_before_it_ends(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_data()
    reader.feed(b"z" * 1500)
    chunk, flags = reader.next_data()
    assert chunk == b"z" * 1500 and flags == core.DATA_LONG_LINE
    assert reader.buffered == 0


def test_clean_data_returned_without_copy(core: ModuleType) -> None:
    if core is _core_py:
        pytest.skip("a compiled-core property: the twin joins the body line by line")
    reader = core.ServerReader()
    reader.start_data()
    body = b"Subject: x\r\n\r\n" + b"line of text\r\n" * 100
    reader.feed(body)
    chunk, flags = reader.next_data()
    assert chunk is body and flags == 0
    assert reader.buffered == 0


def test_runaway_over_several_feeds(core: ModuleType) -> None:
    reader = core.ServerReader(max_line=16, max_discard=100)
    results = []
    for _ in range(20):
        reader.feed(b"x" * 10)
        results.append(reader.next_line())
    assert results.count((core.LINE_RUNAWAY, b"")) == 1
    assert all(r is None for r in results[: results.index((core.LINE_RUNAWAY, b""))])
    assert reader.buffered <= 16


def test_over_long_line_memory_bounded(core: ModuleType) -> None:
    reader = core.ServerReader()
    for _ in range(50):
        reader.feed(b"y" * 1000)
        assert reader.next_line() is None
        assert reader.buffered < core.MAX_COMMAND_LINE
    reader.feed(b"\r\nNOOP\r\n")
    assert reader.next_line() == (core.LINE_TOO_LONG, b"")
    assert reader.next_line() == (core.LINE_OK, b"NOOP")


def test_server_accepts_buffers(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.feed(bytearray(b"NO"))
    reader.feed(memoryview(b"OP\r\nQU"))
    reader.feed(memoryview(b"IT\n"))
    assert reader.next_line() == (core.LINE_OK, b"NOOP")
    assert reader.next_line() == (core.LINE_BARE_EOL, b"QUIT")


# -- SMTP smuggling ------------------------------------------------------------------------


@pytest.mark.parametrize(("seq", "wire", "body"), V.SMUGGLING, ids=[repr(s[0]) for s in V.SMUGGLING])
def test_smuggling_encoder(core: ModuleType, seq: bytes, wire: bytes, body: bytes) -> None:
    for how, parts in V.feedings(b"A" + seq + b"B"):
        out, _, _ = V.run_encoder(core, parts)
        assert out == wire, how
        assert not V.has_bare_eol(out)
        assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")


@pytest.mark.parametrize(("seq", "wire", "body"), V.SMUGGLING, ids=[repr(s[0]) for s in V.SMUGGLING])
def test_smuggling_reader(core: ModuleType, seq: bytes, wire: bytes, body: bytes) -> None:
    data = b"DATA\r\nA" + seq + b"B\r\n.\r\nNOOP\r\n"
    expected = [("line", V.OK, b"DATA"), ("data", body, V.END | V.DBARE), ("line", V.OK, b"NOOP")]
    for how, parts in V.feedings(data):
        assert V.run_server(core, parts) == expected, how
    # What the encoder made of the same bytes reads back as the CRLF-normalized text,
    # its "." line kept, without the bare-EOL flag.
    normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", b"A" + seq + b"B\r\n")
    assert V.run_server(core, [b"DATA\r\n" + wire]) == [
        ("line", V.OK, b"DATA"),
        ("data", normalized, V.END),
    ]


def test_real_terminator_ends_data(core: ModuleType) -> None:
    events = V.run_server(core, [b"DATA\r\nA\r\n.\r\nB\r\n.\r\n"])
    assert events == [
        ("line", V.OK, b"DATA"),
        ("data", b"A\r\n", V.END),
        ("line", V.OK, b"B"),
        ("line", V.OK, b"."),
    ]


# -- chunk mode (BDAT) ---------------------------------------------------------------------


def test_chunk_returned_without_copy(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_chunk(10_000)
    body = b"a\n.\r\n" * 1000
    reader.feed(body)
    chunk, flags = reader.next_data()
    assert chunk == body and flags == 0
    if core is not _core_py:
        assert chunk is body
    assert reader.buffered == 0
    assert reader.next_data() is None  # 5000 octets still to come, none here yet
    reader.feed(b"NOOP\r\n")  # inside a chunk a command is data
    assert reader.next_data() == (b"NOOP\r\n", 0)


def test_chunk_across_feeds_keeps_rest(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_chunk(9)
    assert reader.in_data and reader.next_line() is None
    assert reader.next_data() is None
    reader.feed(b"abc")
    assert reader.next_data() == (b"abc", 0)
    reader.feed(b"d\r\n.\r\nNOOP\r\n")
    assert reader.next_data() == (b"d\r\n.\r\n", core.DATA_END)
    assert not reader.in_data and reader.buffered == 6
    assert reader.next_data() is None
    assert reader.next_line() == (core.LINE_OK, b"NOOP")


def test_chunk_too_big_consumed_memory_bounded(core: ModuleType) -> None:
    reader = core.ServerReader()
    reader.start_chunk(600, max_size=1000)
    reader.feed(b"x" * 600)
    assert reader.next_data() == (b"x" * 600, core.DATA_END)
    reader.start_chunk(500_000, max_size=1000, first=False)
    for _ in range(499):
        reader.feed(b"y" * 1000)
        assert reader.next_data() == (b"", core.DATA_TOO_BIG)
        assert reader.buffered == 0
    reader.feed(b"z" * 1000 + b"RSET\r\n")
    assert reader.next_data() == (b"", core.DATA_TOO_BIG | core.DATA_END)
    assert reader.next_line() == (core.LINE_OK, b"RSET")
    reader.start_chunk(1000, max_size=1000)  # a new message: the total starts again
    reader.feed(b"w" * 1000)
    assert reader.next_data() == (b"w" * 1000, core.DATA_END)


def test_start_chunk_misuse(core: ModuleType) -> None:
    reader = core.ServerReader()
    with pytest.raises(ValueError):
        reader.start_chunk(-1)
    reader.start_chunk(3)
    with pytest.raises(RuntimeError):
        reader.start_chunk(3)
    reader.feed(b"abc")
    assert reader.next_data() == (b"abc", core.DATA_END)
    reader.start_data()  # DATA after a chunk: data mode as before
    reader.feed(b"..\r\n.\r\n")
    assert reader.next_data() == (b".\r\n", core.DATA_END)
