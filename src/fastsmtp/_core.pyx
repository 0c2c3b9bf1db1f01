# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled sans-IO byte codec of fastsmtp (the contract is in ``_core.pyi``).

Theory of operation
-------------------
Same state machines as the pure-Python twin ``_core_py.py``, line for line, so that both
give ``==`` results on every input; only the mechanics differ:

* Inputs are read through the buffer protocol (exact ``bytes`` without it), never copied
  just to be looked at.
* Scanning is one pass: ``memchr`` for LF where only LF matters (replies, over-long
  command lines), and ``fs_find_eol`` (below) where CR and LF both matter. libc has no
  two-byte ``memchr``, and two scans per line would halve the speed, so ``fs_find_eol``
  tests 16 bytes per step for either byte with SSE2 (baseline on x86-64; a word-at-a-time
  loop elsewhere).
* Output is built lazily (``_Out`` in ``_core.pxd``): while nothing needs rewriting the
  result is the input itself (or a slice of it); the first edit allocates the worst case
  once with ``PyBytes_FromStringAndSize(NULL, n)``, copies runs between edits with
  ``memcpy`` and shrinks the bytes in place with ``_PyBytes_Resize``. CRLF normalization
  and dot-stuffing (or unstuffing) are fused into that single pass.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_DECREF
from libc.string cimport memchr, memcpy

from .errors import SMTPProtocolError

