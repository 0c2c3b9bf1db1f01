"""Server throughput: Postfix's ``smtp-source`` against fastsmtp's server with four handlers,
aiosmtpd and ``smtp-sink``, in one interleaved run.

Servers (each in its own process, discarding every message):
  * ``sink``: fastsmtp's :class:`~fastsmtp.server.SMTPServer` with the hook-less
    :class:`~fastsmtp.handlers.Sink` (every reply precomputed), on uvloop;
  * ``sync``: fastsmtp with a plain ``def handle_DATA`` returning ``"250 OK"``;
  * ``async``: fastsmtp with an aiosmtpd-style ``async def handle_DATA`` returning
    ``"250 OK"`` (what users write; it never suspends, so it runs inline);
  * ``sleep0``: fastsmtp with an ``async def handle_DATA`` that awaits ``asyncio.sleep(0)``
    first (a hook that really suspends: the cost of a task and a loop iteration);
  * ``aiosmtpd``: aiosmtpd's ``SMTP`` with the same ``async def handle_DATA``, on uvloop;
  * ``smtp-sink``: Postfix's ``smtp-sink`` (C, the reference ceiling).

Load: ``smtp-source -s 8 -d`` (8 parallel sessions, each sending its messages over one
connection) sending 20,000 messages of 1 KB (``-l 1024``) and 2,000 of 100 KB
(``-l 102400``). ``-d`` matters: without it smtp-source opens a new TCP connection and
does the whole greeting/HELO/QUIT dialogue for every message, and that, not the message
transfer, is then what every server is measured on (smtp-sink drops from about 20,000
to about 6,000 msgs/s for 1 KB on a 2-core machine). ``--reconnect`` measures that mode.

Script mode prints messages per second for each server and the ratios to smtp-sink, the
best of ``--rounds`` (default 3) rounds that interleave the servers:

    PYTHONPATH=src python bench/bench_server.py [--small N] [--large N] [--reconnect]
        [--rounds N] [--only sink,async,smtp-sink]

Under pytest the ``test_*`` functions run a small count (a smoke test; use
``--benchmark-disable`` in CI to run each once without timing rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from peer_programs import child_env, free_port, require, run_source, sink_command, start_listening

SESSIONS = 8


# -- the handlers (module level: the child processes import them by kind) ----------------


class SyncHandler:
    """A plain ``def handle_DATA``: a hook, but no coroutine."""

    def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class AsyncHandler:
    """The aiosmtpd-style ``async def handle_DATA`` that users write; it never suspends."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class SuspendingHandler:
    """An ``async def handle_DATA`` that really suspends once (``asyncio.sleep(0)``)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0)
        return "250 OK"


# -- servers run in child processes --------------------------------------------------------


def _serve_fastsmtp(port: int, handler: Any) -> None:
    import uvloop

    from fastsmtp.server import SMTPServer

    async def main() -> None:
        server = SMTPServer(handler, "127.0.0.1", port, name="bench.local", max_clients=0)
        await server.start()
        await asyncio.Event().wait()

    uvloop.run(main())


def _serve_aiosmtpd(port: int) -> None:
    import uvloop
    from aiosmtpd.smtp import SMTP

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(AsyncHandler(), hostname="bench.local", loop=loop), "127.0.0.1", port, backlog=1024
        )
    )
    loop.run_forever()


def _handler(kind: str) -> Any:
    from fastsmtp.handlers import Sink

    return {"sink": Sink, "sync": SyncHandler, "async": AsyncHandler, "sleep0": SuspendingHandler}[kind]()


#: Every server, in the table's order; ``fastsmtp`` is an alias of ``sink`` (older callers).
SINKS = ("sink", "sync", "async", "sleep0", "aiosmtpd", "smtp-sink")


@contextmanager
def sink(kind: str) -> Iterator[int]:
    """Start one server (a name of :data:`SINKS`) in its own process; yield its port; stop it."""
    kind = "sink" if kind == "fastsmtp" else kind
    if kind not in SINKS:
        raise ValueError(f"unknown server {kind!r}: use one of {', '.join(SINKS)}")
    port = free_port()
    if kind == "smtp-sink":
        cmd = sink_command(port)
    else:
        cmd = [sys.executable, __file__, "--serve", kind, str(port)]
    with start_listening(cmd, port, child_env()):
        yield port


def measure(
    loads: list[tuple[str, int, int]],
    keep_open: bool = True,
    rounds: int = 3,
    kinds: tuple[str, ...] = SINKS,
) -> dict[str, dict[str, float]]:
    """Best msgs/s of ``rounds`` runs of every load against every server, by load and server.

    All servers run at once (an idle one costs nothing) and the rounds interleave them, so
    a burst of other work on the machine hits one run of each server, not all runs of one;
    the best round is the one least disturbed.
    """
    results: dict[str, dict[str, float]] = {label: dict.fromkeys(kinds, 0.0) for label, _, _ in loads}
    with ExitStack() as stack:
        ports = {kind: stack.enter_context(sink(kind)) for kind in kinds}
        for port in ports.values():
            run_source(port, 200, 1024, SESSIONS, keep_open=keep_open)  # warm-up
        for _ in range(rounds):
            for label, count, size in loads:
                for kind, port in ports.items():
                    rate = run_source(port, count, size, SESSIONS, keep_open=keep_open)
                    results[label][kind] = max(results[label][kind], rate)
    return results


def main(argv: list[str] | None = None) -> int:
    """Script mode: print msgs/s for each server and the ratios to smtp-sink."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20000, help="1 KB messages (default 20000; 0 skips)")
    parser.add_argument("--large", type=int, default=2000, help="100 KB messages (default 2000; 0 skips)")
    parser.add_argument(
        "--reconnect", action="store_true", help="one connection per message (smtp-source without -d)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and load; the best counts")
    parser.add_argument(
        "--only", default=",".join(SINKS), help=f"comma-separated servers (default: all of {','.join(SINKS)})"
    )
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        kind, port = args.serve[0], int(args.serve[1])
        if kind == "aiosmtpd":
            _serve_aiosmtpd(port)
        else:
            _serve_fastsmtp(port, _handler(kind))
        return 0
    from fastsmtp._codec import IMPLEMENTATION

    kinds = tuple(k.strip() for k in args.only.split(",") if k.strip())
    unknown = [k for k in kinds if k not in SINKS]
    if unknown:
        parser.error(f"--only: unknown server(s) {', '.join(unknown)}; use names from {','.join(SINKS)}")
    loads = [(label, n, size) for label, n, size in (("1 KB", args.small, 1024), ("100 KB", args.large, 102400)) if n]
    keep_open = not args.reconnect
    results = measure(loads, keep_open, args.rounds, kinds)
    flags = f"-s {SESSIONS}" + (" -d" if keep_open else "")
    print(
        f"smtp-source {flags} -m COUNT -l SIZE, best of {args.rounds} interleaved rounds,"
        f" fastsmtp core: {IMPLEMENTATION}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'load':<8} {'server':<10} {'msgs/s':>9} {'vs smtp-sink':>13}")
    for label, count, _ in loads:
        r = results[label]
        ref = r.get("smtp-sink")
        for kind in kinds:
            ratio = f"{r[kind] / ref:>12.2f}x" if ref else f"{'-':>13}"
            print(f"{label:<8} {kind:<10} {r[kind]:>9.0f} {ratio}")
        print(f"{'':<8} ({count} msgs/run)")
    return 0


