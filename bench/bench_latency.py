"""A far-away server: fastsmtp and its peers through the latency proxy, RTT 10 and 50 ms.

Every client sends 1 KB messages through :mod:`latency_proxy` (its own process, a fixed
one-way delay each way) to one of two servers, each in its own process:

* ``fastsmtp``: :class:`fastsmtp.server.SMTPServer` with the ``Sink`` handler
  (``bench_server.py --serve fastsmtp``); it offers whatever the server offers
  (CHUNKING once the server has it);
* ``smtp-sink``: Postfix's C sink (PIPELINING, no CHUNKING).

Clients, each in its own process, all in the same run, interleaved:

* ``fastsmtp 1 conn``: one :class:`~fastsmtp.connection.SMTPConnection`, ``send_many``;
* ``fastsmtp pool``: :class:`~fastsmtp.pool.SMTPPool`, 8 connections, ``send_many``;
* ``fastsmtp pool (DATA)``: the same with ``chunking=False`` (only when the client has that
  option, and left out under ``--no-chunking``, where it would repeat the row above);
* ``nodemailer pool``: its pooled transport, 8 connections (``bench/node/pool_bench.js``);
* ``aiosmtplib x8``: 8 concurrent ``aiosmtplib.SMTP`` clients;
* ``smtplib x8``: 8 threads, one ``smtplib.SMTP`` each;
* ``smtp-source``: Postfix's load generator, ``-s 8 -d``.

The fastsmtp client uses whatever it negotiates with the server (BDAT when both sides
have CHUNKING); ``--no-chunking`` passes ``chunking=False`` to it when its options have
that field (else the flag is reported as not applicable and changes nothing).

**Limits.** With DATA a connection waits for the 354 before each body, so no client can
do better than one message per round trip per connection: the *DATA limit* is
``connections / RTT`` msgs/s, with the RTT measured through the proxy (ping-pong median,
printed with the validation). Each client's *own limit* follows from the round trips its
design waits for per message on a kept-open connection: fastsmtp over DATA 1 (MAIL, RCPT
and DATA pipelined behind the previous message's dot, then the 354 and the dot's reply);
over BDAT ``1 / pipeline_window`` (whole transactions pipelined; the window bounds
them); nodemailer 2; aiosmtplib, smtplib and smtp-source 4 (MAIL, RCPT, DATA and the
body each wait for a reply). The table gives msgs/s, the percentage of the DATA limit,
the round trips each message cost per connection as measured
(``connections / (rate x RTT)``), and the percentage of the client's own limit. Times
include connection set-up (a few RTT, a few percent of a run).

**Counts.** Each run is sized to last about ``--seconds`` (default 4) at the client's own
limit; a run that ends in under half of that is run again with its count scaled up (so a
client faster than its assumed limit is still measured over seconds).

    PYTHONPATH=src python bench/bench_latency.py [--rtt 10,50] [--seconds 4] [--repeat 1]
        [--no-chunking] [--clients ...] [--servers fastsmtp,smtp-sink]

Under pytest the ``test_*`` functions send a few messages through each client to each
server at RTT 10 ms (a smoke test; ``pytest bench --benchmark-disable``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import smtplib
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_pool import (
    CLIENT_TIMEOUT,
    MAIL_FROM,
    RCPT_TO,
    Result,
    _cpu,
    _report,
    make_message,
    node_ready,
    run_client,
    send_all,
)
from bench_server import sink as server_process
from latency_proxy import VALIDATION_HEADER, Validation, proxy_process, validate_async
from peer_programs import child_env, program, require, run_source

CONNECTIONS = 8
SIZE = 1024
RTTS_MS = (10.0, 50.0)
SERVERS = ("fastsmtp", "smtp-sink")
#: label -> (how it runs, connections)
CLIENTS: dict[str, tuple[str, int]] = {
    "fastsmtp 1 conn": ("fastsmtp", 1),
    "fastsmtp pool": ("fastsmtp", CONNECTIONS),
    "fastsmtp pool (DATA)": ("fastsmtp-data", CONNECTIONS),
    "nodemailer pool": ("nodemailer", CONNECTIONS),
    "aiosmtplib x8": ("aiosmtplib", CONNECTIONS),
    "smtplib x8": ("smtplib", CONNECTIONS),
    "smtp-source -s 8 -d": ("smtp-source", CONNECTIONS),
}
#: Round trips per message each peer's design waits for (fastsmtp's depends on BDAT).
DESIGN_RTTS = {"fastsmtp-data": 1.0, "nodemailer": 2.0, "aiosmtplib": 4.0, "smtplib": 4.0, "smtp-source": 4.0}
#: Most messages in one run, however fast a client is.
MAX_COUNT = 100_000
#: The issue's target: fastsmtp pool / nodemailer pool at RTT 50 ms, fastsmtp's server.
TARGET_VS_NODEMAILER = 10.0


# -- fastsmtp's options, found at run time (CHUNKING is being written in parallel) ----------


def client_fields() -> dict[str, Any]:
    """The client's option fields and their defaults (ConnectionOptions, PoolOptions)."""
    from fastsmtp.options import ConnectionOptions, PoolOptions

    fields: dict[str, Any] = {}
    for cls in (ConnectionOptions, PoolOptions):
        for f in dataclasses.fields(cls):
            if f.init:
                fields[f.name] = f.default
    return fields


