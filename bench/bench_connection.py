"""One client connection, many messages: fastsmtp vs aiosmtplib vs smtplib.

Each client sends N messages of 1 KB sequentially over ONE connection to:
  * Postfix's ``smtp-sink`` (C; offers PIPELINING), started on a free port and stopped after;
  * aiosmtpd (``SMTP`` with its ``Sink`` handler, uvloop, its own process; no PIPELINING).

Clients (in this process, so ``time.process_time`` is the client's CPU alone):
  * ``fastsmtp send``: ``await conn.send()`` one message after another (uvloop);
  * ``fastsmtp send_many``: the same messages pipelined across messages (uvloop);
  * ``aiosmtplib``: ``await smtp.sendmail()`` one after another (uvloop);
  * ``smtplib``: ``smtp.sendmail()`` (blocking).

Script mode prints msgs/s, client CPU microseconds per message, and the ratio to
aiosmtplib on the same server in the same run; then the rate of *sequential plain
connection set-ups* (connect, greeting, EHLO, QUIT, close: no message) of fastsmtp and
aiosmtplib against smtp-sink (issue 10's target: at least 0.9x aiosmtplib)::

    PYTHONPATH=src python bench/bench_connection.py [--count 20000] [--connects 2000]

Under pytest the ``test_*`` functions send a few messages each (a smoke test of the
whole set-up; run with ``--benchmark-disable``).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import time
from collections.abc import Callable

from bench_server import sink as server_process
from peer_programs import require, smtp_sink

FROM, TO = "sender@example.org", "rcpt@example.org"


def make_message(size: int = 1024) -> bytes:
    """A ``size``-byte message with CRLF line endings."""
    head = (f"From: {FROM}\r\nTo: {TO}\r\nSubject: bench\r\n"
            "Message-ID: <bench@example.org>\r\n\r\n").encode()
    line = b"x" * 70 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 2] + b"\r\n"


# -- clients -------------------------------------------------------------------------------


async def _fastsmtp(port: int, count: int, message: bytes, pipelined: bool) -> None:
    from fastsmtp.connection import SMTPConnection
    from fastsmtp.message import Envelope

    envelope = Envelope(FROM, TO)
    async with SMTPConnection("127.0.0.1", port, name="bench.local", ignore_tls=True) as conn:
        if pipelined:
            items = ((message, envelope) for _ in range(count))
            bad = [r async for _, r in conn.send_many(items) if isinstance(r, Exception)]
            if bad:
                raise bad[0]
        else:
            send = conn.send
            for _ in range(count):
                await send(message, envelope)


async def _aiosmtplib(port: int, count: int, message: bytes) -> None:
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False,
                           local_hostname="bench.local")
    await smtp.connect()
    for _ in range(count):
        await smtp.sendmail(FROM, [TO], message)
    await smtp.quit()


async def _fastsmtp_connects(port: int, count: int) -> None:
    from fastsmtp.connection import SMTPConnection

    for _ in range(count):
        async with SMTPConnection("127.0.0.1", port, name="bench.local", ignore_tls=True):
            pass


async def _aiosmtplib_connects(port: int, count: int) -> None:
    import aiosmtplib

    for _ in range(count):
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False,
                               start_tls=False, local_hostname="bench.local")
        await smtp.connect()
        await smtp.ehlo()
        await smtp.quit()


CONNECT_CLIENTS: dict[str, Callable[[int, int], None]] = {
    "fastsmtp": lambda p, n: _uvloop_run(_fastsmtp_connects(p, n)),
    "aiosmtplib": lambda p, n: _uvloop_run(_aiosmtplib_connects(p, n)),
}


def measure_connects(client: str, port: int, count: int) -> tuple[float, float]:
    """Sequential plain connect+EHLO+QUIT; return (set-ups per second, CPU s each)."""
    fn = CONNECT_CLIENTS[client]
    fn(port, min(50, count))  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn(port, count)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return count / wall, cpu / count


def _smtplib(port: int, count: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=60) as smtp:
        for _ in range(count):
            smtp.sendmail(FROM, [TO], message)


def _uvloop_run(coro) -> None:  # type: ignore[no-untyped-def]
    import uvloop

    uvloop.run(coro)


CLIENTS: dict[str, Callable[[int, int, bytes], None]] = {
    "fastsmtp send": lambda p, n, m: _uvloop_run(_fastsmtp(p, n, m, False)),
    "fastsmtp send_many": lambda p, n, m: _uvloop_run(_fastsmtp(p, n, m, True)),
    "aiosmtplib": lambda p, n, m: _uvloop_run(_aiosmtplib(p, n, m)),
    "smtplib": _smtplib,
}


def measure(client: str, port: int, count: int, message: bytes) -> tuple[float, float]:
    """Run one client; return (messages per second, client CPU seconds per message)."""
    fn = CLIENTS[client]
    fn(port, min(200, count), message)  # warm-up: imports, first connection
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn(port, count, message)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return count / wall, cpu / count


def run_all(count: int, servers: tuple[str, ...] = ("smtp-sink", "aiosmtpd")
            ) -> dict[str, dict[str, tuple[float, float]]]:
    """Every client against every server; {server: {client: (msgs/s, cpu s/msg)}}."""
    message = make_message()
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for server in servers:
        ctx = smtp_sink() if server == "smtp-sink" else server_process("aiosmtpd")
        with ctx as port:
            results[server] = {c: measure(c, port, count, message) for c in CLIENTS}
    return results


def main(argv: list[str] | None = None) -> int:
    """Script mode: print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per client")
    parser.add_argument("--connects", type=int, default=2000,
                        help="sequential connection set-ups per client (0: skip)")
    args = parser.parse_args(argv)
    from fastsmtp._codec import IMPLEMENTATION

    results = run_all(args.count)
    print(f"{args.count} x 1 KB over one connection; fastsmtp core: {IMPLEMENTATION}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'server':<10} {'client':<19} {'msgs/s':>9} {'CPU us/msg':>11} "
          f"{'vs aiosmtplib':>14} {'CPU vs aiosmtplib':>18}")
    for server, rows in results.items():
        base_rate, base_cpu = rows["aiosmtplib"]
        for client, (rate, cpu) in rows.items():
            print(f"{server:<10} {client:<19} {rate:>9.0f} {cpu * 1e6:>11.1f} "
                  f"{rate / base_rate:>13.2f}x {base_cpu / cpu:>17.2f}x")
    if args.connects:
        with smtp_sink() as port:
            rows = {c: measure_connects(c, port, args.connects) for c in CONNECT_CLIENTS}
        print(f"\n{args.connects} sequential plain connect+EHLO+QUIT to smtp-sink")
        print(f"{'client':<12} {'set-ups/s':>10} {'CPU us each':>12} {'vs aiosmtplib':>14}")
        base_rate = rows["aiosmtplib"][0]
        for client, (rate, cpu) in rows.items():
            print(f"{client:<12} {rate:>10.0f} {cpu * 1e6:>12.1f} {rate / base_rate:>13.2f}x")
    return 0


