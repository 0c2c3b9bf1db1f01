"""Pure-Python twin of the compiled ``fastsmtp._core``.

The contract (and its theory of operation) is documented in ``_core.pyi``; this module and
``_core.pyx`` implement it line for line and run the same test vectors. Where the twin
can lean on a C-speed builtin (``bytes.find``, ``bytes.replace``) it does, so it is also a
fair "best plain Python" reference for the benchmarks.
"""

from __future__ import annotations

from .errors import SMTPProtocolError

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_SIZE",
    "MAX_COMMAND_LINE",
    "MAX_COMMAND_DISCARD",
    "MAX_DATA_LINE",
    "LINE_OK",
    "LINE_BARE_EOL",
    "LINE_TOO_LONG",
    "LINE_RUNAWAY",
    "DATA_END",
    "DATA_BARE_EOL",
    "DATA_LONG_LINE",
    "DATA_TOO_BIG",
    "ReplyParser",
    "DataEncoder",
    "ServerReader",
    "data_size",
]

MAX_REPLY_LINE = 8192
MAX_REPLY_SIZE = 65536
MAX_COMMAND_LINE = 512
MAX_COMMAND_DISCARD = 65536
MAX_DATA_LINE = 1000

LINE_OK = 0
LINE_BARE_EOL = 1
LINE_TOO_LONG = 2
LINE_RUNAWAY = 3

DATA_END = 1
DATA_BARE_EOL = 2
DATA_LONG_LINE = 4
DATA_TOO_BIG = 8

_CR = 13
_LF = 10
_DOT = 46
_SPACE = 32
_HYPHEN = 45


class ReplyParser:
    """Incremental parser of server replies; see ``_core.pyi``."""

    __slots__ = ("_max_line", "_max_reply", "_buf", "_code", "_lines", "_size", "_error")

    def __init__(self, max_line: int = MAX_REPLY_LINE, max_reply: int = MAX_REPLY_SIZE) -> None:
        self._max_line = max_line
        self._max_reply = max_reply
        self._buf = b""  # the incomplete last line
        self._code = 0  # code of the multi-line reply in progress, 0 when none
        self._lines: list[bytes] = []
        self._size = 0  # bytes of the complete lines of the reply in progress
        self._error: str | None = None

    def _fail(self, why: str) -> SMTPProtocolError:
        self._error = why
        return SMTPProtocolError(why)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, list[bytes]]]:
        if self._error is not None:
            raise SMTPProtocolError(self._error)
        buf = self._buf + data if self._buf else bytes(data)
        replies: list[tuple[int, list[bytes]]] = []
        pos = 0
        while True:
            lf = buf.find(b"\n", pos)
            if lf < 0:
                break
            line_len = lf + 1 - pos
            if line_len > self._max_line:
                raise self._fail(f"reply line longer than {self._max_line} bytes")
            self._size += line_len
            if self._size > self._max_reply:
                raise self._fail(f"reply larger than {self._max_reply} bytes")
            end = lf - 1 if lf > pos and buf[lf - 1] == _CR else lf
            if end - pos < 3:
                raise self._fail(f"malformed reply line {buf[pos:end]!r}")
            c0, c1, c2 = buf[pos], buf[pos + 1], buf[pos + 2]
            if not (50 <= c0 <= 53 and 48 <= c1 <= 57 and 48 <= c2 <= 57):
                raise self._fail(f"malformed reply code in {buf[pos:end]!r}")
            sep = buf[pos + 3] if end - pos > 3 else _SPACE
            if sep != _SPACE and sep != _HYPHEN:
                raise self._fail(f"malformed reply line {buf[pos:end]!r}")
            code = (c0 - 48) * 100 + (c1 - 48) * 10 + (c2 - 48)
            if self._code and code != self._code:
                raise self._fail(f"reply code changed from {self._code} to {code} mid-reply")
            self._lines.append(buf[pos + 4 : end])
            if sep == _HYPHEN:
                self._code = code
            else:
                replies.append((code, self._lines))
                self._code = 0
                self._lines = []
                self._size = 0
            pos = lf + 1
        if len(buf) - pos >= self._max_line:
            raise self._fail(f"reply line longer than {self._max_line} bytes")
        self._buf = buf[pos:]
        return replies

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._size

    def clear(self) -> int:
        dropped = self.buffered
        self._buf = b""
        self._code = 0
        self._lines = []
        self._size = 0
        return dropped