def server_offers_chunking(port: int) -> bool:
    """Whether the server on 127.0.0.1:``port`` lists CHUNKING in its EHLO reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("bench.local")
        return bool(smtp.has_extn("chunking"))


@dataclass
class Mode:
    """How the fastsmtp client talks to one server."""

    bdat: bool  # BDAT is used: the client has the option on and the server offers it
    window: float  # transactions in flight per connection (1 over DATA)
    note: str

    @property
    def rtts(self) -> float:
        """Round trips per message per connection the client's design waits for."""
        return 1.0 / self.window if self.bdat else 1.0


def fastsmtp_mode(server_port: int, no_chunking: bool) -> Mode:
    """What the fastsmtp client will negotiate with this server."""
    fields = client_fields()
    has_option = "chunking" in fields
    offered = server_offers_chunking(server_port)
    if not has_option:
        return Mode(False, 1, "DATA (this fastsmtp has no chunking option)")
    if no_chunking:
        return Mode(False, 1, "DATA (--no-chunking: chunking=False)")
    if not fields["chunking"]:
        return Mode(False, 1, "DATA (chunking is off by default)")
    if not offered:
        return Mode(False, 1, "DATA (the server does not offer CHUNKING)")
    window = fields.get("pipeline_window")
    if not isinstance(window, int) or window < 1:
        return Mode(True, 1, "BDAT (pipeline window unknown: counted as 1)")
    return Mode(True, window, f"BDAT, pipeline_window={window}")


# -- the fastsmtp clients (each in its own process) -----------------------------------------


def _client_fastsmtp(port: int, count: int, message: bytes, connections: int,
                     chunking: str) -> dict[str, Any]:
    import uvloop

    from fastsmtp.connection import SMTPConnection
    from fastsmtp.message import Envelope
    from fastsmtp.pool import SMTPPool

    extra: dict[str, Any] = {} if chunking == "default" else {"chunking": chunking == "on"}

    async def main() -> dict[str, Any]:
        envelope = Envelope(MAIL_FROM, [RCPT_TO])
        items = ((message, envelope) for _ in range(count))
        # The clock starts before connecting: every client's time includes its set-up.
        start, cpu = time.perf_counter(), _cpu()
        if connections == 1:
            sender: Any = SMTPConnection("127.0.0.1", port, name="bench.local",
                                         ignore_tls=True, **extra)
        else:
            sender = SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                              max_connections=connections, max_messages=10**9, **extra)
        async with sender:
            sent, errors, error = await send_all(sender, items)
            return _report(start, cpu, sent, errors, error)

    return uvloop.run(main())


def run_fastsmtp(port: int, count: int, connections: int, chunking: str,
                 message_file: str) -> Result:
    """Run the fastsmtp client in a child process; measure it like bench_pool's clients."""
    cmd = [sys.executable, __file__, "--client", str(port), str(count), message_file,
           str(connections), chunking]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT, env=child_env())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        raise RuntimeError(f"fastsmtp failed ({done.returncode}): {stderr[-2000:]}")
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    cpu_process = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result("fastsmtp", count, out["elapsed"], out["cpu"], cpu_process, out["sent"],
                  out["errors"], out.get("error"))


