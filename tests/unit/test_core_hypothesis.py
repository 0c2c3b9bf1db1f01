"""Property tests of the byte codec: random inputs rich in CR, LF and ".", split at random.

Both implementations must agree with each other call by call, and with a small regex
reference on the whole message; reading back what the encoder wrote gives the
CRLF-normalized message.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsmtp import _core_py
from fastsmtp.errors import SMTPProtocolError

from support import vectors as V
from support.cores import load_core

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

PIECES = [b"\r", b"\n", b".", b"a", b"bc", b" ", b"\r\n", b"..", b"\r\n.", b"\xff", b"\x00"]
# Long clean lines, so that inputs cross the compiled core's 64-byte block scan.
PIECES += [b"y" * 61 + b"\r\n", b"w" * 130 + b"\r\n"]
bodies = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


def split(data: bytes, at: list[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length + 1)."""
    points = sorted({a % (len(data) + 1) for a in at})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    """(twin, compiled core); skips like test_core's "c" parameter when it is not built."""
    return _core_py, load_core("c")


# -- references ----------------------------------------------------------------------------

_EOL = re.compile(rb"\r\n|\r|\n")
_LINE_DOT = re.compile(rb"(?:^|(?<=\r\n))\.")


def ref_normalize(x: bytes) -> bytes:
    return _EOL.sub(b"\r\n", x)


def ref_encode(x: bytes) -> tuple[bytes, int]:
    """(wire with terminator, longest line) of message ``x``."""
    y = _LINE_DOT.sub(b"..", ref_normalize(x))
    longest = max((len(line) for line in y.split(b"\r\n")), default=0)
    tail = b".\r\n" if not y or y.endswith(b"\r\n") else b"\r\n.\r\n"
    return y + tail, longest


def ref_read(data: bytes) -> tuple[bytes, bytes] | None:
    """(body, rest) of CRLF-only DATA bytes, or None when the terminator is missing."""
    m = re.search(rb"(?:^|(?<=\r\n))\.\r\n", data)
    if m is None:
        return None
    return _LINE_DOT.sub(b"", data[: m.start()]), data[m.end() :]


# -- encoder -------------------------------------------------------------------------------


@SETTINGS
@given(body=bodies, at=cuts)
def test_encoder_matches_reference_and_twin(both: Any, body: bytes, at: list[int]) -> None:
    parts = split(body, at)
    py, c = (core.DataEncoder() for core in both)
    for part in parts:
        a, b = bytes(part), bytes(part)
        out_py, out_c = py.encode(a), c.encode(b)
        assert out_py == out_c
        assert (out_py is a) == (out_c is b)
        assert (py.bytes_out, py.longest_line) == (c.bytes_out, c.longest_line)
    assert py.end() == c.end()
    wire, longest = ref_encode(body)
    for core in both:
        assert V.run_encoder(core, parts) == (wire, len(wire), longest)
    assert not V.has_bare_eol(wire)


@SETTINGS
@given(body=bodies)
def test_data_size_matches_reference_and_twin(both: Any, body: bytes) -> None:
    normalized = ref_normalize(body)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    for core in both:
        assert core.data_size(body) == len(normalized)


@SETTINGS
@given(body=bodies, at=cuts, at2=cuts)
def test_read_back_what_was_encoded(both: Any, body: bytes, at: list[int], at2: list[int]) -> None:
    normalized = ref_normalize(body)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    for core in both:
        wire, _, _ = V.run_encoder(core, split(body, at))
        events = V.run_server(core, split(b"DATA\r\n" + wire + b"QUIT\r\n", at2))
        assert events == [
            ("line", core.LINE_OK, b"DATA"),
            ("data", normalized, core.DATA_END),
            ("line", core.LINE_OK, b"QUIT"),
        ]


@pytest.mark.parametrize("dirt", [b"\n", b"\r", b"\r\n.", b".", b"\r\r\n", b"\n\n"])
def test_dirt_at_every_offset(both: Any, dirt: bytes) -> None:
    """One byte needing an edit at every offset of long clean text (block edges included)."""
    clean = (b"x" * 29 + b"\r\n") * 12
    for at in range(0, 200):
        body = clean[:at] + dirt + clean[at:]
        wire, longest = ref_encode(body)
        normalized = ref_normalize(body)
        for core in both:
            assert V.run_encoder(core, [body]) == (wire, len(wire), longest), at
            assert V.run_encoder(core, [body[:at], body[at:]]) == (wire, len(wire), longest), at
            assert V.run_server(core, [b"DATA\r\n" + wire]) == [
                ("line", core.LINE_OK, b"DATA"),
                ("data", normalized + (b"" if normalized.endswith(b"\r\n") else b"\r\n"),
                 core.DATA_END),
            ], at
        py, c = (trace_reader(core, [b"DATA\r\n" + body + b"\r\n.\r\n"], 0) for core in both)
        assert py == c, at


