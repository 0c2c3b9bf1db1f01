# cython: language_level=3
# Table of contents of the compiled core (asyncpg style): every C-level constant, field
# and method of fastsmtp._core. The contract is documented in _core.pyi; the pure-Python
# twin is _core_py.py.

from cpython.object cimport PyObject

# Limits and flags (mirrored as Python ints in _core.pyx; the twin holds the same values).
cdef enum:
    C_MAX_REPLY_LINE = 8192
    C_MAX_REPLY_SIZE = 65536
    C_MAX_COMMAND_LINE = 512
    C_MAX_COMMAND_DISCARD = 65536
    C_MAX_DATA_LINE = 1000

    C_LINE_OK = 0
    C_LINE_BARE_EOL = 1
    C_LINE_TOO_LONG = 2
    C_LINE_RUNAWAY = 3

    C_DATA_END = 1
    C_DATA_BARE_EOL = 2
    C_DATA_LONG_LINE = 4
    C_DATA_TOO_BIG = 8

# ServerReader data-mode states: where the last consumed byte left the reader.
cdef enum:
    ST_LINE_START = 0     # after CRLF (or right after DATA): "." CRLF here ends the data
    ST_MID = 1            # inside a line
    ST_CR = 2             # inside a line, just after a CR (held back if it ended a chunk)
    ST_DOT = 3            # a "." (dropped) at the start of a line
    ST_DOT_CR = 4         # "." CR at the start of a line: an LF now ends the data
    ST_BARE_START = 5     # after a bare CR or LF: "." CRLF here is NOT the terminator
    ST_BARE_DOT = 6
    ST_BARE_DOT_CR = 7

# A lazily opened output buffer. While nothing was rewritten, the output is the input
# slice src[start:...] and nothing is allocated; the first insertion or deletion
# allocates the worst case once, copies what was implied so far, and from then on
# src[copied:at] is memcpy'ed before each edit. Closing resizes the bytes in place.
cdef struct _Out:
    const char *src       # the input bytes
    Py_ssize_t start      # first input byte of the output (while obj is NULL)
    Py_ssize_t copied     # input bytes before this index are in the output already
    Py_ssize_t cap        # worst-case output size for this input
    PyObject *obj         # the output bytes object (owned), NULL until the first edit
    char *w               # write cursor inside obj


cdef class ReplyParser:
    cdef Py_ssize_t _max_line
    cdef Py_ssize_t _max_reply
    cdef char *_buf             # the incomplete last line only (PyMem), < max_line bytes
    cdef Py_ssize_t _buf_len
    cdef Py_ssize_t _buf_cap
    cdef int _code              # code of the multi-line reply in progress, 0 when none
    cdef list _lines            # text of its complete lines
    cdef Py_ssize_t _size       # bytes of its complete lines
    cdef object _error          # str once the parser failed; it stays broken

    cdef int _line(self, const char *s, Py_ssize_t n, list replies) except -1
    cdef int _keep(self, const char *s, Py_ssize_t n) except -1
    cdef int _fail(self, str why) except -1


cdef class DataEncoder:
    cdef bint _pending_cr       # the last chunk ended with a CR that was passed through
    cdef bint _line_start       # the next byte starts a line
    cdef bint _ended            # end() was called; counters describe that message
    cdef bint _stuff            # dot-stuff and end with "."; False: BDAT, CRLF only
    cdef Py_ssize_t _bytes_out
    cdef Py_ssize_t _longest
    cdef Py_ssize_t _cur        # length of the output line in progress

    cdef void _reset(self) noexcept


cdef class ServerReader:
    cdef Py_ssize_t _max_line
    cdef Py_ssize_t _max_discard
    cdef bytes _buf             # received bytes; _buf[_pos:] is not consumed yet
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _discarded  # bytes of an over-long line dropped so far; -1 when none
    cdef bint _in_data
    cdef int _state             # ST_* above
    cdef int _flags             # DATA_* flags of the message in progress
    cdef Py_ssize_t _size       # body bytes returned so far (for max_size)
    cdef Py_ssize_t _max_size
    cdef Py_ssize_t _line_len   # length of the body line in progress
    cdef Py_ssize_t _chunk      # octets of the BDAT chunk still to read; -1 outside chunk mode

    cdef int _consume(self, Py_ssize_t pos, bint compact) except -1
    cdef object _next_chunk(self)
