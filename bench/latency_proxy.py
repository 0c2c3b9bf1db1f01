"""A loopback TCP proxy that makes a server look far away: a fixed delay each way.

Every chunk read from one side is written to the other side ``delay`` seconds after it
arrived, so the round-trip time a client sees is ``2 x delay`` on top of loopback's. The
order of the chunks is kept, and nothing limits bandwidth: each chunk's forward time is
its own arrival time plus the delay (not the previous chunk's forward time plus the
delay), so a stream of chunks leaves as fast as it came, only later. Half-closes (EOF)
and closes are delayed and forwarded like data; a reset is forwarded as an abort.

Memory stays bounded: when the bytes held for one direction (queued for later plus not
yet accepted by the receiving socket) pass ``high_water``, reading from the sender stops
until they fall under a quarter of it. That caps the proxy's bandwidth at
``high_water / delay`` (16 MiB / 25 ms = 640 MiB/s by default), far above what SMTP
with 1 KB messages needs; the validation below prints the throughput through the proxy
next to the direct one so the cap can be checked.

The upstream connection is opened ``delay`` after a client connects (the SYN's trip), so
the server's greeting reaches the client one RTT after it connected. (Over a real path a
client's ``connect()`` itself takes one RTT and the greeting a half more; the proxy
accepts at once, so a session's set-up here is half an RTT cheaper than on a real path.
Steady-state rates, which the benchmarks measure, are unaffected.)

Loopback only: both the listening and the target address must be loopback addresses.

Use it from a script::

    async with LatencyProxy(("127.0.0.1", 2525), delay=0.025) as proxy:
        ...  # connect to 127.0.0.1:proxy.port

or in its own process (what ``bench_latency.py`` does, so the proxy's CPU is not the
client's)::

    python bench/latency_proxy.py --listen 0 --target 127.0.0.1:2525 --delay-ms 25

which prints ``listening on 127.0.0.1:PORT ...`` and runs until SIGTERM/SIGINT;
:func:`proxy_process` wraps that. ``--validate`` instead measures the proxy (ping-pong
RTT, median against the configured one, and throughput through it against direct) and
prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

#: Bytes held for one direction before reading from its sender pauses.
HIGH_WATER = 16 * 1024 * 1024

# Markers queued behind the data, in order: the sender half-closed, closed, or reset.
_EOF, _CLOSE, _RESET = 1, 2, 3


def _require_loopback(host: str, what: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{what} must be a loopback IP address such as 127.0.0.1, not {host!r}: "
            "the latency proxy is for benchmarks on this machine only"
        )


class _Direction:
    """One direction of one proxied connection: chunks in, the same chunks out later."""

    __slots__ = ("loop", "delay", "high", "low", "queue", "queued", "timer", "source", "sink",
                 "paused", "sink_paused", "dead", "proxy")

    def __init__(self, proxy: LatencyProxy, source: _Side) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.delay = proxy.delay
        self.high = proxy.high_water
        self.low = proxy.high_water // 4
        self.queue: deque[tuple[float, bytes | int]] = deque()
        self.queued = 0  # data bytes in ``queue``
        self.timer: asyncio.TimerHandle | None = None
        self.source = source
        self.sink: _Side | None = None  # set once the receiving side is connected
        self.paused = False  # reading from ``source`` is paused
        self.sink_paused = False  # the sink's transport asked us to stop writing
        self.dead = False  # the receiving side is gone: drop whatever comes

    def push(self, item: bytes | int) -> None:
        """Queue a chunk (or a marker) to leave ``delay`` seconds from now."""
        if self.dead:
            return
        due = self.loop.time() + self.delay
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.queued += len(item)
            self._balance()
        if self.timer is None and self.sink is not None:
            self.timer = self.loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Forward every item whose time has come, then wait for the next one."""
        self.timer = None
        sink = self.sink
        if sink is None or self.dead:
            return
        queue = self.queue
        now = self.loop.time()
        transport = sink.transport
        while queue and queue[0][0] <= now:
            _, item = queue.popleft()
            if isinstance(item, bytes):
                self.queued -= len(item)
                transport.write(item)
            elif item == _EOF:
                self._half_close(sink)
            else:
                self.source.link.close(abort=item == _RESET)
                return
        if queue:
            # A timer may fire a hair early (uvloop's have millisecond ticks): then this
            # simply waits again for the head's own time, never forwarding it early.
            self.timer = self.loop.call_at(queue[0][0], self.flush)
        self._balance()

    def _half_close(self, sink: _Side) -> None:
        # Forward the sender's EOF; the direction stays open for the close that follows.
        sink.eof_sent = True
        if sink.transport.can_write_eof():
            try:
                sink.transport.write_eof()
            except OSError:
                # The receiver is already gone (its reset is on its way): end it all.
                self.source.link.close(abort=True)
                return
        if self.source.eof_sent:
            self.source.link.close()  # both halves closed: the connection is done

    def clear(self) -> None:
        """Drop everything queued and stop forwarding (the receiving side is done)."""
        self.dead = True
        self.queue.clear()
        self.queued = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _balance(self) -> None:
        # Backpressure: pause the sender while too much is held for this direction.
        held = self.queued
        if self.sink is not None:
            held += self.sink.transport.get_write_buffer_size()
        if held > self.proxy.peak:
            self.proxy.peak = held
        if not self.paused and (held > self.high or self.sink_paused):
            self.paused = True
            self.source.pause()
        elif self.paused and held <= self.low and not self.sink_paused:
            self.paused = False
            self.source.resume()