def data_size(data: bytes | bytearray | memoryview) -> int:
    """RFC 1870 size of in-memory data; see ``_core.pyi``."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    size = len(data)
    if not size:
        return 0
    crlf = data.count(b"\r\n")
    # Each bare LF and each bare CR becomes a CRLF: one more octet each.
    size += data.count(b"\n") - crlf + data.count(b"\r") - crlf
    if data[-1] not in (_LF, _CR):
        size += 2  # the encoder ends the last line before the final dot
    return size


class DataEncoder:
    """Streaming CRLF normalizer and dot-stuffer; see ``_core.pyi``."""

    __slots__ = ("_pending_cr", "_line_start", "_bytes_out", "_longest", "_cur", "_ended",
                 "_stuff")

    def __init__(self, stuff: bool = True) -> None:
        self._stuff = bool(stuff)  # False: BDAT (RFC 3030), normalization only
        self._reset()

    def _reset(self) -> None:
        self._ended = False  # end() was called; the counters still describe that message
        self._pending_cr = False  # the last chunk ended with a CR that was passed through
        self._line_start = True  # the next byte starts a line
        self._bytes_out = 0
        self._longest = 0
        self._cur = 0  # length of the line in progress

    def encode(self, chunk: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        data = chunk if type(chunk) is bytes else bytes(chunk)
        if self._ended:
            self._reset()
        if not data:
            return chunk
        # The CR passed through at the end of the previous chunk is put back in front,
        # so that CR+LF split across chunks is seen as one line ending; its output byte
        # (always "\r") was already emitted and is cut off again below.
        lead = self._pending_cr
        s = b"\r" + data if lead else data
        self._pending_cr = s[-1] == _CR
        if self._pending_cr:
            s = s[:-1]
        if b"\r" in s:
            s = s.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        s = s.replace(b"\n", b"\r\n")
        if self._stuff:
            s = s.replace(b"\r\n.", b"\r\n..")
            if self._line_start and s[:1] == b".":
                s = b"." + s
        self._track_lines(s)
        if self._pending_cr:
            s += b"\r"
            self._line_start = False
        elif s:
            self._line_start = s[-1] == _LF
        out = s[1:] if lead else s
        self._bytes_out += len(out)
        # Every rewrite only adds bytes, so equal length means nothing changed.
        if len(out) == len(data):
            return chunk
        return out

    def _track_lines(self, s: bytes) -> None:
        lines = s.split(b"\r\n")
        if len(lines) == 1:
            self._cur += len(s)
            return
        longest = max(self._cur + len(lines[0]), max(map(len, lines[1:-1]), default=0))
        if longest > self._longest:
            self._longest = longest
        self._cur = len(lines[-1])

    def end(self) -> bytes:
        longest = self.longest_line
        bytes_out = self._bytes_out
        if self._pending_cr:
            tail = b"\n.\r\n" if self._stuff else b"\n"
        elif self._line_start:
            tail = b".\r\n" if self._stuff else b""
        else:
            tail = b"\r\n.\r\n" if self._stuff else b"\r\n"
        self._reset()
        self._ended = True
        self._bytes_out = bytes_out + len(tail)
        self._longest = longest
        return tail

    @property
    def bytes_out(self) -> int:
        return self._bytes_out

    @property
    def longest_line(self) -> int:
        return max(self._longest, self._cur)


# ServerReader data-mode states: where the last consumed byte left us.
_ST_LINE_START = 0  # after a line ending (or right after DATA)
_ST_MID = 1  # inside a line
_ST_CR = 2  # inside a line, just after a CR
_ST_DOT = 3  # a "." at the start of a line
_ST_DOT_CR = 4  # "." then CR at the start of a line: an LF now ends the data
# The same three after a *bare* line ending: "\n.\r\n" or "\r.\r\n" must not end the
# data (SMTP smuggling), only CRLF "." CRLF does; such a "." line becomes an empty line.
_ST_BARE_START = 5
_ST_BARE_DOT = 6
_ST_BARE_DOT_CR = 7


class ServerReader:
    """Incremental reader of client bytes: command lines and DATA; see ``_core.pyi``."""

    __slots__ = (
        "_max_line",
        "_max_discard",
        "_buf",
        "_discarded",
        "_in_data",
        "_state",
        "_flags",
        "_size",
        "_max_size",
        "_line_len",
        "_chunk",
    )

    def __init__(
        self, max_line: int = MAX_COMMAND_LINE, max_discard: int = MAX_COMMAND_DISCARD
    ) -> None:
        self._max_line = max_line
        self._max_discard = max_discard
        self._buf = b""
        self._discarded = -1  # bytes of an over-long line dropped so far; -1 when none
        self._in_data = False
        self._state = _ST_LINE_START
        self._flags = 0
        self._size = 0
        self._max_size = 0
        self._line_len = 0
        self._chunk = -1  # octets of the BDAT chunk still to read; -1 outside chunk mode

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = self._buf + data if self._buf else bytes(data)

    @property
    def in_data(self) -> bool:
        return self._in_data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def clear(self) -> int:
        dropped = len(self._buf)
        self._buf = b""
        self._discarded = -1
        return dropped

    def next_line(self) -> tuple[int, bytes] | None:
        if self._in_data:
            return None
        buf = self._buf
        n = len(buf)
        if self._discarded >= 0:
            lf = buf.find(b"\n")
            if lf < 0:
                self._discarded += n
                self._buf = b""
                if self._discarded > self._max_discard:
                    self._discarded = -1
                    return (LINE_RUNAWAY, b"")
                return None
            self._discarded = -1
            self._buf = buf[lf + 1 :]
            return (LINE_TOO_LONG, b"")
        lf = buf.find(b"\n")
        cr = buf.find(b"\r", 0, lf if lf >= 0 else n)
        if cr >= 0:
            if cr + 1 == n:
                end = -1  # wait: the next byte decides between CRLF and a bare CR
            else:
                end = cr
                status = LINE_OK if buf[cr + 1] == _LF else LINE_BARE_EOL
                rest = cr + 2 if status == LINE_OK else cr + 1
        elif lf >= 0:
            end = lf
            status = LINE_BARE_EOL
            rest = lf + 1
        else:
            end = -1
        if end < 0:
            if n >= self._max_line:
                self._discarded = n
                self._buf = b""
                if n > self._max_discard:  # give up now, not on the next feed
                    self._discarded = -1
                    return (LINE_RUNAWAY, b"")
            return None
        if rest > self._max_line:
            self._buf = buf[rest:]
            return (LINE_TOO_LONG, b"")
        self._buf = buf[rest:]
        return (status, buf[:end])

    def start_data(self, max_size: int = 0) -> None:
        self._in_data = True
        self._chunk = -1
        self._state = _ST_LINE_START
        self._flags = 0
        self._size = 0
        self._max_size = max_size
        self._line_len = 0

    def start_chunk(self, size: int, max_size: int = 0, first: bool = True) -> None:
        if size < 0:
            raise ValueError(f"a chunk size must be >= 0, not {size}")
        if self._in_data:
            raise RuntimeError("start_chunk() while data is being read: finish it first")
        self._in_data = True
        self._chunk = size
        # The running total of the message: the declared size is known before the first
        # octet arrives, so a chunk that takes it past max_size is refused whole.
        self._size = size if first else self._size + size
        self._max_size = max_size
        self._flags = DATA_TOO_BIG if max_size and self._size > max_size else 0

    def _next_chunk(self) -> tuple[bytes, int] | None:
        buf = self._buf
        left = self._chunk
        take = min(len(buf), left)
        if not take and left:
            return None
        # No framing inside a chunk: its octets are the message's, byte for byte.
        chunk = buf[:take]  # the object itself when the chunk takes all of it
        self._buf = buf[take:]
        left -= take
        flags = self._flags
        if flags & DATA_TOO_BIG:
            chunk = b""
        if not left:
            flags |= DATA_END
            self._in_data = False
            left = -1
        self._chunk = left
        return (chunk, flags)

    def next_data(self) -> tuple[bytes, int] | None:
        if not self._in_data:
            return None
        if self._chunk >= 0:
            return self._next_chunk()
        if not self._buf:
            return None
        buf = self._buf
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        state = self._state
        flags = self._flags
        line_len = self._line_len
        ended = False
        while pos < n:
            if state == _ST_MID:
                lf = buf.find(b"\n", pos)
                cr = buf.find(b"\r", pos, lf if lf >= 0 else n)
                stop = cr if cr >= 0 else (lf if lf >= 0 else n)
                if stop > pos:
                    out.append(buf[pos:stop])
                    line_len += stop - pos
                if stop == n:
                    pos = n
                elif stop == cr:
                    state = _ST_CR
                    pos = cr + 1
                else:  # bare LF
                    out.append(b"\r\n")
                    flags |= DATA_BARE_EOL
                    state = _ST_BARE_START
                    pos = lf + 1
                    if line_len > MAX_DATA_LINE - 2:
                        flags |= DATA_LONG_LINE
                    line_len = 0
                continue
            c = buf[pos]
            if state == _ST_LINE_START or state == _ST_BARE_START:
                if c == _DOT:
                    state = _ST_DOT if state == _ST_LINE_START else _ST_BARE_DOT
                    pos += 1
                else:
                    state = _ST_MID
            elif state == _ST_CR:
                out.append(b"\r\n")
                if line_len > MAX_DATA_LINE - 2:
                    flags |= DATA_LONG_LINE
                line_len = 0
                if c == _LF:
                    state = _ST_LINE_START
                    pos += 1
                else:
                    state = _ST_BARE_START
                    flags |= DATA_BARE_EOL
            elif state == _ST_DOT or state == _ST_BARE_DOT:
                if c == _CR:
                    state = _ST_DOT_CR if state == _ST_DOT else _ST_BARE_DOT_CR
                    pos += 1
                elif c == _LF:
                    out.append(b"\r\n")
                    flags |= DATA_BARE_EOL
                    state = _ST_BARE_START
                    pos += 1
                else:
                    state = _ST_MID  # a stuffed dot: dropped, the line goes on
            else:  # _ST_DOT_CR or _ST_BARE_DOT_CR
                if c == _LF:
                    pos += 1
                    if state == _ST_DOT_CR:
                        ended = True
                        break
                    # "." CRLF after a bare line ending: not the terminator.
                    out.append(b"\r\n")
                    state = _ST_LINE_START
                    continue
                out.append(b"\r\n")
                flags |= DATA_BARE_EOL
                state = _ST_BARE_START
        if line_len > MAX_DATA_LINE - 2:
            flags |= DATA_LONG_LINE  # reported before the line ends: memory stays bounded
        self._buf = buf[pos:]
        chunk = out[0] if len(out) == 1 else b"".join(out)
        if self._max_size:
            self._size += len(chunk)
            if self._size > self._max_size:
                flags |= DATA_TOO_BIG
        if flags & DATA_TOO_BIG:
            chunk = b""
        if ended:
            flags |= DATA_END
            self._in_data = False
            state = _ST_LINE_START
            line_len = 0
        self._state = state
        self._flags = flags
        self._line_len = line_len
        return (chunk, flags)