# -- pytest-benchmark entries (small counts: a smoke test of the whole set-up) --------------


def _smoke(benchmark, kind: str, size: int) -> None:  # type: ignore[no-untyped-def]
    require("smtp-source", *(("smtp-sink",) if kind == "smtp-sink" else ()))
    with sink(kind) as port:
        rate = benchmark.pedantic(
            run_source, args=(port, 100, size, SESSIONS), kwargs={"keep_open": True}, rounds=1, iterations=1
        )
    assert rate is None or rate > 0


def test_fastsmtp_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp sink, 100 x 1 KB."""
    _smoke(benchmark, "fastsmtp", 1024)


def test_fastsmtp_100k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp sink, 100 x 100 KB."""
    _smoke(benchmark, "fastsmtp", 100 * 1024)


def test_sync_handler_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp with a plain def handle_DATA, 100 x 1 KB."""
    _smoke(benchmark, "sync", 1024)


def test_async_handler_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp with an async def handle_DATA that never suspends, 100 x 1 KB."""
    _smoke(benchmark, "async", 1024)


def test_suspending_handler_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """fastsmtp with an async def handle_DATA awaiting asyncio.sleep(0), 100 x 1 KB."""
    _smoke(benchmark, "sleep0", 1024)


def test_aiosmtpd_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """aiosmtpd with an async def handle_DATA, 100 x 1 KB."""
    _smoke(benchmark, "aiosmtpd", 1024)


def test_smtp_sink_1k(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Postfix smtp-sink, 100 x 1 KB."""
    _smoke(benchmark, "smtp-sink", 1024)


if __name__ == "__main__":
    raise SystemExit(main())