class _Side(asyncio.Protocol):
    """One of the two sockets of a proxied connection."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.out: _Direction = None  # type: ignore[assignment]  # what this side sends
        self.into: _Direction = None  # type: ignore[assignment]  # what this side receives
        self.eof_sent = False  # we forwarded the peer's EOF to this side
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.push(_EOF)
        return True  # keep the other half open: the peer may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.lost(self, exc)

    def pause_writing(self) -> None:
        self.into.sink_paused = True
        self.into._balance()

    def resume_writing(self) -> None:
        self.into.sink_paused = False
        self.into._balance()

    def pause(self) -> None:
        if not self.lost:
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self.lost:
            self.transport.resume_reading()


class _Link:
    """A client connection and its upstream connection."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.server = _Side(self)
        self.client.out = self.server.into = _Direction(proxy, self.client)
        self.server.out = self.client.into = _Direction(proxy, self.server)
        self.server.out.sink = self.client
        # client.out.sink stays None until the upstream side connects: chunks wait queued.
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None

    def accepted(self) -> _Side:
        self.proxy.links.add(self)
        self.connecting = self.proxy.loop.create_task(self._connect())
        return self.client

    async def _connect(self) -> None:
        await asyncio.sleep(self.proxy.delay)  # the SYN's trip to the far-away server
        if self.closed:
            return
        try:
            await self.proxy.loop.create_connection(lambda: self.server, *self.proxy.target)
        except OSError:
            if self.client.lost:
                self.close()  # nobody left to tell
            else:
                # Refused upstream: the client sees its connection closed, one trip later.
                self.server.out.push(_CLOSE)
            return
        if self.closed:
            self.server.transport.close()
            return
        self.client.out.sink = self.server
        self.client.out.flush()

    def lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        side.into.clear()  # nothing more can be written to it
        other = self.server if side is self.client else self.client
        if other.lost:
            self.close()  # both gone: nothing left to forward
            return
        # Tell the other side, after the delay and behind whatever is still queued.
        side.out.push(_CLOSE if exc is None else _RESET)

    def close(self, abort: bool = False) -> None:
        """Close both sockets (once)."""
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        for side in (self.client, self.server):
            side.out.clear()
            transport = side.transport
            if transport is not None and not side.lost:
                if abort:
                    transport.abort()
                else:
                    transport.close()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays each direction by ``delay`` seconds.

    Args:
        target: The ``(host, port)`` of the server to forward to (loopback only).
        delay: The one-way delay in seconds (the RTT added is twice this).
        host: The loopback address to listen on.
        port: The port to listen on (0: a free one; see :attr:`port`).
        high_water: Bytes held for one direction before its sender is paused.

    Raises:
        ValueError: A non-loopback address, or a negative delay.
    """

    def __init__(self, target: tuple[str, int], delay: float, *, host: str = "127.0.0.1",
                 port: int = 0, high_water: int = HIGH_WATER) -> None:
        _require_loopback(host, "the listening address (--listen-host)")
        _require_loopback(target[0], "the target host (--target HOST:PORT)")
        if delay < 0:
            raise ValueError(f"the delay must be 0 or more seconds, not {delay}")
        if high_water < 1:
            raise ValueError(f"high_water must be a positive byte count, not {high_water}")
        self.target = target
        self.delay = delay
        self.host = host
        self.high_water = high_water
        self._port = port
        self.links: set[_Link] = set()
        #: The most bytes ever held for one direction (queue plus socket write buffer).
        self.peak = 0
        self._server: asyncio.AbstractServer | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started)."""
        return self._port

    async def start(self) -> int:
        """Start listening; return the port."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Link(self).accepted(), self.host, self._port, backlog=1024)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def close(self) -> None:
        """Stop listening and close every proxied connection."""
        if self._server is not None:
            self._server.close()
            for link in list(self.links):
                link.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LatencyProxy:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


# -- in its own process ---------------------------------------------------------------------


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(target: tuple[str, int], delay: float, port: int, loop_kind: str = "asyncio") -> None:
    """Run a proxy until SIGTERM or SIGINT; print its address first (one flushed line)."""
    loop = _new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    proxy = LatencyProxy(target, delay, port=port)
    stop = asyncio.Event()

    async def main() -> None:
        await proxy.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"listening on 127.0.0.1:{proxy.port} -> {target[0]}:{target[1]}, one-way delay "
              f"{delay * 1e3:g} ms (RTT {2 * delay * 1e3:g} ms), {loop_kind} loop", flush=True)
        await stop.wait()
        await proxy.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@contextmanager
def proxy_process(target_port: int, delay_ms: float, loop_kind: str = "asyncio",
                  target_host: str = "127.0.0.1") -> Iterator[int]:
    """Run a proxy in a child process for the length of a ``with`` block; yield its port."""
    cmd = [sys.executable, os.path.abspath(__file__), "--listen", "0", "--target",
           f"{target_host}:{target_port}", "--delay-ms", str(delay_ms), "--loop", loop_kind]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until it listens (or exits)
        if not line.startswith("listening on 127.0.0.1:"):
            raise RuntimeError(f"the latency proxy did not start (status {proc.wait(10)})")
        yield int(line.split()[2].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- validation -----------------------------------------------------------------------------


@dataclass
class Validation:
    """What one validation run measured."""

    delay_ms: float
    pings: list[float]  # round-trip times through the proxy, in seconds
    base: list[float]  # the same without the proxy (loopback's own round trip)
    direct_mbps: float
    proxied_mbps: float

    @property
    def rtt_ms(self) -> float:
        """The median measured round trip through the proxy, in milliseconds."""
        return statistics.median(self.pings) * 1e3

    @property
    def rtt(self) -> float:
        """The median measured round trip through the proxy, in seconds."""
        return statistics.median(self.pings)

    def line(self) -> str:
        """One Markdown table row."""
        configured = 2 * self.delay_ms
        return (f"| {configured:g} | {self.rtt_ms:.2f} | {self.rtt_ms / configured:.3f} "
                f"| {min(self.pings) * 1e3:.2f} | {max(self.pings) * 1e3:.2f} "
                f"| {statistics.median(self.base) * 1e3:.3f} "
                f"| {self.direct_mbps:,.0f} | {self.proxied_mbps:,.0f} "
                f"| {self.proxied_mbps / self.direct_mbps:.2f} |")


VALIDATION_HEADER = (
    "| RTT configured (ms) | RTT median (ms) | ratio | min | max | direct RTT median (ms) "
    "| direct MB/s | through proxy MB/s | ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _ping(port: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(b"p")
        await reader.readexactly(1)
        times.append(time.perf_counter() - start)
    writer.close()
    await writer.wait_closed()
    return times


async def _throughput(port: int, total: int, done: asyncio.Future[None]) -> float:
    """MB/s of ``total`` bytes written to ``port`` until the sink behind it has them all."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"x" * 65536
    start = time.perf_counter()
    for _ in range(total // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    await done
    elapsed = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    return total / elapsed / 1e6


async def validate_async(delay_ms: float, pings: int = 20, megabytes: int = 64,
                         loop_kind: str = "asyncio") -> Validation:
    """Measure a proxy (in its own process) against a direct connection."""
    total = megabytes * 1024 * 1024 // 65536 * 65536
    waiting: list[asyncio.Future[None]] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while data := await reader.read(1 << 20):
            got += len(data)
            if got >= total and waiting:
                waiting.pop(0).set_result(None)
        writer.close()

    handlers: list[asyncio.Task[None]] = []

    def track(handler: Any) -> Any:
        # Each connection's handler, kept so the run can end only after all have finished.
        def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
            task = asyncio.ensure_future(handler(reader, writer))
            handlers.append(task)
            return task
        return start

    loop = asyncio.get_running_loop()
    echo = await asyncio.start_server(track(_echo), "127.0.0.1", 0)
    bulk = await asyncio.start_server(track(sink), "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    bulk_port = bulk.sockets[0].getsockname()[1]
    try:
        waiting.append(loop.create_future())
        direct = await _throughput(bulk_port, total, waiting[0])
        with proxy_process(echo_port, delay_ms, loop_kind) as port:
            await _ping(port, 2)  # warm-up: the first connection and code paths
            times = await _ping(port, pings)
        with proxy_process(bulk_port, delay_ms, loop_kind) as port:
            waiting.append(loop.create_future())
            proxied = await _throughput(port, total, waiting[0])
        base = await _ping(echo_port, pings)
    finally:
        echo.close()
        bulk.close()
        # The proxies are gone, so every proxied connection has been closed: let each
        # handler see its EOF and end (bounded) instead of being cancelled at exit.
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 10)
    return Validation(delay_ms, times, base, direct, proxied)


def validate(delays_ms: list[float], loop_kind: str = "asyncio") -> list[Validation]:
    """Validate the proxy at each one-way delay; the results, in order."""
    async def main() -> list[Validation]:
        return [await validate_async(d, loop_kind=loop_kind) for d in delays_ms]

    return asyncio.run(main())


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:2525, not {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """The command line: run a proxy, or --validate one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=int, default=0, metavar="PORT",
                        help="port to listen on, on 127.0.0.1 (0: a free one, printed)")
    parser.add_argument("--target", type=_target, metavar="HOST:PORT",
                        help="the server to forward to (loopback only)")
    parser.add_argument("--delay-ms", type=float, default=25.0,
                        help="one-way delay in milliseconds (RTT is twice this; default 25)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of the proxy (default asyncio: its timers are finer)")
    parser.add_argument("--validate", action="store_true",
                        help="measure ping-pong RTT and throughput at 5 ms and 25 ms one-way "
                             "(or at --delay-ms if given) and print them")
    args = parser.parse_args(argv)
    if args.validate:
        given = "--delay-ms" in " ".join(argv if argv is not None else sys.argv)
        delays = [args.delay_ms] if given else [5.0, 25.0]
        print(f"latency proxy validation ({args.loop} loop, proxy in its own process, "
              f"{os.cpu_count()} CPUs)\n\n{VALIDATION_HEADER}")
        for result in validate(delays, args.loop):
            print(result.line())
        return 0
    if args.target is None:
        parser.error("--target HOST:PORT is required (or --validate)")
    try:
        serve(args.target, args.delay_ms / 1e3, args.listen, args.loop)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