def run_one(label: str, port: int, count: int, chunking: str, message_file: str) -> Result:
    """Send ``count`` messages with client ``label`` to 127.0.0.1:``port``."""
    kind, connections = CLIENTS[label]
    if kind == "fastsmtp":
        return run_fastsmtp(port, count, connections, chunking, message_file)
    if kind == "fastsmtp-data":
        return run_fastsmtp(port, count, connections, "off", message_file)
    return run_client(kind, port, count, SIZE, connections, message_file)


# -- the parent ---------------------------------------------------------------------------


@dataclass
class Row:
    """One client against one server at one RTT."""

    server: str
    label: str
    connections: int
    rtt: float  # measured through the proxy, seconds
    design_rtts: float  # round trips per message per connection the client waits for
    result: Result

    @property
    def data_limit(self) -> float:
        """msgs/s with one message per RTT per connection."""
        return self.connections / self.rtt

    @property
    def measured_rtts(self) -> float:
        """Round trips each message cost its connection, as measured."""
        return self.connections / (self.result.rate * self.rtt)

    def line(self) -> str:
        """One Markdown table row."""
        r = self.result
        own = self.data_limit / self.design_rtts
        return (f"| {self.server} | {self.label} | {self.connections} | {r.count:,} "
                f"| {r.rate:,.0f} | {r.rate / self.data_limit:.0%} | {self.measured_rtts:.2f} "
                f"| {self.design_rtts:g} | {r.rate / own:.0%} | {r.errors} |")


