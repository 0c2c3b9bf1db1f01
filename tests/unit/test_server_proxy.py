"""The sans-IO PROXY protocol reader (v1 and v2): vectors fed whole, byte by byte, at every split."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from fastsmtp.server.proxy import (
    MAX_V1_HEADER,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    ProxyParser,
)


def v2(ver_cmd: int, fam: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, fam, len(payload)) + payload


def v4_block(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    return src + dst + struct.pack("!HH", sport, dport)


IPV6_SRC = bytes.fromhex("20010db8000000000000000000000001")
IPV6_DST = bytes.fromhex("20010db8000000000000000000000002")
TLV = struct.pack("!BH", 0x05, 4) + b"uid1" + struct.pack("!BH", 0x01, 2) + b"h2"

#: (header bytes, expected header)
VALID = [
    (
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        ProxyHeader(1, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 25)),
    ),
    (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        ProxyHeader(1, "PROXY", "TCP6", ("2001:db8::1", 1, 0, 0), ("2001:db8::2", 65535, 0, 0)),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "LOCAL", "UNKNOWN")),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, "LOCAL", "UNKNOWN")),
    (
        v2(0x21, 0x11, v4_block(bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2]), 56324, 25)),
        ProxyHeader(2, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 25)),
    ),
    (
        v2(0x21, 0x21, IPV6_SRC + IPV6_DST + struct.pack("!HH", 4000, 587) + TLV),
        ProxyHeader(
            2,
            "PROXY",
            "TCP6",
            ("2001:db8::1", 4000, 0, 0),
            ("2001:db8::2", 587, 0, 0),
            [(0x05, b"uid1"), (0x01, b"h2")],
        ),
    ),
    (v2(0x20, 0x00, b""), ProxyHeader(2, "LOCAL", "UNSPEC")),
    # LOCAL: whatever addresses follow are ignored (a health check).
    (v2(0x20, 0x11, v4_block(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 1, 2)), ProxyHeader(2, "LOCAL", "TCP4")),
    (
        v2(0x21, 0x31, b"/src".ljust(108, b"\x00") + b"/dst".ljust(108, b"\x00")),
        ProxyHeader(2, "PROXY", "UNIX", "/src", "/dst"),
    ),
]

INVALID = [
    b"EHLO me\r\n",  # not a proxy at all
    b"PROXY\r\n",
    b"PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n",
    b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",  # an IPv6 address under TCP4
    b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",  # double space
    b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",  # bare LF
    b"PROXY UNKNOWN " + b"x" * MAX_V1_HEADER + b"\r\n",  # over the 107-byte bound
    V2_SIGNATURE[:5] + b"X" + V2_SIGNATURE[6:] + b"\x21\x11\x00\x00",  # bad signature
    v2(0x11, 0x11, v4_block(b"\x00" * 4, b"\x00" * 4, 1, 2)),  # version 1 in a v2 header
    v2(0x22, 0x11, v4_block(b"\x00" * 4, b"\x00" * 4, 1, 2)),  # command 2
    v2(0x21, 0x41, b""),  # unknown family
    v2(0x21, 0x11, b"\x00" * 11),  # address block too short
    v2(0x21, 0x21, b"\x00" * 35),
    v2(0x21, 0x11, v4_block(b"\x00" * 4, b"\x00" * 4, 1, 2) + b"\x05\x00"),  # truncated TLV
    v2(0x21, 0x11, v4_block(b"\x00" * 4, b"\x00" * 4, 1, 2) + b"\x05\x00\x09abc"),  # TLV too long
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, MAX_V2_PAYLOAD + 1),  # over the bound
]


def splits(data: bytes) -> Iterator[list[bytes]]:
    """``data`` whole, byte by byte, and split in two at every point."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def run(pieces: list[bytes]) -> tuple[ProxyHeader | None, bytes]:
    parser = ProxyParser()
    header = None
    for n, piece in enumerate(pieces):
        header = parser.feed(piece)
        if header is not None:
            # The bytes after the header (later pieces too) belong to the SMTP reader.
            return header, parser.rest + b"".join(pieces[n + 1 :])
    return None, b""


@pytest.mark.parametrize("data, expected", VALID, ids=range(len(VALID)))
def test_valid_headers_at_every_split(data: bytes, expected: ProxyHeader) -> None:
    after = b"EHLO client\r\n"
    for pieces in splits(data + after):
        header, rest = run(pieces)
        assert header == expected
        assert rest == after


@pytest.mark.parametrize("data", INVALID, ids=range(len(INVALID)))
def test_invalid_headers_fail_at_every_split(data: bytes) -> None:
    for pieces in splits(data):
        with pytest.raises(ProxyError):
            run(pieces)


def test_incomplete_header_waits_and_holds_no_more_than_the_bound() -> None:
    parser = ProxyParser()
    assert parser.feed(b"PROXY TCP4 1.2.3.4") is None
    assert parser.buffered == 18
    assert parser.feed(b"") is None
    parser = ProxyParser()
    assert parser.feed(V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\x00" * 11) is None
    # The v1 bound: 106 bytes without CRLF is still a candidate, 107 is not.
    parser = ProxyParser()
    assert parser.feed(b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 15)) is None
    with pytest.raises(ProxyError):
        parser.feed(b"x")


def test_wrong_first_byte_fails_at_once() -> None:
    # A client that is not a proxy is refused on its first byte, never buffered.
    for first in (b"E", b"\x16", b"p", b"\n"):
        with pytest.raises(ProxyError):
            ProxyParser().feed(first)


def test_feeding_after_the_header_is_an_error() -> None:
    parser = ProxyParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    assert parser.done
    with pytest.raises(ProxyError):
        parser.feed(b"x")


def test_v1_longest_header_is_accepted() -> None:
    # The spec's worst case: TCP6 with two full-length addresses and ports (107 bytes).
    addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {addr} {addr} 65535 65535\r\n".encode()
    assert len(line) <= MAX_V1_HEADER
    header, rest = run([line])
    assert header is not None and header.source == (addr, 65535, 0, 0)
