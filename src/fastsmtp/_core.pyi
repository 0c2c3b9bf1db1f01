"""The contract of fastsmtp's sans-IO byte codec (``_core``).

Two implementations honour this file: the compiled ``fastsmtp._core`` (Cython) and the
pure-Python twin ``fastsmtp._core_py``. ``fastsmtp._codec`` picks one. Both take bytes-like
objects in and give builtins out (bytes, int, tuple, list), so their outputs compare with
``==`` and the same test vectors run on both.

Theory of operation
-------------------
The codec knows only byte framing; it never sees a socket, a loop or a future.

* ``ReplyParser`` (client) turns bytes from the server into complete replies.
* ``data_size`` (client) tells the ``SIZE`` to declare for in-memory data before it is
  encoded.
* ``DataEncoder`` (client) turns a message, fed in chunks of any size, into the DATA
  payload: every line ending becomes CRLF, every line starting with "." gets a second ".",
  and ``end()`` adds the terminator. No bare CR or LF ever leaves it.
* ``ServerReader`` (server) turns bytes from a client into command lines and, after
  ``start_data()``, into unstuffed body chunks. Only CRLF "." CRLF ends the data. After
  ``start_chunk(size)`` (a BDAT command, RFC 3030) the next ``size`` octets are message
  data as they are: no dot-unstuffing, no line endings rewritten, no terminator.

Limits are named constants; every buffer is bounded by them.
"""

import sys

# collections.abc.Buffer is new in 3.12; type checkers know typing_extensions on older
# versions (this stub is never imported at run time, so it adds no dependency).
if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

#: Longest reply line the parser holds, line ending included (RFC 5321 allows 512).
MAX_REPLY_LINE: int  # 8192
#: Largest multi-line reply the parser holds.
MAX_REPLY_SIZE: int  # 65536
#: Longest command line the server accepts, CRLF included (RFC 5321 section 4.5.3.1.4).
MAX_COMMAND_LINE: int  # 512
#: Bytes of an over-long command line the server discards before it gives up (421).
MAX_COMMAND_DISCARD: int  # 65536
#: Longest text line in DATA, CRLF included (RFC 5321 section 4.5.3.1.6).
MAX_DATA_LINE: int  # 1000

# ServerReader.next_line() statuses.
LINE_OK: int  # 0: a line ended by CRLF
LINE_BARE_EOL: int  # 1: a line ended by a bare LF or a bare CR
LINE_TOO_LONG: int  # 2: a line longer than max_line; its bytes were discarded (b"")
LINE_RUNAWAY: int  # 3: more than max_discard bytes without a line ending; give up

# ServerReader.next_data() flags, OR-ed together.
DATA_END: int  # 1: the terminator (in chunk mode: the chunk's last octet) was consumed
DATA_BARE_EOL: int  # 2: a bare CR or LF was seen (it was turned into CRLF)
DATA_LONG_LINE: int  # 4: a line longer than MAX_DATA_LINE was seen
DATA_TOO_BIG: int  # 8: more than max_size body bytes (in chunk mode: this chunk would
#                    take the message past max_size); further content is dropped

def data_size(data: Buffer) -> int:
    """The RFC 1870 ``SIZE`` of in-memory message data, as a server counts it.

    That is the octets after every line ending became CRLF (a bare LF or a bare CR grows
    by one) and a final CRLF was added when the data does not end a line (two more),
    before dot-stuffing: what ``DataEncoder`` sends, less the doubled dots and the
    terminating dot line. ``0`` for empty data. No copy is made.
    """