HEADER = ("| server | client | conns | msgs | msgs/s | % of DATA limit | RTT/msg/conn (measured) "
          "| RTT/msg/conn (design) | % of own limit | errors |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def sized_count(rate: float, seconds: float, connections: int) -> int:
    """Messages for a run of about ``seconds`` at ``rate`` msgs/s (bounded)."""
    return max(2 * connections, min(MAX_COUNT, int(rate * seconds)))


def measure_client(label: str, server: str, port: int, rtt: float, design: float,
                   seconds: float, chunking: str, message_file: str) -> Row:
    """One measurement, sized to last about ``seconds`` (re-run once if far shorter)."""
    connections = CLIENTS[label][1]
    count = sized_count(connections / (rtt * design), seconds, connections)
    result = run_one(label, port, count, chunking, message_file)
    if result.elapsed < seconds / 2 and count < MAX_COUNT:
        count = sized_count(result.rate, seconds, connections)
        result = run_one(label, port, count, chunking, message_file)
    if result.errors:
        print(f"warning: {label} -> {server}: {result.errors} errors: {result.error}",
              file=sys.stderr)
    return Row(server, label, connections, rtt, design, result)


def measure_rtt(rtt_ms: float, ports: dict[str, int], modes: dict[str, Mode], clients: list[str],
                seconds: float, repeat: int, chunking: str, message_file: str,
                loop_kind: str) -> tuple[Validation, list[Row]]:
    """Every client against every server through proxies at ``rtt_ms``; best of ``repeat``."""
    delay_ms = rtt_ms / 2
    validation = asyncio.run(validate_async(delay_ms, loop_kind=loop_kind))
    rtt = validation.rtt
    best: dict[tuple[str, str], Row] = {}
    with ExitStack() as stack:
        proxied = {server: stack.enter_context(proxy_process(port, delay_ms, loop_kind))
                   for server, port in ports.items()}
        for _ in range(repeat):
            for server, port in proxied.items():
                for label in clients:
                    kind = CLIENTS[label][0]
                    design = modes[server].rtts if kind == "fastsmtp" else DESIGN_RTTS[kind]
                    row = measure_client(label, server, port, rtt, design, seconds, chunking,
                                         message_file)
                    old = best.get((server, label))
                    if old is None or row.result.rate > old.result.rate:
                        best[(server, label)] = row
                # Rotating the order spreads a slow phase of the machine over everyone.
                clients = clients[1:] + clients[:1]
    rows = [best[(server, label)] for server in ports for label in CLIENTS
            if (server, label) in best]
    return validation, rows


def main(argv: list[str] | None = None) -> int:
    """Script mode: validate the proxy, then print one table per RTT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", default=",".join(f"{r:g}" for r in RTTS_MS),
                        help="comma-separated round-trip times in ms (default 10,50)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="about how long each run lasts (default 4)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved rounds; the best of them counts (default 1)")
    parser.add_argument("--no-chunking", action="store_true",
                        help="pass chunking=False to fastsmtp's client (when it has the option)")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the proxy's event loop (default asyncio)")
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        port, count, path, conns, chunking = args.client
        report = _client_fastsmtp(int(port), int(count), Path(path).read_bytes(), int(conns),
                                  chunking)
        print(json.dumps(report))
        return 0

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = (set(clients) - set(CLIENTS)) | (set(servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown clients or servers: {', '.join(sorted(unknown))}; "
                     f"clients are {', '.join(CLIENTS)}; servers are {', '.join(SERVERS)}")
    try:
        rtts = [float(r) for r in args.rtt.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rtt takes milliseconds separated by commas, such as 10,50, "
                     f"not {args.rtt!r}")
    missing = [p for p in ("smtp-source", "smtp-sink") if program(p) is None]
    if missing:
        print(f"error: {', '.join(missing)} not installed (Debian: apt-get install postfix)",
              file=sys.stderr)
        return 1
    if "nodemailer pool" in clients and (reason := node_ready()) is not None:
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            print(f"error: {reason}", file=sys.stderr)
            return 1
        print(f"skipping nodemailer: {reason}", file=sys.stderr)
        clients.remove("nodemailer pool")

    from fastsmtp._codec import IMPLEMENTATION

    has_option = "chunking" in client_fields()
    chunking = "off" if args.no_chunking and has_option else "default"
    if (not has_option or args.no_chunking) and "fastsmtp pool (DATA)" in clients:
        clients.remove("fastsmtp pool (DATA)")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        message_file = str(Path(tmp) / "message.eml")
        Path(message_file).write_bytes(make_message(SIZE))
        ports = {server: stack.enter_context(server_process(server)) for server in servers}
        for port in ports.values():
            run_source(port, 200, SIZE, CONNECTIONS, keep_open=True)  # warm-up, direct
        modes = {server: fastsmtp_mode(port, args.no_chunking) for server, port in ports.items()}
        print(f"1 KB messages through bench/latency_proxy.py ({args.loop} loop, own process); "
              f"fastsmtp core: {IMPLEMENTATION}; {os.cpu_count()} CPUs; "
              f"runs of about {args.seconds:g} s, best of {args.repeat}")
        if args.no_chunking and not has_option:
            print("--no-chunking: not applicable, this fastsmtp client has no chunking option")
        for server, mode in modes.items():
            print(f"fastsmtp client -> {server}: {mode.note}")
        results = []
        for rtt_ms in rtts:
            validation, rows = measure_rtt(rtt_ms, ports, modes, clients, args.seconds,
                                           args.repeat, chunking, message_file, args.loop)
            results.append((rtt_ms, validation, rows))
            print(f"\n### RTT {rtt_ms:g} ms (measured through the proxy: "
                  f"{validation.rtt_ms:.2f} ms median; DATA limit {CONNECTIONS} conns: "
                  f"{CONNECTIONS / validation.rtt:,.0f} msgs/s, 1 conn: "
                  f"{1 / validation.rtt:,.0f} msgs/s)\n")
            print(HEADER)
            for row in rows:
                print(row.line())
            ratio_line(rtt_ms, rows)
        print("\nproxy validation (ping-pong through the proxy vs configured; bulk "
              f"throughput through it vs direct)\n\n{VALIDATION_HEADER}")
        for _, validation, _ in results:
            print(validation.line())
    return 0


def ratio_line(rtt_ms: float, rows: list[Row]) -> None:
    """Print fastsmtp pool / nodemailer pool against each server (the target at 50 ms)."""
    by = {(r.server, r.label): r.result.rate for r in rows}
    for server in SERVERS:
        pool, node = by.get((server, "fastsmtp pool")), by.get((server, "nodemailer pool"))
        if pool is None or node is None:
            continue
        line = f"\nfastsmtp pool / nodemailer pool, {server}, RTT {rtt_ms:g} ms: {pool / node:.2f}x"
        if server == "fastsmtp" and rtt_ms == 50:
            ratio = pool / node
            verdict = ("met" if ratio >= TARGET_VS_NODEMAILER else
                       f"MISSED by {TARGET_VS_NODEMAILER / ratio:.1f}x")
            line += f" (target {TARGET_VS_NODEMAILER:g}x: {verdict})"
        print(line)


# -- pytest-benchmark entries (tiny counts: a smoke test of the whole set-up) ---------------

SMOKE_COUNT = 16
SMOKE_DELAY_MS = 5.0  # RTT 10 ms


def _smoke(benchmark: Any, label: str, server: str) -> None:
    import pytest

    require("smtp-sink", "smtp-source")
    if CLIENTS[label][0] == "nodemailer" and (reason := node_ready()) is not None:
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory() as tmp, server_process(server) as port, \
            proxy_process(port, SMOKE_DELAY_MS) as proxied:
        message_file = str(Path(tmp) / "message.eml")
        Path(message_file).write_bytes(make_message(SIZE))
        result = benchmark.pedantic(run_one, args=(label, proxied, SMOKE_COUNT, "default",
                                                   message_file), rounds=1, iterations=1)
    if result is not None:  # None under --benchmark-disable with some plugin versions
        assert (result.sent, result.errors) == (SMOKE_COUNT, 0), result.error
        # The proxy was in the path: no session can end in less than one round trip
        # (a lower bound on time only).
        assert result.elapsed >= SMOKE_DELAY_MS * 2 / 1e3


def test_latency_fastsmtp_one_connection(benchmark: Any) -> None:
    """fastsmtp SMTPConnection.send_many through the proxy to fastsmtp's server."""
    _smoke(benchmark, "fastsmtp 1 conn", "fastsmtp")


def test_latency_fastsmtp_pool(benchmark: Any) -> None:
    """fastsmtp SMTPPool through the proxy to fastsmtp's server."""
    _smoke(benchmark, "fastsmtp pool", "fastsmtp")


def test_latency_fastsmtp_pool_data(benchmark: Any) -> None:
    """fastsmtp SMTPPool with chunking=False through the proxy to fastsmtp's server."""
    if "chunking" not in client_fields():
        import pytest

        pytest.skip("this fastsmtp client has no chunking option")
    _smoke(benchmark, "fastsmtp pool (DATA)", "fastsmtp")


def test_latency_fastsmtp_pool_smtp_sink(benchmark: Any) -> None:
    """fastsmtp SMTPPool through the proxy to smtp-sink."""
    _smoke(benchmark, "fastsmtp pool", "smtp-sink")


def test_latency_nodemailer(benchmark: Any) -> None:
    """nodemailer's pool through the proxy to fastsmtp's server."""
    _smoke(benchmark, "nodemailer pool", "fastsmtp")


def test_latency_aiosmtplib(benchmark: Any) -> None:
    """8 aiosmtplib clients through the proxy to fastsmtp's server."""
    _smoke(benchmark, "aiosmtplib x8", "fastsmtp")


def test_latency_smtplib(benchmark: Any) -> None:
    """smtplib in 8 threads through the proxy to smtp-sink."""
    _smoke(benchmark, "smtplib x8", "smtp-sink")


def test_latency_smtp_source(benchmark: Any) -> None:
    """smtp-source -s 8 -d through the proxy to fastsmtp's server."""
    _smoke(benchmark, "smtp-source -s 8 -d", "fastsmtp")


def test_latency_mode_is_found_at_run_time() -> None:
    """The fastsmtp client's mode against each server is worked out without error."""
    require("smtp-sink")
    for server in SERVERS:
        with server_process(server) as port:
            mode = fastsmtp_mode(port, no_chunking=True)
            assert not mode.bdat and mode.rtts == 1
            if server == "smtp-sink":
                assert not fastsmtp_mode(port, no_chunking=False).bdat  # no CHUNKING there


def test_latency_proxy_validation() -> None:
    """The validation measures a round trip at least as long as the configured one."""
    result = asyncio.run(validate_async(SMOKE_DELAY_MS, pings=5, megabytes=4))
    assert len(result.pings) == 5
    assert min(result.pings) >= SMOKE_DELAY_MS * 2 / 1e3
    assert result.direct_mbps > 0 and result.proxied_mbps > 0


if __name__ == "__main__":
    raise SystemExit(main())
