"""Sans-IO reader of HAProxy's PROXY protocol header, versions 1 (text) and 2 (binary).

Theory of operation
-------------------
A proxy in front of the server (HAProxy, nginx, a cloud load balancer) opens the TCP
connection itself, so the socket's peer is the proxy. With the PROXY protocol it first
sends one header naming the real client, then relays the client's bytes. The listener
(:mod:`fastsmtp.server.protocol`) feeds the first bytes of a connection from a trusted
proxy to :meth:`ProxyParser.feed` until it returns a :class:`ProxyHeader`; what followed
the header in the same read is in :attr:`ProxyParser.rest` and goes to the SMTP reader.

The header is bounded (:data:`MAX_V1_HEADER` for v1, :data:`MAX_V2_PAYLOAD` after the
16 fixed bytes of v2) and decided as early as possible: a byte that cannot start either
version fails at once, so a client that is not a proxy cannot make the server hold data.
Every malformed header raises :class:`ProxyError` (the connection is then closed: the
spec forbids guessing).

Version 1: ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n``.
Version 2: the 12-byte signature, a version/command byte (``0x20`` LOCAL, ``0x21`` PROXY),
a family/transport byte, a big-endian 16-bit length, the addresses, then TLVs.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

__all__ = [
    "MAX_V1_HEADER",
    "MAX_V2_PAYLOAD",
    "V2_SIGNATURE",
    "ProxyError",
    "ProxyHeader",
    "ProxyParser",
]

#: Longest v1 header, CRLF included (the spec's own bound: 107 bytes).
MAX_V1_HEADER = 107
#: The v2 signature: the first 12 bytes of every v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Largest v2 payload (addresses + TLVs) accepted after the 16 fixed bytes. UNIX addresses
#: take 216 bytes; the rest leaves room for the TLVs proxies add (ALPN, SSL, unique ID).
MAX_V2_PAYLOAD = 2048

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
# family/transport byte -> (family name, address block size)
_V2_FAMILIES = {
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX_DGRAM", 216),
}


class ProxyError(ValueError):
    """A PROXY protocol header is malformed, too long, or of an unknown version."""


class ProxyHeader:
    """What a PROXY header said.

    Attributes:
        version: 1 or 2.
        command: ``"PROXY"`` (a relayed connection) or ``"LOCAL"`` (v2: the proxy's own
            connection, e.g. a health check; v1 ``UNKNOWN`` is reported as LOCAL too).
        family: ``"TCP4"``, ``"TCP6"``, ``"UDP4"``, ``"UDP6"``, ``"UNIX"``, ``"UNIX_DGRAM"``,
            ``"UNSPEC"`` or ``"UNKNOWN"`` (v1).
        source: The real client, as ``(host, port)`` (IPv4) or ``(host, port, 0, 0)``
            (IPv6, the shape of ``transport.get_extra_info("peername")``), a path (UNIX),
            or None when the header gave no address (LOCAL, UNKNOWN, UNSPEC).
        destination: The address the client connected to, in the same shape, or None.
        tlvs: The v2 type-length-value extensions as ``(type, value)`` pairs, in order.
    """

    __slots__ = ("version", "command", "family", "source", "destination", "tlvs")

    def __init__(
        self,
        version: int,
        command: str,
        family: str,
        source: Any = None,
        destination: Any = None,
        tlvs: list[tuple[int, bytes]] | None = None,
    ) -> None:
        self.version = version
        self.command = command
        self.family = family
        self.source = source
        self.destination = destination
        self.tlvs = tlvs if tlvs is not None else []

    def __repr__(self) -> str:
        return (
            f"ProxyHeader(v{self.version} {self.command} {self.family} "
            f"source={self.source!r} destination={self.destination!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyHeader):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _address(family: str, host: str, port: int) -> tuple[Any, ...]:
    return (host, port) if family.endswith("4") else (host, port, 0, 0)


def _v1_port(text: bytes) -> int:
    # Decimal, 0..65535; no sign, no leading zero (one canonical spelling).
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyError(f"PROXY v1: bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"PROXY v1: port {port} out of range")
    return port


def _parse_v1(line: bytes) -> ProxyHeader:
    """Parse one v1 line (without its CRLF)."""
    parts = line.split(b" ")
    if len(parts) < 2 or parts[0] != b"PROXY":
        raise ProxyError("PROXY v1: missing protocol")
    proto = parts[1]
    if proto == b"UNKNOWN":
        # The proxy could not tell; the receiver uses the real connection's addresses.
        return ProxyHeader(1, "LOCAL", "UNKNOWN")
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyError(f"PROXY v1: unknown protocol {proto[:8]!r}")
    if len(parts) != 6:
        raise ProxyError("PROXY v1: expected 'PROXY TCP4|TCP6 src dst sport dport'")
    family = proto.decode("ascii")
    cls: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = (
        ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    )
    try:
        src = cls(parts[2].decode("ascii"))
        dst = cls(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyError(f"PROXY v1: bad {family} address") from None
    return ProxyHeader(
        1,
        "PROXY",
        family,
        _address(family, str(src), _v1_port(parts[4])),
        _address(family, str(dst), _v1_port(parts[5])),
    )


def _parse_v2(ver_cmd: int, fam: int, payload: bytes) -> ProxyHeader:
    """Parse the v2 header from its version/command byte, family byte and payload."""
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2: unknown version {ver_cmd >> 4}")
    cmd = ver_cmd & 0x0F
    if cmd > 1:
        raise ProxyError(f"PROXY v2: unknown command {cmd}")
    known = _V2_FAMILIES.get(fam)
    if known is None:
        raise ProxyError(f"PROXY v2: unknown address family 0x{fam:02x}")
    family, size = known
    if len(payload) < size:
        raise ProxyError(f"PROXY v2: {family} needs {size} address bytes, got {len(payload)}")
    tlvs = _tlvs(payload, size)
    if cmd == 0:
        # LOCAL: the proxy's own connection; the addresses (if any) must be ignored.
        return ProxyHeader(2, "LOCAL", family, tlvs=tlvs)
    source: Any = None
    destination: Any = None
    if family in ("TCP4", "UDP4"):
        s, d, sp, dp = struct.unpack_from("!4s4sHH", payload)
        source = (str(ipaddress.IPv4Address(s)), sp)
        destination = (str(ipaddress.IPv4Address(d)), dp)
    elif family in ("TCP6", "UDP6"):
        s, d, sp, dp = struct.unpack_from("!16s16sHH", payload)
        source = (str(ipaddress.IPv6Address(s)), sp, 0, 0)
        destination = (str(ipaddress.IPv6Address(d)), dp, 0, 0)
    elif size:  # UNIX: two NUL-padded paths
        source = payload[:108].split(b"\x00", 1)[0].decode("utf-8", "replace")
        destination = payload[108:216].split(b"\x00", 1)[0].decode("utf-8", "replace")
    return ProxyHeader(2, "PROXY", family, source, destination, tlvs)


def _tlvs(payload: bytes, start: int) -> list[tuple[int, bytes]]:
    out = []
    pos, end = start, len(payload)
    while pos < end:
        if end - pos < 3:
            raise ProxyError("PROXY v2: truncated TLV")
        kind, length = struct.unpack_from("!BH", payload, pos)
        pos += 3
        if end - pos < length:
            raise ProxyError("PROXY v2: TLV longer than the header")
        out.append((kind, payload[pos : pos + length]))
        pos += length
    return out


class ProxyParser:
    """Reads one PROXY header (v1 or v2) from the first bytes of a connection.

    Call :meth:`feed` with each read until it returns a :class:`ProxyHeader`; then
    :attr:`rest` holds the bytes that followed the header (the client's first SMTP
    bytes). Feeding after that is an error.

    Attributes:
        rest: Bytes after the header, once it is complete.
        done: The header is complete.
    """

    __slots__ = ("_buf", "rest", "done")

    def __init__(self) -> None:
        self._buf = b""
        self.rest = b""
        self.done = False

    @property
    def buffered(self) -> int:
        """Bytes held while the header is incomplete."""
        return len(self._buf)

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add bytes; return the header once complete, else None.

        Raises:
            ProxyError: The bytes cannot be a PROXY header (wrong start, too long,
                malformed), or the header was complete already.
        """
        if self.done:
            raise ProxyError("the PROXY header is already complete")
        buf = self._buf = self._buf + data
        if buf[:1] == b"P":
            return self._v1(buf)
        if buf[:1] == b"\r":
            return self._v2(buf)
        if buf:
            raise ProxyError("not a PROXY protocol header (it must come first, from the proxy)")
        return None

    def _v1(self, buf: bytes) -> ProxyHeader | None:
        head = buf[: len(_V1_PREFIX)]
        if not _V1_PREFIX.startswith(head):
            raise ProxyError("not a PROXY protocol header (bad v1 prefix)")
        end = buf.find(b"\r\n", 0, MAX_V1_HEADER)
        if end < 0:
            # A bare LF, or no CRLF within the bound: never a header.
            if b"\n" in buf[:MAX_V1_HEADER] or len(buf) >= MAX_V1_HEADER:
                raise ProxyError(f"PROXY v1: no CRLF within {MAX_V1_HEADER} bytes")
            return None
        header = _parse_v1(buf[:end])
        return self._finish(header, buf[end + 2 :])

    def _v2(self, buf: bytes) -> ProxyHeader | None:
        sig = buf[:12]
        if not V2_SIGNATURE.startswith(sig):
            raise ProxyError("not a PROXY protocol header (bad v2 signature)")
        if len(buf) < _V2_FIXED:
            return None
        ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
        if ver_cmd >> 4 != 2:
            raise ProxyError(f"PROXY v2: unknown version {ver_cmd >> 4}")
        if length > MAX_V2_PAYLOAD:
            raise ProxyError(f"PROXY v2: payload of {length} bytes exceeds {MAX_V2_PAYLOAD}")
        total = _V2_FIXED + length
        if len(buf) < total:
            return None
        header = _parse_v2(ver_cmd, fam, buf[_V2_FIXED:total])
        return self._finish(header, buf[total:])

    def _finish(self, header: ProxyHeader, rest: bytes) -> ProxyHeader:
        self.done = True
        self._buf = b""
        self.rest = rest
        return header