class ReplyParser:
    """Incremental parser of server replies (client side).

    ``feed`` takes bytes as they arrive and returns every reply completed by them as
    ``(code, lines)``: ``code`` is the int reply code, ``lines`` the text of each line
    (bytes, without code, separator or line ending). A line ends with CRLF; a bare LF is
    accepted as a line end too (the CR, if any, is stripped).

    A line must be exactly three digits, first digit 2 to 5, then ``-`` (more lines follow),
    a space, or the end of the line (last line). Every line of a reply has the same code.
    Anything else raises :class:`fastsmtp.errors.SMTPProtocolError`, as does a line longer
    than ``max_line`` or a reply larger than ``max_reply`` that has not ended; after an
    error the parser stays broken (every later ``feed`` raises again).
    """

    def __init__(self, max_line: int = ..., max_reply: int = ...) -> None: ...
    def feed(self, data: Buffer) -> list[tuple[int, list[bytes]]]:
        """Consume ``data``; return the replies it completed, oldest first."""
    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete reply (0 between replies)."""
    def clear(self) -> int:
        """Drop every buffered byte (after STARTTLS); return how many were dropped."""

class DataEncoder:
    """Streaming DATA encoder (client side): CRLF normalization and dot-stuffing.

    ``encode`` may be called with chunks of any size and split anywhere; the state (a CR
    at the end of a chunk, being at the start of a line) is carried across calls. Bare LF
    and bare CR become CRLF; a CR at the end of a chunk is passed through and its LF is
    supplied by the next call unless that call starts with one. A "." at the start of a
    line (the start of the message counts) is doubled.

    When a chunk needs no change, ``encode`` returns the very object it was given.

    ``stuff=False`` is the BDAT form (RFC 3030): the same CRLF normalization, no dot is
    doubled, and ``end()`` only ends the last line (``b""``, ``b"\\r\\n"`` or ``b"\\n"``),
    so ``bytes_out`` is the chunk data's exact size (``data_size`` for in-memory data).
    """

    def __init__(self, stuff: bool = True) -> None: ...
    def encode(self, chunk: Buffer) -> Buffer:
        """Return the wire form of ``chunk`` (``chunk`` itself when unchanged)."""
    def end(self) -> bytes:
        """Return the end of data: ``b".\\r\\n"`` after a line ending, else ``b"\\r\\n.\\r\\n"``.

        If the last chunk ended with a CR (passed through), the LF that completes it comes
        first: ``b"\\n.\\r\\n"``. Without stuffing: the same less the ``"."`` line
        (``b""`` after a line ending, ``b"\\r\\n"``, ``b"\\n"``).

        The encoder may then encode another message; ``bytes_out`` and ``longest_line``
        keep describing the ended message until the next ``encode``.
        """
    @property
    def bytes_out(self) -> int:
        """Bytes emitted for the current message (or the one just ended), terminator included."""
    @property
    def longest_line(self) -> int:
        """Longest emitted line of the current (or just ended) message, without its CRLF."""

class ServerReader:
    """Incremental reader of a client's bytes (server side).

    Command mode: ``next_line`` returns ``(status, line)`` for the next complete line,
    without its line ending, or None when more bytes are needed. A line ends at CRLF; a
    bare LF, or a CR followed by anything but LF, also ends it with status
    ``LINE_BARE_EOL`` (the server's policy decides). A line longer than ``max_line``
    (line ending included) is discarded as it streams and reported once it ends as
    ``(LINE_TOO_LONG, b"")``; if ``max_discard`` bytes pass without an ending, it is
    reported as ``(LINE_RUNAWAY, b"")`` and the reader should be dropped.

    Data mode (after ``start_data``): ``next_data`` returns ``(chunk, flags)`` with the
    unstuffed body bytes available so far (every line ending as CRLF, a leading "." of a
    line removed), or None when nothing new can be returned yet. ``DATA_END`` in flags
    means the terminator was consumed; the chunk before it includes the message's final
    CRLF; the reader is back in command mode and bytes after the terminator stay buffered
    (pipelining). Only CRLF "." CRLF ends the data (the DATA command's CRLF counts for a
    message that is empty). Past ``max_size`` body bytes, ``DATA_TOO_BIG`` is set and
    chunks are empty while the rest is drained to the terminator.
    A line that starts with "." loses that dot whatever ends it; a "." line ended by a
    bare CR or LF is not the terminator (it becomes an empty line, with ``DATA_BARE_EOL``),
    nor is a "." CRLF line that follows a bare CR or LF (SMTP smuggling: ``\\n.\\r\\n``).
    An over-long command line that is still streaming is discarded up to the next LF.

    Chunk mode (after ``start_chunk(size, max_size, first)``, for ``BDAT size``):
    ``next_data`` returns the chunk's octets exactly as received, as they arrive (a chunk
    may come in several feeds, and a feed may hold a chunk and the commands after it).
    Nothing is interpreted: a "." line, a bare CR or LF, a long line are all data, and no
    ``DATA_BARE_EOL``/``DATA_LONG_LINE`` is ever set. The piece holding the chunk's last
    octet is flagged ``DATA_END``; the reader is then back in command mode and the bytes
    after the chunk stay buffered. ``start_chunk(0)`` makes the next ``next_data`` return
    ``(b"", DATA_END)`` at once. The reader keeps the running total of a message's
    chunks (``first=True`` starts a new message); a chunk that takes it past
    ``max_size`` is flagged ``DATA_TOO_BIG`` from its first piece on and is consumed
    without being returned (every piece is ``b""``), so memory stays bounded.
    """

    def __init__(self, max_line: int = ..., max_discard: int = ...) -> None: ...
    def feed(self, data: Buffer) -> None:
        """Append received bytes."""
    def next_line(self) -> tuple[int, bytes] | None:
        """Return the next command line with its status, or None if incomplete."""
    def start_data(self, max_size: int = 0) -> None:
        """Switch to data mode (after the server answered 354 to DATA).

        ``max_size`` bounds the body bytes kept; 0 means no limit.
        """
    def start_chunk(self, size: int, max_size: int = 0, first: bool = True) -> None:
        """Switch to chunk mode: the next ``size`` octets are one BDAT chunk (RFC 3030).

        ``max_size`` bounds the total of the message's chunks (0: no limit); ``first``
        starts a new message, else ``size`` adds to the chunks before it. Raises
        ValueError for a negative ``size`` and RuntimeError while already reading data.
        """
    def next_data(self) -> tuple[bytes, int] | None:
        """Return the next body chunk with its flags, or None if no byte was consumed.

        (In chunk mode, a zero-size chunk, or the rest of one, ends without consuming.)

        Flags accumulate over one message: a flag once set stays set in every later
        chunk of it, so the server may look at the ``DATA_END`` chunk alone.
        """
    @property
    def in_data(self) -> bool:
        """True between ``start_data``/``start_chunk`` and the piece flagged ``DATA_END``."""
    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned."""
    def clear(self) -> int:
        """Drop every buffered byte (after STARTTLS); return how many were dropped."""