cdef extern from "Python.h":
    # Raw-pointer spellings, so that an output buffer can be grown and shrunk in place.
    PyObject *_fs_new_bytes "PyBytes_FromStringAndSize" (const char *s, Py_ssize_t n) except NULL
    char *_fs_bytes_str "PyBytes_AS_STRING" (PyObject *b)
    int _PyBytes_Resize(PyObject **b, Py_ssize_t n) except -1

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FS_HAVE_SSE2 1
    #endif
    #if defined(_MSC_VER)
    #include <intrin.h>
    static __inline int fs_ctz(unsigned int x) { unsigned long i; _BitScanForward(&i, x); return (int)i; }
    static __inline int fs_ctzll(unsigned __int64 x) { unsigned long i; _BitScanForward64(&i, x); return (int)i; }
    #else
    #define fs_ctz(x) __builtin_ctz(x)
    #define fs_ctzll(x) __builtin_ctzll(x)
    #endif

    /* Index of the first CR (13) or LF (10) in s[0:n], or n when there is none. */
    static inline Py_ssize_t fs_find_eol(const char *s, Py_ssize_t n) {
        const unsigned char *p = (const unsigned char *)s;
        Py_ssize_t i = 0;
    #ifdef FS_HAVE_SSE2
        const __m128i cr = _mm_set1_epi8(13), lf = _mm_set1_epi8(10);
        for (; i + 32 <= n; i += 32) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 16));
            int ma = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(a, cr), _mm_cmpeq_epi8(a, lf)));
            int mb = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(b, cr), _mm_cmpeq_epi8(b, lf)));
            if (ma | mb) {
                unsigned int m = (unsigned int)ma | ((unsigned int)mb << 16);
                return i + fs_ctz(m);
            }
        }
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
            if (m) return i + fs_ctz((unsigned int)m);
        }
    #else
        /* Word at a time: a zero byte in w^0x0d.. or w^0x0a.. marks a CR or LF. */
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        for (; i + 8 <= n; i += 8) {
            uint64_t w, a, b;
            memcpy(&w, p + i, 8);
            a = w ^ (ones * 13);
            b = w ^ (ones * 10);
            if ((((a - ones) & ~a) | ((b - ones) & ~b)) & highs) break;
        }
    #endif
        for (; i < n; i++) {
            if (p[i] == 13 || p[i] == 10) return i;
        }
        return n;
    }

    /* Fast-forward over clean text: whole 64-byte blocks in which every CR is followed by
       LF, every LF follows a CR and no "." starts a line, i.e. text that passes through
       the encoder (and the reader's data mode) unchanged. Per block: three compares
       into 64-bit masks; the LF mask must be the CR mask shifted by one. Line lengths
       come from the LF bits, so no byte is looked at twice.

       In: *line_start (s[0] starts a line), *cur (length of the line in progress).
       Out: the index where exact scanning resumes (0 if the first block is not clean;
       never between a CR and its LF), and *line_start, *cur, *longest updated there. */
    static Py_ssize_t fs_skip_clean(const char *s, Py_ssize_t n, int *line_start,
                                    Py_ssize_t *cur, Py_ssize_t *longest) {
    #ifdef FS_HAVE_SSE2
        const unsigned char *p = (const unsigned char *)s;
        const __m128i cr = _mm_set1_epi8(13), lf = _mm_set1_epi8(10), dot = _mm_set1_epi8(46);
        Py_ssize_t i = 0, last = -1 - *cur, lg = *longest;  /* last: index of the last LF */
        uint64_t carry_cr = 0, carry_lf = *line_start ? 1 : 0;
        for (; i + 64 <= n; i += 64) {
            uint64_t mc = 0, ml = 0, md = 0, m;
            int k;
            for (k = 0; k < 4; k++) {
                __m128i v = _mm_loadu_si128((const __m128i *)(p + i + 16 * k));
                mc |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, cr)) << (16 * k);
                ml |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf)) << (16 * k);
                md |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dot)) << (16 * k);
            }
            if (ml != ((mc << 1) | carry_cr) || (md & ((ml << 1) | carry_lf))) break;
            for (m = ml; m; m &= m - 1) {
                Py_ssize_t pos = i + fs_ctzll(m);
                if (pos - last - 2 > lg) lg = pos - last - 2;
                last = pos;
            }
            carry_cr = mc >> 63;
            carry_lf = ml >> 63;
        }
        if (i == 0) return 0;
        if (carry_cr) i -= 1;  /* resume on the CR, so that its LF is seen with it */
        *line_start = (int)carry_lf;
        *cur = i - last - 1;
        *longest = lg;
        return i;
    #else
        (void)s; (void)n; (void)line_start; (void)cur; (void)longest;
        return 0;
    #endif
    }
    """
    Py_ssize_t fs_find_eol(const char *s, Py_ssize_t n) nogil
    Py_ssize_t fs_skip_clean(const char *s, Py_ssize_t n, int *line_start,
                             Py_ssize_t *cur, Py_ssize_t *longest) nogil


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

MAX_REPLY_LINE = C_MAX_REPLY_LINE
MAX_REPLY_SIZE = C_MAX_REPLY_SIZE
MAX_COMMAND_LINE = C_MAX_COMMAND_LINE
MAX_COMMAND_DISCARD = C_MAX_COMMAND_DISCARD
MAX_DATA_LINE = C_MAX_DATA_LINE

LINE_OK = C_LINE_OK
LINE_BARE_EOL = C_LINE_BARE_EOL
LINE_TOO_LONG = C_LINE_TOO_LONG
LINE_RUNAWAY = C_LINE_RUNAWAY

DATA_END = C_DATA_END
DATA_BARE_EOL = C_DATA_BARE_EOL
DATA_LONG_LINE = C_DATA_LONG_LINE
DATA_TOO_BIG = C_DATA_TOO_BIG

cdef enum:
    _CR = 13
    _LF = 10
    _DOT = 46
    _SPACE = 32
    _HYPHEN = 45

cdef bytes _EMPTY = b""
cdef bytes _TAIL_LINE_START = b".\r\n"
cdef bytes _TAIL_MID_LINE = b"\r\n.\r\n"
cdef bytes _TAIL_AFTER_CR = b"\n.\r\n"
# Without stuffing (BDAT) the data only needs its last line ended.
cdef bytes _CHUNK_MID_LINE = b"\r\n"
cdef bytes _CHUNK_AFTER_CR = b"\n"


# -- input ------------------------------------------------------------------------------

cdef object _acquire(object data, Py_buffer *view, bint *held):
    """Point ``view.buf``/``view.len`` at the bytes of ``data``; return their owner.

    Exact bytes need no buffer request (``held`` is set False). A non-contiguous view is
    copied to bytes, as the twin does with ``bytes(data)``. Release with ``_release``.
    """
    held[0] = False
    if not PyBytes_CheckExact(data):
        try:
            PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
            held[0] = True
            return data
        except BufferError:
            data = bytes(data)
    view.buf = PyBytes_AS_STRING(data)
    view.len = PyBytes_GET_SIZE(data)
    return data


cdef inline void _release(Py_buffer *view, bint held) noexcept:
    if held:
        PyBuffer_Release(view)


# -- lazily opened output (see _Out in _core.pxd) ------------------------------------------

cdef inline void _out_init(_Out *o, const char *src, Py_ssize_t n) noexcept:
    o.src = src
    o.start = 0
    o.copied = 0
    # Every edit adds at most one byte per input byte, plus two at the very start
    # (a CR held back or passed through by the previous chunk).
    o.cap = 2 * n + 2
    o.obj = NULL
    o.w = NULL


cdef int _out_open(_Out *o, Py_ssize_t at) except -1:
    o.obj = _fs_new_bytes(NULL, o.cap)
    o.w = _fs_bytes_str(o.obj)
    memcpy(o.w, o.src + o.start, at - o.start)
    o.w += at - o.start
    o.copied = at
    return 0


cdef inline int _out_flush(_Out *o, Py_ssize_t at) except -1:
    if o.obj == NULL:
        return _out_open(o, at)
    if at > o.copied:
        memcpy(o.w, o.src + o.copied, at - o.copied)
        o.w += at - o.copied
        o.copied = at
    return 0


cdef inline int _out_insert(_Out *o, Py_ssize_t at, const char *s, Py_ssize_t k) except -1:
    """Emit ``s[:k]`` before input byte ``at``."""
    _out_flush(o, at)
    memcpy(o.w, s, k)
    o.w += k
    return 0


cdef inline int _out_skip(_Out *o, Py_ssize_t at, Py_ssize_t k) except -1:
    """Leave input bytes ``[at, at + k)`` out of the output."""
    if o.obj == NULL and at == o.start:
        o.start = at + k  # still a plain slice of the input: nothing to allocate
        return 0
    _out_flush(o, at)
    o.copied = at + k
    return 0


cdef object _out_close(_Out *o, Py_ssize_t stop, Py_ssize_t n, object whole):
    """Return the output up to input byte ``stop``.

    ``whole`` (the input object, or None) is returned itself when the output is exactly
    the ``n`` input bytes, unchanged.
    """
    cdef PyObject *obj
    cdef Py_ssize_t size
    cdef object result
    if o.obj == NULL:
        if o.start == 0 and stop == n and whole is not None:
            return whole
        if stop <= o.start:
            return _EMPTY
        return PyBytes_FromStringAndSize(o.src + o.start, stop - o.start)
    if stop > o.copied:
        memcpy(o.w, o.src + o.copied, stop - o.copied)
        o.w += stop - o.copied
        o.copied = stop
    obj = o.obj
    o.obj = NULL
    size = o.w - _fs_bytes_str(obj)
    if size != o.cap:
        _PyBytes_Resize(&obj, size)  # frees obj and raises MemoryError on failure
    result = <object>obj  # takes a new reference ...
    Py_DECREF(result)  # ... so drop the one _fs_new_bytes gave us
    return result


cdef inline void _out_abandon(_Out *o) noexcept:
    """Free the output after an error (nothing is returned)."""
    cdef PyObject *obj = o.obj
    if obj != NULL:
        o.obj = NULL
        Py_DECREF(<object>obj)


# -- ReplyParser -----------------------------------------------------------------------

cdef class ReplyParser:
    """Incremental parser of server replies; see ``_core.pyi``."""

    def __init__(self, Py_ssize_t max_line=C_MAX_REPLY_LINE, Py_ssize_t max_reply=C_MAX_REPLY_SIZE):
        self._max_line = max_line
        self._max_reply = max_reply
        self._buf_len = 0
        self._code = 0
        self._lines = []
        self._size = 0
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)

    cdef int _fail(self, str why) except -1:
        self._error = why
        raise SMTPProtocolError(why)

    cdef int _keep(self, const char *s, Py_ssize_t n) except -1:
        """Append ``s[:n]`` to the incomplete line (callers keep it under max_line)."""
        cdef Py_ssize_t need = self._buf_len + n
        cdef Py_ssize_t cap
        cdef char *grown
        if need > self._buf_cap:
            cap = self._buf_cap * 2 if self._buf_cap else 256
            if cap < need:
                cap = need
            grown = <char *>PyMem_Realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._buf_cap = cap
        memcpy(self._buf + self._buf_len, s, n)
        self._buf_len = need
        return 0

    cdef int _line(self, const char *s, Py_ssize_t n, list replies) except -1:
        """Take one line ``s[:n]`` (its LF included); the checks run in the twin's order."""
        cdef Py_ssize_t end
        cdef int code
        cdef char sep
        if n > self._max_line:
            return self._fail(f"reply line longer than {self._max_line} bytes")
        self._size += n
        if self._size > self._max_reply:
            return self._fail(f"reply larger than {self._max_reply} bytes")
        end = n - 1
        if end > 0 and s[end - 1] == _CR:
            end -= 1
        if end < 3:
            return self._fail(f"malformed reply line {PyBytes_FromStringAndSize(s, end)!r}")
        if not (50 <= s[0] <= 53 and 48 <= s[1] <= 57 and 48 <= s[2] <= 57):
            return self._fail(f"malformed reply code in {PyBytes_FromStringAndSize(s, end)!r}")
        sep = s[3] if end > 3 else _SPACE
        if sep != _SPACE and sep != _HYPHEN:
            return self._fail(f"malformed reply line {PyBytes_FromStringAndSize(s, end)!r}")
        code = (s[0] - 48) * 100 + (s[1] - 48) * 10 + (s[2] - 48)
        if self._code and code != self._code:
            return self._fail(f"reply code changed from {self._code} to {code} mid-reply")
        self._lines.append(PyBytes_FromStringAndSize(s + 4, end - 4) if end > 4 else _EMPTY)
        if sep == _HYPHEN:
            self._code = code
        else:
            replies.append((code, self._lines))
            self._code = 0
            self._lines = []
            self._size = 0
        return 0

    def feed(self, data):
        """Consume ``data``; return the replies it completed, oldest first."""
        cdef Py_buffer view
        cdef bint held = False
        cdef const char *p
        cdef const char *lf
        cdef Py_ssize_t n, pos, k, joined
        cdef list replies = []
        if self._error is not None:
            raise SMTPProtocolError(self._error)
        owner = _acquire(data, &view, &held)  # keeps a copied view alive
        try:
            p = <const char *>view.buf
            n = view.len
            pos = 0
            if self._buf_len:
                # Only the first line is joined to what was held, never the whole feed.
                lf = <const char *>memchr(p, _LF, n)
                if lf == NULL:
                    if self._buf_len + n >= self._max_line:
                        self._fail(f"reply line longer than {self._max_line} bytes")
                    self._keep(p, n)
                    return replies
                k = lf - p + 1
                joined = self._buf_len + k
                if joined > self._max_line:
                    self._fail(f"reply line longer than {self._max_line} bytes")
                self._keep(p, k)
                self._buf_len = 0  # _line consumes the joined line (or poisons the parser)
                self._line(self._buf, joined, replies)
                pos = k
            while pos < n:
                lf = <const char *>memchr(p + pos, _LF, n - pos)
                if lf == NULL:
                    break
                k = lf - (p + pos) + 1
                self._line(p + pos, k, replies)
                pos += k
            if n - pos >= self._max_line:
                self._fail(f"reply line longer than {self._max_line} bytes")
            if n > pos:
                self._keep(p + pos, n - pos)
            return replies
        finally:
            _release(&view, held)

    @property
    def buffered(self):
        """Bytes held that do not yet form a complete reply (0 between replies)."""
        return self._buf_len + self._size

    def clear(self):
        """Drop every buffered byte (after STARTTLS); return how many were dropped."""
        dropped = self._buf_len + self._size
        self._buf_len = 0
        self._code = 0
        self._lines = []
        self._size = 0
        return dropped


