"""``fastsmtp demo``: send personalized messages through an SMTPPool to our own server.

The newcomer's first command. It needs nothing but the package: it starts an
:class:`~fastsmtp.server.SMTPServer` on a loopback port in a child process (so client and
server each get a core and the client's CPU time can be measured on its own), pushes
``--messages`` personalized messages through an :class:`~fastsmtp.pool.SMTPPool` with a
live progress line, then checks that every message arrived intact: the server reports
how many messages it accepted and an order-independent checksum of their bodies, which
must equal the checksum of what the client sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypedDict

from .._loop import loop_name, new_event_loop
from .progress import Progress, stats_line

__all__ = ["add_demo_parser", "cmd_demo", "run_demo", "DemoReport", "body_checksum"]

_CHECKSUM_MOD = 1 << 128


def body_checksum(content: bytes) -> int:
    """A 128-bit digest of one message; digests are summed so order does not matter."""
    return int.from_bytes(hashlib.blake2b(content, digest_size=16).digest(), "big")


class _CountingHandler:
    """Server side of the demo: counts accepted messages and sums their checksums."""

    def __init__(self) -> None:
        self.count = 0
        self.checksum = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        self.checksum = (self.checksum + body_checksum(envelope.content)) % _CHECKSUM_MOD
        return "250 2.0.0 accepted"


def _serve(pipe: Connection, use_uvloop: bool) -> None:
    """Child process: run the server until the parent says stop, then report."""
    from ..server import SMTPServer

    loop = new_event_loop(None if use_uvloop else False)
    handler = _CountingHandler()

    async def main() -> None:
        server = SMTPServer(handler, host="127.0.0.1", port=0)
        await server.start()
        pipe.send(server.port)
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(pipe.fileno())
        pipe.recv()
        await server.close()
        pipe.send((handler.count, handler.checksum))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _message(n: int, size: int) -> bytes:
    head = (
        f"From: Demo Sender <sender@example.com>\r\n"
        f"To: Reader {n} <reader{n}@example.com>\r\n"
        f"Subject: Hello reader {n}, your weekly fastsmtp news\r\n"
        f"Message-ID: <demo-{n}@fastsmtp.example>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Dear reader {n},\r\n\r\n"
    ).encode()
    filler = b"fastsmtp sends mail fast and never twice. " * 2 + b"\r\n"
    lines = b"".join([filler] * max(0, (size - len(head)) // len(filler)))
    return head + lines + b"-- \r\nThe demo\r\n"


class _Sent(TypedDict):
    """The client side's half of a :class:`DemoReport` (what ``_send_all`` measured)."""

    accepted: int
    failed: int
    errors: dict[str, int]
    elapsed: float
    cpu: float
    client_checksum: int
    implementation: str
    loop: str
    stats: dict[str, int | float | None]


