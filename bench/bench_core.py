"""Byte codec speed: the compiled core against its twin and the best plain-Python peers.

Measured:
  * ``DataEncoder.encode`` in MB/s on 100 KB and 1 MB bodies: clean CRLF text, text with
    2% of lines starting with ".", and bare-LF text;
  * ``ReplyParser.feed`` in replies/s on a 20-line EHLO reply;
  * ``data_size`` (the RFC 1870 SIZE a client declares, counted before sending) in
    calls/s on a 1 KB and a 100 KB message; the twin's three ``bytes.count`` scans are
    the best plain Python for it.

Contenders:
  * ``compiled``: ``fastsmtp._core`` (skipped when not built);
  * ``twin``: ``fastsmtp._core_py`` (also tracks bytes_out/longest_line, as the core does);
  * ``best-python``: the fastest plain Python written here: a clean check made of C-speed
    ``bytes.count``/``in`` passes that returns the input, else a ``bytes.replace`` chain;
  * ``aiosmtplib``: aiosmtplib's approach, re-implemented here from its ``protocol.py``
    (5.x): ``LINE_ENDINGS_REGEX = re.compile(rb"(?:\\r\\n|\\n|\\r(?!\\n))")`` substituted by
    CRLF, then ``PERIOD_REGEX = re.compile(rb"(?m)^\\.")`` substituted by ``..`` over the
    whole message; replies parsed from a ``bytearray`` with ``find(b"\\n")``,
    ``int(line[:3])`` and the text joined and decoded (``_read_response_from_buffer``).
    Its private names are not imported, as they may change.

The plain-Python encoders work on a whole message at once; the core's encoder streams
(its state is carried across chunks), so the comparison favours the peers.

Script mode prints a table (MB/s or replies/s, and the compiled core's speed-up):

    PYTHONPATH=src python bench/bench_core.py [--seconds 0.5]

Under pytest (``pytest bench/bench_core.py``) each pair is a pytest-benchmark case;
``extra_info`` holds MB/s or replies/s.
"""

from __future__ import annotations

import argparse
import importlib
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

try:
    import fastsmtp  # noqa: F401  (an installed build, with its compiled core)
except ImportError:  # a checkout that was never installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fastsmtp import _core_py  # noqa: E402

try:
    _core: ModuleType | None = importlib.import_module("fastsmtp._core")
except ImportError:  # pragma: no cover - the extension is optional
    _core = None

# -- inputs ----------------------------------------------------------------------------------

_WORDS = (
    b"the quick brown fox jumps over lazy dog message delivery server client header body "
    b"subject from to date received mime version content type text plain charset utf-8"
).split()


def make_text(size: int, eol: bytes = b"\r\n", dot_share: float = 0.0, seed: int = 5) -> bytes:
    """Mail-like text of ``size`` bytes: lines of up to 76 characters ending in ``eol``.

    ``dot_share`` of the lines start with "." (they need stuffing).
    """
    rnd = random.Random(seed)
    out: list[bytes] = []
    n = 0
    while n < size:
        line = b" ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(6, 14)))[:76]
        if rnd.random() < dot_share:
            line = b"." + line[1:]
        out.append(line + eol)
        n += len(line) + len(eol)
    data = b"".join(out)[:size]
    # End on a whole line ending so every body is a complete message.
    return data[: data.rfind(b"\n") + 1]


BODIES: dict[str, bytes] = {}
for _size, _label in ((100_000, "100KB"), (1_000_000, "1MB")):
    BODIES[f"clean-{_label}"] = make_text(_size)
    BODIES[f"dots2%-{_label}"] = make_text(_size, dot_share=0.02)
    BODIES[f"bareLF-{_label}"] = make_text(_size, eol=b"\n")

EHLO_20 = b"".join(
    b"250%s%s\r\n" % (b"-" if i < 19 else b" ", text)
    for i, text in enumerate(
        [b"mail.example.com Hello client.example [127.0.0.1]", b"PIPELINING",
         b"SIZE 52428800", b"VRFY", b"ETRN", b"STARTTLS", b"AUTH PLAIN LOGIN CRAM-MD5",
         b"AUTH=PLAIN LOGIN", b"ENHANCEDSTATUSCODES", b"8BITMIME", b"DSN", b"SMTPUTF8",
         b"CHUNKING", b"BINARYMIME", b"DELIVERBY 300", b"MT-PRIORITY MIXER", b"FUTURERELEASE",
         b"REQUIRETLS", b"LIMITS RCPTMAX=100", b"HELP"]
    )
)

# -- plain-Python peers ------------------------------------------------------------------------