# -- server reader -------------------------------------------------------------------------


def trace_reader(core: ModuleType, parts: list[bytes], max_size: int) -> list[Any]:
    """Every call's result of a small server loop, for call-by-call comparison."""
    reader = core.ServerReader(max_line=20, max_discard=60)
    trace: list[Any] = []
    for part in parts:
        reader.feed(part)
        for _ in range(len(part) + 3):
            if reader.in_data:
                got = reader.next_data()
            else:
                got = reader.next_line()
                if got is not None and got[1].endswith(b"DATA"):
                    reader.start_data(max_size)
                elif got is not None and got[1][:5] == b"BDAT " and got[1][5:].isdigit():
                    reader.start_chunk(int(got[1][5:]) % 50, max_size, got[1][5:6] == b"1")
            trace.append((got, reader.buffered, reader.in_data))
            if got is None:
                break
    return trace


@SETTINGS
@given(
    body=st.lists(
        st.sampled_from(PIECES + [b"DATA", b"\r\n.\r\n", b"x" * 25, b"BDAT 7\r\n", b"\r\nBDAT 13"]),
        max_size=60,
    ).map(
        b"".join
    ),
    at=cuts,
    max_size=st.sampled_from([0, 0, 5, 30]),
)
def test_reader_twins_agree(both: Any, body: bytes, at: list[int], max_size: int) -> None:
    parts = split(b"DATA\r\n" + body, at)
    py, c = (trace_reader(core, parts, max_size) for core in both)
    assert py == c


crlf_lines = st.lists(st.sampled_from([b"", b".", b"..", b"a", b".a", b"a.b", b"..."]), max_size=20)


@SETTINGS
@given(lines=crlf_lines, at=cuts)
def test_reader_matches_reference(both: Any, lines: list[bytes], at: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines) + b".\r\nRSET\r\n"
    expected = ref_read(data)
    assert expected is not None
    body, rest = expected
    for core in both:
        reader = core.ServerReader()
        reader.start_data()
        got = []
        for part in split(data, at):
            reader.feed(part)
            while reader.in_data and (chunk := reader.next_data()) is not None:
                got.append(chunk[0])
        assert b"".join(got) == body
        assert not reader.in_data
        assert reader.buffered == len(rest)


# -- reply parser --------------------------------------------------------------------------

texts = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
replies = st.lists(
    st.tuples(st.integers(200, 599), st.lists(texts, min_size=1, max_size=5)), max_size=6
)


@SETTINGS
@given(rs=replies, crlf=st.booleans(), at=cuts)
def test_reply_parser_random_splits(both: Any, rs: list, crlf: bool, at: list[int]) -> None:
    eol = b"\r\n" if crlf else b"\n"
    data = b"".join(
        b"%d%s%s%s" % (code, b" " if i == len(lines) - 1 else b"-", text, eol)
        for code, lines in rs
        for i, text in enumerate(lines)
    )
    for core in both:
        assert V.run_replies(core, split(data, at)) == (rs, 0)


def _feed_all(core: ModuleType, parts: list[bytes]) -> list[Any]:
    parser = core.ReplyParser(max_line=24, max_reply=60)
    trace: list[Any] = []
    for part in parts:
        try:
            trace.append((parser.feed(part), parser.buffered))
        except SMTPProtocolError as exc:
            trace.append(str(exc))
    return trace


@SETTINGS
@given(
    data=st.lists(
        st.sampled_from([b"250", b"220", b"2", b"150", b"25x", b"-", b" ", b"ok", b"\r\n", b"\n",
                         b"\r", b"y" * 9]),
        max_size=40,
    ).map(b"".join),
    at=cuts,
)
def test_reply_twins_agree_on_garbage(both: Any, data: bytes, at: list[int]) -> None:
    parts = split(data, at)
    py, c = (_feed_all(core, parts) for core in both)
    assert py == c