# -- pytest entries (smoke) ----------------------------------------------------------------


def _smoke(benchmark, server: str, client: str) -> None:  # type: ignore[no-untyped-def]
    if server == "smtp-sink":
        require("smtp-sink")
    ctx = smtp_sink() if server == "smtp-sink" else server_process("aiosmtpd")
    with ctx as port:
        benchmark.pedantic(measure, args=(client, port, 50, make_message()),
                           rounds=1, iterations=1)


def test_fastsmtp_send_smtp_sink(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp send() to smtp-sink."""
    _smoke(benchmark, "smtp-sink", "fastsmtp send")


def test_fastsmtp_send_many_smtp_sink(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp send_many() (pipelined across messages) to smtp-sink."""
    _smoke(benchmark, "smtp-sink", "fastsmtp send_many")


def test_fastsmtp_send_aiosmtpd(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp send() to aiosmtpd."""
    _smoke(benchmark, "aiosmtpd", "fastsmtp send")


def test_fastsmtp_connects_smtp_sink(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Sequential plain connection set-ups to smtp-sink (smoke)."""
    require("smtp-sink")
    with smtp_sink() as port:
        benchmark.pedantic(measure_connects, args=("fastsmtp", port, 20), rounds=1,
                           iterations=1)


def test_aiosmtplib_smtp_sink(benchmark) -> None:  # type: ignore[no-untyped-def]
    """aiosmtplib to smtp-sink (the reference client)."""
    _smoke(benchmark, "smtp-sink", "aiosmtplib")


if __name__ == "__main__":
    raise SystemExit(main())