# -- DataEncoder -----------------------------------------------------------------------

def data_size(data):
    """RFC 1870 size of in-memory data; see ``_core.pyi``."""
    cdef Py_buffer view
    cdef bint held = False
    cdef const char *p
    cdef Py_ssize_t n, i, j, size
    owner = _acquire(data, &view, &held)
    try:
        n = view.len
        p = <const char *>view.buf
        size = n
        i = 0
        # Jump from line ending to line ending (SSE2 scan): only bare ones add an octet.
        while i < n:
            j = i + fs_find_eol(p + i, n - i)
            if j == n:
                break
            if p[j] == _CR and j + 1 < n and p[j + 1] == _LF:
                i = j + 2
                continue
            size += 1  # a bare CR or bare LF becomes CRLF
            i = j + 1
        if n and p[n - 1] != _CR and p[n - 1] != _LF:
            size += 2  # the encoder ends the last line before the final dot
        return size
    finally:
        _release(&view, held)


cdef class DataEncoder:
    """Streaming CRLF normalizer and dot-stuffer; see ``_core.pyi``."""

    def __init__(self, stuff=True):
        self._stuff = bool(stuff)  # False: BDAT (RFC 3030), normalization only
        self._reset()

    cdef void _reset(self) noexcept:
        self._ended = False
        self._pending_cr = False
        self._line_start = True
        self._bytes_out = 0
        self._longest = 0
        self._cur = 0

    def encode(self, chunk):
        """Return the wire form of ``chunk`` (``chunk`` itself when unchanged)."""
        cdef Py_buffer view
        cdef bint held = False
        cdef _Out o
        cdef const char *p
        cdef Py_ssize_t n, i, j, k, cur, longest, next_try
        cdef Py_ssize_t backoff = 256
        cdef bint line_start
        cdef int ls
        cdef object result
        owner = _acquire(chunk, &view, &held)  # keeps a copied view alive
        try:
            if self._ended:
                self._reset()
            n = view.len
            if n == 0:
                return chunk
            p = <const char *>view.buf
            _out_init(&o, p, n)
            cur = self._cur
            longest = self._longest
            line_start = self._line_start
            i = 0
            next_try = 0
            if self._pending_cr:
                # The previous chunk ended with a CR (already emitted): an LF here completes
                # that CRLF; anything else makes it a bare CR, which gets its LF now.
                self._pending_cr = False
                if p[0] == _LF:
                    i = 1
                else:
                    _out_insert(&o, 0, "\n", 1)
                if cur > longest:
                    longest = cur
                cur = 0
                line_start = True
            while i < n:
                if i >= next_try:
                    # Skip clean blocks wholesale; if there are none here, look again
                    # later and later (text full of bare LFs must not pay twice).
                    ls = line_start
                    k = fs_skip_clean(p + i, n - i, &ls, &cur, &longest)
                    if k == 0:
                        next_try = i + backoff
                        backoff = backoff * 2 if backoff < 65536 else backoff
                    else:
                        backoff = 256
                        i += k
                        line_start = ls
                        if i >= n:
                            break
                if line_start:
                    line_start = False
                    if p[i] == _DOT and self._stuff:
                        _out_insert(&o, i, ".", 1)
                        cur += 1
                j = i + fs_find_eol(p + i, n - i)
                cur += j - i
                if j == n:
                    break
                if p[j] == _CR:
                    if j + 1 == n:
                        # Pass the CR through; the next chunk (or end()) decides.
                        self._pending_cr = True
                        break
                    if p[j + 1] == _LF:
                        i = j + 2
                    else:
                        _out_insert(&o, j + 1, "\n", 1)
                        i = j + 1
                else:
                    _out_insert(&o, j, "\r", 1)
                    i = j + 1
                if cur > longest:
                    longest = cur
                cur = 0
                line_start = True
            result = _out_close(&o, n, n, chunk)
        except BaseException:
            _out_abandon(&o)
            raise
        finally:
            _release(&view, held)
        self._cur = cur
        self._longest = longest
        self._line_start = line_start
        self._bytes_out += n if result is chunk else PyBytes_GET_SIZE(result)
        return result

    def end(self):
        """Return the end of data (``b".\\r\\n"``, ``b"\\r\\n.\\r\\n"`` or ``b"\\n.\\r\\n"``)."""
        cdef Py_ssize_t longest = self._longest if self._longest > self._cur else self._cur
        cdef Py_ssize_t bytes_out = self._bytes_out
        cdef bytes tail
        if self._pending_cr:
            tail = _TAIL_AFTER_CR if self._stuff else _CHUNK_AFTER_CR
        elif self._line_start:
            tail = _TAIL_LINE_START if self._stuff else _EMPTY
        else:
            tail = _TAIL_MID_LINE if self._stuff else _CHUNK_MID_LINE
        self._reset()
        self._ended = True
        self._bytes_out = bytes_out + PyBytes_GET_SIZE(tail)
        self._longest = longest
        return tail

    @property
    def bytes_out(self):
        """Bytes emitted for the current message (or the one just ended), terminator included."""
        return self._bytes_out

    @property
    def longest_line(self):
        """Longest emitted line of the current (or just ended) message, without its CRLF."""
        return self._longest if self._longest > self._cur else self._cur