def encode_best_python(data: bytes) -> bytes:
    """The fastest plain-Python DATA encoder we know (whole message, no state).

    Clean text is detected with C-speed passes and returned as is; anything else goes
    through ``bytes.replace`` (each a single C pass), never a Python-level byte loop.
    """
    crlf = data.count(b"\r\n")
    if (
        crlf == data.count(b"\n")
        and crlf == data.count(b"\r")
        and b"\n." not in data
        and not data.startswith(b".")
    ):
        return data
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    data = data.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data


_AIO_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_AIO_PERIOD = re.compile(rb"(?m)^\.")


def encode_aiosmtplib(message: bytes) -> bytes:
    """aiosmtplib's DATA preparation (``normalize_message_line_endings`` + period quoting)."""
    message = _AIO_LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return _AIO_PERIOD.sub(b"..", message) + b".\r\n"


def parse_best_python(data: bytes) -> list[tuple[int, list[bytes]]]:
    """A strict plain-Python reply parser on whole replies (split once, check each line)."""
    replies: list[tuple[int, list[bytes]]] = []
    lines: list[bytes] = []
    code = 0
    for line in data.split(b"\n")[:-1]:
        if line[-1:] == b"\r":
            line = line[:-1]
        head = line[:3]
        if len(head) != 3 or not head.isdigit() or not 50 <= head[0] <= 53:
            raise ValueError(f"malformed reply line {line!r}")
        sep = line[3:4]
        this = int(head)
        if sep not in (b"", b" ", b"-") or (code and this != code):
            raise ValueError(f"malformed reply line {line!r}")
        lines.append(line[4:])
        if sep == b"-":
            code = this
        else:
            replies.append((this, lines))
            lines, code = [], 0
    return replies