@dataclass(kw_only=True)
class DemoReport:
    """What one demo run measured (also printed as the summary).

    Attributes:
        messages: Messages the client was asked to send.
        accepted: Messages the server accepted (per the client).
        failed: Messages whose sending failed.
        server_count: Messages the server reported receiving.
        server_checksum: Sum of the received bodies' checksums (mod 2**128).
        client_checksum: Sum of the sent bodies' checksums (mod 2**128).
        errors: Failures counted by exception class name.
        elapsed: Wall-clock seconds of the sending.
        cpu: Client process CPU seconds of the sending.
        implementation: The codec core the client used (``cython`` or ``python``).
        loop: The client's event loop (``uvloop`` or ``asyncio``).
        stats: The pool's final :meth:`~fastsmtp.pool.SMTPPool.stats`.
    """

    messages: int
    accepted: int
    failed: int
    server_count: int
    server_checksum: int
    client_checksum: int
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    cpu: float = 0.0
    implementation: str = ""
    loop: str = ""
    stats: dict[str, int | float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every message was accepted, arrived, and the checksums match."""
        return (
            self.failed == 0
            and self.accepted == self.messages
            and self.server_count == self.messages
            and self.server_checksum == self.client_checksum
        )


async def _send_all(port: int, args: argparse.Namespace, progress: Progress | None) -> _Sent:
    from .. import IMPLEMENTATION
    from ..message import Envelope
    from ..pool import SMTPPool

    checksum = 0
    accepted = failed = 0
    errors: dict[str, int] = {}

    def source() -> Any:
        nonlocal checksum
        for n in range(args.messages):
            body = _message(n, args.size)
            checksum = (checksum + body_checksum(body)) % _CHECKSUM_MOD
            yield (body, Envelope("sender@example.com", (f"reader{n}@example.com",)))

    pool = SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                    max_connections=args.connections, max_messages=args.max_messages)
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    # Per message the display only counts; it draws on its own timer.
    moved = progress.moved if progress is not None else None
    tick = None
    if progress is not None:
        progress.draw(force=True)
        tick = asyncio.ensure_future(progress.run())
    try:
        async with pool:
            async for _item, result in pool.send_many(source()):
                if isinstance(result, Exception):
                    failed += 1
                    errors[type(result).__name__] = errors.get(type(result).__name__, 0) + 1
                    if moved is not None:
                        moved(None, "failed")
                else:
                    accepted += 1
                    if moved is not None:
                        moved(None, "accepted")
    finally:
        if tick is not None:
            tick.cancel()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if progress is not None:
        progress.finish()
    return _Sent(accepted=accepted, failed=failed, errors=errors, elapsed=elapsed, cpu=cpu,
                 client_checksum=checksum, implementation=IMPLEMENTATION,
                 loop=loop_name(loop), stats=pool.stats())


def run_demo(args: argparse.Namespace, progress: bool = True) -> DemoReport:
    """Start the server process, send, collect the server's count and checksum."""
    ctx = multiprocessing.get_context("spawn")  # a clean child: no inherited loop state
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, not args.no_uvloop), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the demo server did not start")
        port = parent.recv()
        loop = new_event_loop(False if args.no_uvloop else None)
        try:
            sent = loop.run_until_complete(
                _send_all(port, args, Progress(args.messages) if progress else None)
            )
        finally:
            loop.close()
        parent.send("stop")
        if not parent.poll(30):
            raise RuntimeError("the demo server did not report")
        server_count, server_checksum = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return DemoReport(messages=args.messages, server_count=server_count,
                      server_checksum=server_checksum, **sent)


def add_demo_parser(subparsers: Any) -> None:
    """Declare ``fastsmtp demo``."""
    p = subparsers.add_parser(
        "demo", help="send personalized messages to an embedded server and verify them",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--messages", "-n", type=int, default=10_000, help="messages to send (10000)")
    p.add_argument("--connections", "-c", type=int, default=8, help="pool connections (8)")
    p.add_argument("--max-messages", type=int, default=1000,
                   help="messages per connection before it is replaced (1000)")
    p.add_argument("--size", type=int, default=1024, help="approximate message size in bytes")
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; exit status 0 only if every message arrived intact."""
    if args.messages < 1 or args.connections < 1 or args.max_messages < 1:
        print("fastsmtp demo: --messages, --connections and --max-messages must be >= 1",
              file=sys.stderr)
        return 2
    report = run_demo(args, progress=not args.quiet)
    per_msg = report.cpu / max(report.accepted, 1) * 1e6
    print(f"messages   {report.messages} sent through {args.connections} connections, "
          f"{report.accepted} accepted, {report.failed} failed")
    print(f"server     {report.server_count} received, checksum "
          f"{'OK' if report.server_checksum == report.client_checksum else 'MISMATCH'}")
    print(f"elapsed    {report.elapsed:.2f} s, {report.accepted / report.elapsed:,.0f} msgs/s")
    print(f"client CPU {per_msg:.1f} us per message")
    print(f"runtime    core={report.implementation}, loop={report.loop}, "
          f"python={sys.version.split()[0]}")
    print(f"pool       {stats_line(report.stats)}")
    for name, count in sorted(report.errors.items()):
        print(f"error      {count} x {name}")
    print("result     OK: every message arrived exactly once" if report.ok
          else "result     FAILED: messages were lost or refused")
    return 0 if report.ok else 1