# -- ServerReader ----------------------------------------------------------------------

cdef class ServerReader:
    """Incremental reader of client bytes: command lines and DATA; see ``_core.pyi``."""

    def __init__(self, Py_ssize_t max_line=C_MAX_COMMAND_LINE,
                 Py_ssize_t max_discard=C_MAX_COMMAND_DISCARD):
        self._max_line = max_line
        self._max_discard = max_discard
        self._buf = _EMPTY
        self._pos = 0
        self._discarded = -1
        self._in_data = False
        self._state = ST_LINE_START
        self._flags = 0
        self._size = 0
        self._max_size = 0
        self._line_len = 0
        self._chunk = -1

    cdef int _consume(self, Py_ssize_t pos, bint compact) except -1:
        """Mark ``_buf[:pos]`` consumed; with ``compact``, copy out what is left.

        Memory stays bounded by what the state machine needs: a fully consumed buffer
        is dropped, and bytes pipelined after DATA's terminator are copied out so the
        (possibly large) body they arrived with is released.
        """
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self._buf)
        if pos >= n:
            self._buf = _EMPTY
            self._pos = 0
        elif compact and pos > 0:
            self._buf = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self._buf) + pos, n - pos)
            self._pos = 0
        else:
            self._pos = pos
        return 0

    def feed(self, data):
        """Append received bytes."""
        cdef Py_buffer view
        cdef bint held = False
        cdef Py_ssize_t rest
        cdef bytes joined
        cdef char *w
        if self._pos == PyBytes_GET_SIZE(self._buf):
            # Nothing held: keep the caller's bytes object itself (no copy), so that
            # next_data can hand it back unchanged.
            self._buf = data if PyBytes_CheckExact(data) else bytes(data)
            self._pos = 0
            return
        owner = _acquire(data, &view, &held)  # keeps a copied view alive
        try:
            rest = PyBytes_GET_SIZE(self._buf) - self._pos
            joined = PyBytes_FromStringAndSize(NULL, rest + view.len)
            w = PyBytes_AS_STRING(joined)
            memcpy(w, PyBytes_AS_STRING(self._buf) + self._pos, rest)
            memcpy(w + rest, view.buf, view.len)
        finally:
            _release(&view, held)
        self._buf = joined
        self._pos = 0

    @property
    def in_data(self):
        """True between ``start_data`` and the chunk flagged ``DATA_END``."""
        return self._in_data

    @property
    def buffered(self):
        """Bytes received but not yet returned."""
        return PyBytes_GET_SIZE(self._buf) - self._pos

    def clear(self):
        """Drop every buffered byte (after STARTTLS); return how many were dropped."""
        dropped = PyBytes_GET_SIZE(self._buf) - self._pos
        self._buf = _EMPTY
        self._pos = 0
        self._discarded = -1
        return dropped

    def next_line(self):
        """Return the next command line with its status, or None if incomplete."""
        cdef const char *p
        cdef const char *lf
        cdef Py_ssize_t n, j, rest
        cdef int status
        if self._in_data:
            return None
        p = PyBytes_AS_STRING(self._buf) + self._pos
        n = PyBytes_GET_SIZE(self._buf) - self._pos
        if self._discarded >= 0:
            # Inside an over-long line: drop bytes up to the next LF.
            lf = <const char *>memchr(p, _LF, n)
            if lf == NULL:
                self._discarded += n
                self._consume(self._pos + n, False)
                if self._discarded > self._max_discard:
                    self._discarded = -1
                    return (C_LINE_RUNAWAY, _EMPTY)
                return None
            self._discarded = -1
            self._consume(self._pos + (lf - p) + 1, False)
            return (C_LINE_TOO_LONG, _EMPTY)
        j = fs_find_eol(p, n)
        if j == n or (p[j] == _CR and j + 1 == n):
            # No line ending yet, or a CR whose next byte decides between CRLF and bare CR.
            if n >= self._max_line:
                self._discarded = n
                self._consume(self._pos + n, False)
                if n > self._max_discard:
                    self._discarded = -1
                    return (C_LINE_RUNAWAY, _EMPTY)
            return None
        if p[j] == _CR:
            if p[j + 1] == _LF:
                status = C_LINE_OK
                rest = j + 2
            else:
                status = C_LINE_BARE_EOL
                rest = j + 1
        else:
            status = C_LINE_BARE_EOL
            rest = j + 1
        if rest > self._max_line:
            self._consume(self._pos + rest, False)
            return (C_LINE_TOO_LONG, _EMPTY)
        line = PyBytes_FromStringAndSize(p, j)
        self._consume(self._pos + rest, False)
        return (status, line)

    def start_data(self, Py_ssize_t max_size=0):
        """Switch to data mode (after the server answered 354 to DATA)."""
        self._in_data = True
        self._chunk = -1
        self._state = ST_LINE_START
        self._flags = 0
        self._size = 0
        self._max_size = max_size
        self._line_len = 0

    def start_chunk(self, Py_ssize_t size, Py_ssize_t max_size=0, bint first=True):
        """Switch to chunk mode: the next ``size`` octets are a BDAT chunk, read as they are."""
        if size < 0:
            raise ValueError(f"a chunk size must be >= 0, not {size}")
        if self._in_data:
            raise RuntimeError("start_chunk() while data is being read: finish it first")
        self._in_data = True
        self._chunk = size
        # The running total of the message: the declared size is known before the first
        # octet arrives, so a chunk that takes it past max_size is refused whole.
        if first or self._size > PY_SSIZE_T_MAX - size:
            self._size = size if first else PY_SSIZE_T_MAX
        else:
            self._size += size
        self._max_size = max_size
        self._flags = C_DATA_TOO_BIG if max_size and self._size > max_size else 0

    cdef object _next_chunk(self):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self._buf) - self._pos
        cdef Py_ssize_t take = n if n < self._chunk else self._chunk
        cdef Py_ssize_t end
        cdef int flags = self._flags
        cdef object chunk
        if take == 0 and self._chunk:
            return None
        # No framing inside a chunk: its octets are the message's, byte for byte.
        if flags & C_DATA_TOO_BIG:
            chunk = _EMPTY  # refused: dropped as they stream, memory stays bounded
        elif take == n and self._pos == 0:
            chunk = self._buf  # the whole read is chunk data: no copy
        else:
            chunk = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self._buf) + self._pos, take)
        self._chunk -= take
        end = self._pos + take
        # Bytes pipelined after the chunk are copied out (releasing the buffer the chunk
        # came in) only when they are fewer than those consumed: many small chunks in one
        # read are then not copied once each (quadratic), and the copies stay linear.
        self._consume(end, self._chunk == 0 and n - take <= end)
        if self._chunk == 0:
            flags |= C_DATA_END
            self._in_data = False
            self._chunk = -1
        return (chunk, flags)

    def next_data(self):
        """Return the next body chunk with its flags, or None if no byte was consumed."""
        cdef _Out o
        cdef const char *p
        cdef Py_ssize_t n, i, j, k, stop, line_len, longest
        cdef Py_ssize_t next_try = 0
        cdef Py_ssize_t backoff = 256
        cdef int state, flags, ls
        cdef char c
        cdef bint ended = False
        cdef bint whole
        cdef object chunk
        if not self._in_data:
            return None
        if self._chunk >= 0:
            return self._next_chunk()
        n = PyBytes_GET_SIZE(self._buf) - self._pos
        if n == 0:
            return None
        p = PyBytes_AS_STRING(self._buf) + self._pos
        whole = self._pos == 0
        _out_init(&o, p, n)
        state = self._state
        flags = self._flags
        line_len = self._line_len
        stop = n
        i = 0
        try:
            while i < n:
                if i >= next_try and (
                    state == ST_MID or state == ST_LINE_START or state == ST_BARE_START
                ):
                    # Clean blocks (no bare EOL, no line starting with ".") pass unchanged.
                    ls = state != ST_MID
                    longest = 0
                    k = fs_skip_clean(p + i, n - i, &ls, &line_len, &longest)
                    if k == 0:
                        next_try = i + backoff
                        backoff = backoff * 2 if backoff < 65536 else backoff
                    else:
                        backoff = 256
                        i += k
                        state = ST_LINE_START if ls else ST_MID
                        if longest > C_MAX_DATA_LINE - 2:
                            flags |= C_DATA_LONG_LINE
                        if i >= n:
                            break
                        continue
                if state == ST_MID:
                    j = i + fs_find_eol(p + i, n - i)
                    line_len += j - i
                    if j == n:
                        i = n
                        break
                    if p[j] == _CR:
                        state = ST_CR
                    else:  # bare LF
                        _out_insert(&o, j, "\r", 1)
                        flags |= C_DATA_BARE_EOL
                        state = ST_BARE_START
                        if line_len > C_MAX_DATA_LINE - 2:
                            flags |= C_DATA_LONG_LINE
                        line_len = 0
                    i = j + 1
                    continue
                c = p[i]
                if state == ST_LINE_START or state == ST_BARE_START:
                    if c == _DOT:
                        _out_skip(&o, i, 1)
                        state = ST_DOT if state == ST_LINE_START else ST_BARE_DOT
                        i += 1
                    else:
                        state = ST_MID
                elif state == ST_CR:
                    # i == 0 means the CR ended the previous chunk and was held back.
                    if line_len > C_MAX_DATA_LINE - 2:
                        flags |= C_DATA_LONG_LINE
                    line_len = 0
                    if c == _LF:
                        if i == 0:
                            _out_insert(&o, 0, "\r", 1)
                        state = ST_LINE_START
                        i += 1
                    else:
                        if i == 0:
                            _out_insert(&o, 0, "\r\n", 2)
                        else:
                            _out_insert(&o, i, "\n", 1)
                        flags |= C_DATA_BARE_EOL
                        state = ST_BARE_START
                elif state == ST_DOT or state == ST_BARE_DOT:
                    if c == _CR:
                        # Hold the CR back: if an LF follows, it may be the terminator.
                        _out_skip(&o, i, 1)
                        state = ST_DOT_CR if state == ST_DOT else ST_BARE_DOT_CR
                        i += 1
                    elif c == _LF:
                        _out_insert(&o, i, "\r", 1)
                        flags |= C_DATA_BARE_EOL
                        state = ST_BARE_START
                        i += 1
                    else:
                        state = ST_MID  # a stuffed dot: dropped, the line goes on
                else:  # ST_DOT_CR or ST_BARE_DOT_CR: the CR before i was held back
                    if c == _LF:
                        if state == ST_DOT_CR:
                            stop = i
                            i += 1
                            ended = True
                            break
                        # "." CRLF after a bare line ending: an empty line, not the end.
                        _out_insert(&o, i, "\r", 1)
                        state = ST_LINE_START
                        i += 1
                    else:
                        _out_insert(&o, i, "\r\n", 2)
                        flags |= C_DATA_BARE_EOL
                        state = ST_BARE_START
            if not ended and state == ST_CR:
                stop = n - 1  # hold the CR back until its next byte is known
            if line_len > C_MAX_DATA_LINE - 2:
                flags |= C_DATA_LONG_LINE  # reported before the line ends: memory stays bounded
            chunk = _out_close(&o, stop, n, self._buf if whole else None)
        except BaseException:
            _out_abandon(&o)
            raise
        self._consume(self._pos + i, True)
        if self._max_size:
            self._size += PyBytes_GET_SIZE(chunk)
            if self._size > self._max_size:
                flags |= C_DATA_TOO_BIG
        if flags & C_DATA_TOO_BIG:
            chunk = _EMPTY
        if ended:
            flags |= C_DATA_END
            self._in_data = False
            state = ST_LINE_START
            line_len = 0
        self._state = state
        self._flags = flags
        self._line_len = line_len
        return (chunk, flags)