class AiosmtplibReplies:
    """aiosmtplib's reply reading: a bytearray buffer scanned line by line per reply."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, str]]:
        self._buffer.extend(data)
        replies = []
        while (reply := self._one()) is not None:
            replies.append(reply)
        return replies

    def _one(self) -> tuple[int, str] | None:
        code = -1
        message = bytearray()
        offset = 0
        while True:
            end = self._buffer.find(b"\n", offset)
            if end == -1:
                return None
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > 8192:
                raise ValueError("Response too long")
            code = int(line[:3])
            offset += len(line)
            if len(message):
                message.extend(b"\n")
            message.extend(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return code, bytes(message).decode("utf-8", "surrogateescape")


# -- contenders --------------------------------------------------------------------------------


def encoders() -> dict[str, Callable[[bytes], object]]:
    """name -> function encoding one whole body (a fresh message each call)."""
    out: dict[str, Callable[[bytes], object]] = {}
    for name, core in (("compiled", _core), ("twin", _core_py)):
        if core is None:
            continue

        def run(data: bytes, _enc: object = core.DataEncoder()) -> object:
            out = _enc.encode(data)  # type: ignore[attr-defined]
            _enc.end()  # type: ignore[attr-defined]
            return out

        out[name] = run
    out["best-python"] = encode_best_python
    out["aiosmtplib"] = encode_aiosmtplib
    return out


def parsers() -> dict[str, Callable[[bytes], object]]:
    """name -> function parsing one whole EHLO reply with a long-lived parser."""
    out: dict[str, Callable[[bytes], object]] = {}
    for name, core in (("compiled", _core), ("twin", _core_py)):
        if core is not None:
            out[name] = core.ReplyParser().feed
    out["best-python"] = parse_best_python
    out["aiosmtplib"] = AiosmtplibReplies().feed
    return out


#: Messages for data_size: the pool benchmark's 1 KB shape, and a 100 KB body.
SIZE_BODIES = {
    "1 KB": b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 13,
    "100 KB": b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1310,
}


def sizers() -> dict[str, Callable[[bytes], object]]:
    """name -> data_size of each implementation."""
    return {name: core.data_size for name, core in (("compiled", _core), ("twin", _core_py))
            if core is not None}


def check_outputs() -> None:
    """All contenders must produce the same wire bytes / replies (else the race is void)."""
    for label, body in BODIES.items():
        wire = encode_aiosmtplib(body)
        for name, fn in encoders().items():
            out = bytes(fn(body))  # type: ignore[arg-type]
            if name != "aiosmtplib":
                out += b".\r\n"  # the others leave the terminator to end()
            assert out == wire, (label, name)
    for body in SIZE_BODIES.values():
        assert len({fn(body) for fn in sizers().values()}) == 1
    expected = parse_best_python(EHLO_20)
    assert len(expected) == 1 and len(expected[0][1]) == 20
    for name, fn in parsers().items():
        got = fn(EHLO_20)
        assert len(got) == 1 and got[0][0] == 250, name  # type: ignore[arg-type]


# -- pytest-benchmark --------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - script mode without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    _ENCODER_NAMES = ["compiled", "twin", "best-python", "aiosmtplib"]

    @pytest.fixture(scope="module", autouse=True)
    def _outputs_agree() -> None:
        check_outputs()

    def _pick(table: dict[str, Callable[[bytes], object]], name: str) -> Callable[[bytes], object]:
        if name not in table:
            pytest.skip(f"{name} is not available (fastsmtp._core not built?)")
        return table[name]

    @pytest.mark.parametrize("body", list(BODIES))
    @pytest.mark.parametrize("impl", _ENCODER_NAMES)
    def test_encode(benchmark, impl: str, body: str) -> None:  # type: ignore[no-untyped-def]
        """Encoder MB/s (extra_info["MB/s"])."""
        fn = _pick(encoders(), impl)
        data = BODIES[body]
        benchmark.group = f"encode {body}"
        benchmark(fn, data)
        if benchmark.stats is not None:
            benchmark.extra_info["MB/s"] = round(len(data) / benchmark.stats.stats.mean / 1e6, 1)

    @pytest.mark.parametrize("impl", _ENCODER_NAMES)
    def test_parse_ehlo(benchmark, impl: str) -> None:  # type: ignore[no-untyped-def]
        """Parser replies/s on a 20-line EHLO reply (extra_info["replies/s"])."""
        fn = _pick(parsers(), impl)
        benchmark.group = "parse 20-line EHLO"
        result = benchmark(fn, EHLO_20)
        assert len(result) == 1
        if benchmark.stats is not None:
            benchmark.extra_info["replies/s"] = round(1 / benchmark.stats.stats.mean)


    @pytest.mark.parametrize("body", list(SIZE_BODIES))
    @pytest.mark.parametrize("impl", ["compiled", "twin"])
    def test_data_size(benchmark, impl: str, body: str) -> None:  # type: ignore[no-untyped-def]
        """data_size calls/s (extra_info["calls/s"])."""
        fn = _pick(sizers(), impl)
        benchmark.group = f"data_size {body}"
        data = SIZE_BODIES[body]
        assert benchmark(fn, data) == len(data)
        if benchmark.stats is not None:
            benchmark.extra_info["calls/s"] = round(1 / benchmark.stats.stats.mean)


# -- script mode -------------------------------------------------------------------------------


def _rate(fn: Callable[[bytes], object], data: bytes, seconds: float) -> float:
    """Calls per second: best of 5 rounds of about ``seconds / 5`` each."""
    calls = 1
    while True:  # calibrate a batch that takes about 10 ms
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(data)
        dt = time.perf_counter() - t0
        if dt > 0.01:
            break
        calls *= 2
    best = 0.0
    for _ in range(5):
        rounds = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            for _ in range(calls):
                fn(data)
            rounds += calls
        best = max(best, rounds / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args(argv)
    check_outputs()
    print(f"fastsmtp._core: {'built' if _core is not None else 'NOT BUILT'}; "
          f"Python {sys.version.split()[0]}")
    names = list(encoders())
    print("\nDataEncoder.encode, MB/s (x = compiled core's speed-up over each)")
    print(f"{'body':16}" + "".join(f"{n:>22}" for n in names))
    for label, body in BODIES.items():
        rates = {n: _rate(fn, body, args.seconds) * len(body) / 1e6 for n, fn in encoders().items()}
        ref = rates.get("compiled")
        cells = []
        for n in names:
            ratio = f" ({ref / rates[n]:.1f}x)" if ref and n != "compiled" else ""
            cells.append(f"{rates[n]:>12.0f}{ratio:>10}")
        print(f"{label:16}" + "".join(cells))
    print("\nReplyParser.feed on a 20-line EHLO reply, replies/s")
    rates = {n: _rate(fn, EHLO_20, args.seconds) for n, fn in parsers().items()}
    ref = rates.get("compiled")
    for n, r in rates.items():
        ratio = f"  (compiled is {ref / r:.1f}x)" if ref and n != "compiled" else ""
        print(f"  {n:14}{r:>12,.0f}{ratio}")
    print("\ndata_size (the SIZE declared before MAIL), calls/s")
    for label, body in SIZE_BODIES.items():
        rates = {n: _rate(fn, body, args.seconds) for n, fn in sizers().items()}
        ref = rates.get("compiled")
        for n, r in rates.items():
            ratio = f"  (compiled is {ref / r:.1f}x)" if ref and n != "compiled" else ""
            print(f"  {label:8}{n:14}{r:>12,.0f}{ratio}")


if __name__ == "__main__":
    main()
