"""Pool throughput and CPU: fastsmtp's SMTPPool against other clients, same sink, same run.

Every client sends the same raw message to one Postfix ``smtp-sink`` (C, discards
everything) through 8 connections, each client in its own process so its CPU can be
measured on its own:

* ``fastsmtp``: :class:`~fastsmtp.pool.SMTPPool` on uvloop with its defaults, fed by
  ``send_many`` (batched: each message's envelope rides in the same write as the previous
  message's dot);
* ``fastsmtp-unbatched``: the same with ``batch_size=1`` (runs of one message: no
  pipelining across messages);
* ``aiosmtplib``: 8 ``SMTP`` clients on uvloop, each sending its share one by one;
* ``smtplib``: 8 threads, one ``smtplib.SMTP`` connection each;
* ``nodemailer``: its pooled transport (``bench/node/pool_bench.js``; needs
  ``npm install`` in ``bench/node``, else skipped with a message);
* ``smtp-source``: Postfix's load generator, ``-s 8 -d`` (8 sessions, connections kept
  open like a pool's): the C limit.

Loads: 20,000 messages of 1 KB and 2,000 of 100 KB. For each client the table gives
messages per second, the ratio to smtp-source and to aiosmtplib, and client CPU (user+sys)
per message: over the sending only (measured inside the client, start-up excluded) and
over the whole client process (``RUSAGE_CHILDREN`` deltas, start-up included). The best
of ``--repeat`` runs counts (the machine is shared; noise only ever slows a run down).

``--memory`` adds a separate run: 1,000,000 messages of 200 bytes offered to
``send_many`` from a generator, with the client's resident memory (VmRSS) sampled as
results come back, to show that memory stays flat however long the stream is.

    PYTHONPATH=src python bench/bench_pool.py [--quick] [--memory] [--repeat N]

Under pytest the ``test_*`` functions run each client on a small count (a smoke test;
``pytest bench --benchmark-disable`` runs each once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer_programs import child_env, program, require, smtp_sink, source_command

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
CONNECTIONS = 8
#: Seconds any one client run may take before it is killed.
CLIENT_TIMEOUT = 900.0
CLIENTS = ("fastsmtp", "fastsmtp-unbatched", "aiosmtplib", "smtplib", "nodemailer", "smtp-source")
MAIL_FROM = "a@example.com"
RCPT_TO = "b@example.com"
#: Targets from issue 4: throughput relative to smtp-source, CPU per 1 KB message.
TARGET_VS_SOURCE = 0.75
TARGET_CPU_US = 40.0


def make_message(size: int, serial: int = 0) -> bytes:
    """A plain RFC 5322 message of exactly ``size`` bytes (CRLF lines of 78 octets)."""
    head = (
        f"From: <{MAIL_FROM}>\r\nTo: <{RCPT_TO}>\r\nSubject: bench {serial}\r\n"
        f"Message-ID: <{serial}.bench@example.com>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body_len = max(0, size - len(head))
    body = line * (body_len // len(line))
    rest = body_len - len(body)
    if rest >= 2:
        body += b"y" * (rest - 2) + b"\r\n"
    elif rest:
        body += b"\r\n"[:rest]
    return head + body


# -- clients (each runs in its own process: python bench_pool.py --client KIND ...) --------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


async def send_all(sender: Any, items: Any) -> tuple[int, int, str | None]:
    """Run ``sender.send_many(items)`` to the end: ``(sent, errors, first error)``."""
    sent = errors = 0
    error = None
    async for _, result in sender.send_many(items):
        if isinstance(result, Exception):
            errors += 1
            error = error or repr(result)
        else:
            sent += 1
    return sent, errors, error


def _report(start: float, cpu: float, sent: int, errors: int, error: str | None) -> dict[str, Any]:
    return {"elapsed": time.perf_counter() - start, "cpu": _cpu() - cpu,
            "sent": sent, "errors": errors, "error": error}


def _client_fastsmtp(port: int, count: int, message: bytes, connections: int,
                     unbatched: bool = False) -> dict[str, Any]:
    import uvloop

    from fastsmtp import pool as pool_module
    from fastsmtp.message import Envelope
    from fastsmtp.pool import SMTPPool

    extra = {"batch_size": 1} if unbatched else {}

    async def main() -> dict[str, Any]:
        envelope = Envelope(MAIL_FROM, [RCPT_TO])
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            max_connections=connections, max_messages=10**9,
                            **extra) as pool:
            start, cpu = time.perf_counter(), _cpu()
            items = ((message, envelope) for _ in range(count))
            sent, errors, error = await send_all(pool, items)
            return _report(start, cpu, sent, errors, error)

    return uvloop.run(main())


def _client_aiosmtplib(port: int, count: int, message: bytes, connections: int) -> dict[str, Any]:
    import aiosmtplib
    import uvloop

    async def main() -> dict[str, Any]:
        outcome: dict[str, Any] = {"sent": 0, "errors": 0, "error": None}

        async def worker(share: int) -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False,
                                   start_tls=False)
            await smtp.connect()
            try:
                for _ in range(share):
                    try:
                        await smtp.sendmail(MAIL_FROM, [RCPT_TO], message)
                        outcome["sent"] += 1
                    except aiosmtplib.SMTPException as exc:
                        outcome["errors"] += 1
                        outcome["error"] = outcome["error"] or repr(exc)
            finally:
                await smtp.quit()

        start, cpu = time.perf_counter(), _cpu()
        shares = [count // connections + (i < count % connections) for i in range(connections)]
        await asyncio.gather(*(worker(n) for n in shares if n))
        return _report(start, cpu, outcome["sent"], outcome["errors"], outcome["error"])

    return uvloop.run(main())


def _client_smtplib(port: int, count: int, message: bytes, connections: int) -> dict[str, Any]:
    import smtplib

    outcome: dict[str, Any] = {"sent": 0, "errors": 0, "error": None}
    lock = threading.Lock()

    def worker(share: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            for _ in range(share):
                try:
                    smtp.sendmail(MAIL_FROM, [RCPT_TO], message)
                    ok = True
                except smtplib.SMTPException as exc:
                    ok = False
                    err = repr(exc)
                with lock:
                    if ok:
                        outcome["sent"] += 1
                    else:
                        outcome["errors"] += 1
                        outcome["error"] = outcome["error"] or err

    start, cpu = time.perf_counter(), _cpu()
    shares = [count // connections + (i < count % connections) for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in shares if n]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _report(start, cpu, outcome["sent"], outcome["errors"], outcome["error"])


def _vmrss(field: bytes = b"VmRSS:") -> int:
    """This process's resident set (or ``VmHWM:``, its peak) in bytes, from /proc."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _client_memory(port: int, count: int, size: int, connections: int,
                   unbatched: bool) -> dict[str, Any]:
    """Offer ``count`` distinct messages to send_many from a generator; sample VmRSS."""
    import uvloop

    from fastsmtp import pool as pool_module
    from fastsmtp.message import Envelope
    from fastsmtp.pool import SMTPPool

    extra = {"batch_size": 1} if unbatched else {}

    template = make_message(size)

    def generate() -> Iterator[tuple[bytes, Envelope]]:
        envelope = Envelope(MAIL_FROM, [RCPT_TO])
        for i in range(count):
            # A fresh bytes object per message, as a real producer would make.
            yield template[:-12] + b"%010d\r\n" % i, envelope

    async def main() -> dict[str, Any]:
        every = max(1, count // 100)
        samples: list[tuple[int, int]] = [(0, _vmrss())]
        sent = errors = 0
        error = None
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            max_connections=connections, max_messages=10**9,
                            **extra) as pool:
            start, cpu = time.perf_counter(), _cpu()
            done = 0
            async for _, result in pool.send_many(generate()):
                done += 1
                if isinstance(result, Exception):
                    errors += 1
                    error = error or repr(result)
                else:
                    sent += 1
                if done % every == 0:
                    samples.append((done, _vmrss()))
            report = _report(start, cpu, sent, errors, error)
        report["samples"] = samples
        report["maxrss"] = _vmrss(b"VmHWM:")
        return report

    return uvloop.run(main())


def _client_fastsmtp_unbatched(port: int, count: int, message: bytes,
                           connections: int) -> dict[str, Any]:
    return _client_fastsmtp(port, count, message, connections, unbatched=True)


_PY_CLIENTS = {"fastsmtp": _client_fastsmtp, "fastsmtp-unbatched": _client_fastsmtp_unbatched,
               "aiosmtplib": _client_aiosmtplib, "smtplib": _client_smtplib}


# -- the parent: run each client in a child process and measure it -------------------------


@dataclass
class Result:
    """One client run."""

    client: str
    count: int
    elapsed: float  # seconds of sending (the whole run for smtp-source)
    cpu_send: float  # client CPU seconds while sending
    cpu_process: float  # client CPU seconds of the whole process
    sent: int
    errors: int
    error: str | None = None
    extra: dict[str, Any] | None = None

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.count / self.elapsed

    def cpu_us(self, whole: bool = False) -> float:
        """Client CPU per message in microseconds."""
        return (self.cpu_process if whole else self.cpu_send) / self.count * 1e6


def node_ready() -> str | None:
    """Why nodemailer cannot run (None when it can)."""
    if program("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "nodemailer").is_dir():
        return f"nodemailer is not installed: run `npm install` in {NODE_DIR}"
    return None


def client_command(kind: str, port: int, count: int, message_file: str,
                   connections: int = CONNECTIONS, size: int = 0) -> list[str]:
    """The command line that runs one client."""
    if kind == "smtp-source":
        return source_command(port, count, size, connections, keep_open=True)
    if kind == "nodemailer":
        return [program("node") or "node", str(NODE_DIR / "pool_bench.js"), str(port),
                str(count), message_file, str(connections)]
    return [sys.executable, __file__, "--client", kind, str(port), str(count), message_file,
            str(connections)]


def run_client(kind: str, port: int, count: int, size: int,
               connections: int = CONNECTIONS, message_file: str | None = None) -> Result:
    """Run one client to completion in a child process and measure it.

    Raises:
        RuntimeError: The client failed (non-zero exit or unparsable output).
    """
    with tempfile.TemporaryDirectory() as tmp:
        if message_file is None:
            message_file = str(Path(tmp) / "message.eml")
            Path(message_file).write_bytes(make_message(size))
        cmd = client_command(kind, port, count, message_file, connections, size)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT,
                              env=child_env(), cwd=str(NODE_DIR) if kind == "nodemailer" else None)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_process = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed ({done.returncode}): {stderr[-2000:]}")
    if kind == "smtp-source":
        if stderr:
            raise RuntimeError(f"smtp-source failed: {stderr[-2000:]}")
        return Result(kind, count, wall, cpu_process, cpu_process, count, 0)
    try:
        out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{kind} printed no result: {stderr[-2000:]}") from None
    extra = {k: v for k, v in out.items()
             if k not in ("elapsed", "cpu", "sent", "errors", "error")}
    return Result(kind, count, out["elapsed"], out["cpu"], cpu_process, out["sent"],
                  out["errors"], out.get("error"), extra or None)


def measure(loads: list[tuple[str, int, int]], clients: list[str], repeat: int,
            ) -> dict[str, dict[str, Result]]:
    """Every load through every client, to one smtp-sink; the best of ``repeat`` runs."""
    best: dict[str, dict[str, Result]] = {label: {} for label, _, _ in loads}
    with smtp_sink() as port:
        run_client("smtp-source", port, 500, 1024)  # warm-up: first connections, caches
        for _ in range(repeat):
            for label, count, size in loads:
                # Rotating the order spreads any slow phase of the machine over everyone.
                for kind in clients:
                    result = run_client(kind, port, count, size)
                    if result.errors:
                        print(f"warning: {kind} had {result.errors} errors: {result.error}",
                              file=sys.stderr)
                    old = best[label].get(kind)
                    if old is None or result.rate > old.rate:
                        best[label][kind] = result
                clients = clients[1:] + clients[:1]
    return best


def table(results: dict[str, dict[str, Result]], loads: list[tuple[str, int, int]]) -> str:
    """The results as a Markdown table."""
    rows = [
        "| load | client | msgs/s | vs smtp-source | vs aiosmtplib | CPU µs/msg (sending) "
        "| CPU µs/msg (process) | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, count, _ in loads:
        by = results[label]
        source = by.get("smtp-source")
        aio = by.get("aiosmtplib")
        for kind in CLIENTS:
            r = by.get(kind)
            if r is None:
                continue
            vs_source = f"{r.rate / source.rate:.2f}x" if source else "-"
            vs_aio = f"{r.rate / aio.rate:.2f}x" if aio else "-"
            rows.append(
                f"| {label} ({count}) | {kind} | {r.rate:,.0f} | {vs_source} | {vs_aio} "
                f"| {r.cpu_us():.1f} | {r.cpu_us(True):.1f} | {r.errors} |"
            )
    return "\n".join(rows)


def memory_run(count: int, size: int = 200, unbatched: bool = False) -> Result:
    """The flat-memory run: ``count`` messages through send_many, RSS sampled."""
    with smtp_sink() as port:
        cmd = [sys.executable, __file__, "--memory-client", str(port), str(count), str(size),
               str(CONNECTIONS), str(int(unbatched))]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT * 4, env=child_env())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"memory client failed: {done.stderr.decode(errors='replace')[-2000:]}")
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    cpu_process = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result("fastsmtp-unbatched" if unbatched else "fastsmtp", count, out["elapsed"], out["cpu"],
                  cpu_process, out["sent"], out["errors"], out.get("error"),
                  {"samples": out["samples"], "maxrss": out["maxrss"]})


def memory_table(result: Result) -> str:
    """RSS at 10%, 50% and 100% of the stream, as a Markdown table."""
    assert result.extra is not None
    samples = result.extra["samples"]
    mib = 1024 * 1024
    rows = ["| messages sent | share | VmRSS (MiB) |", "|---:|---:|---:|"]
    rows.append(f"| 0 | start | {samples[0][1] / mib:.1f} |")
    for share in (0.1, 0.5, 1.0):
        goal = int(result.count * share)
        done, rss = min(samples[1:], key=lambda s: abs(s[0] - goal))
        rows.append(f"| {done:,} | {share:.0%} | {rss / mib:.1f} |")
    rows.append(f"| peak (VmHWM) | | {result.extra['maxrss'] / mib:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Script mode: print the throughput/CPU table (and the memory table with --memory)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--memory", action="store_true",
                        help="also the flat-memory run (1,000,000 messages; 100,000 quick)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per client and load, best counts (default 3, quick 1)")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help="comma-separated subset of " + ",".join(CLIENTS))
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--memory-client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        kind, port, count, path, conns = args.client
        report = _PY_CLIENTS[kind](int(port), int(count), Path(path).read_bytes(), int(conns))
        print(json.dumps(report))
        return 0
    if args.memory_client:
        port, count, size, conns, unbatched = (int(v) for v in args.memory_client)
        print(json.dumps(_client_memory(port, count, size, conns, bool(unbatched))))
        return 0

    from fastsmtp._codec import IMPLEMENTATION

    scale = 10 if args.quick else 1
    repeat = args.repeat or (1 if args.quick else 3)
    loads = [("1 KB", 20000 // scale, 1024), ("100 KB", 2000 // scale, 100 * 1024)]
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    reason = node_ready() if "nodemailer" in clients else None
    if reason is not None:
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            print(f"error: {reason}", file=sys.stderr)
            return 1
        print(f"skipping nodemailer: {reason}", file=sys.stderr)
        clients.remove("nodemailer")
    print(f"{CONNECTIONS} connections to smtp-sink, fastsmtp core: {IMPLEMENTATION}, "
          f"{os.cpu_count()} CPUs, best of {repeat}\n")
    if not args.memory_only:
        results = measure(loads, clients, repeat)
        print(table(results, loads))
        source = results["1 KB"].get("smtp-source")
        print()
        for kind in ("fastsmtp", "fastsmtp-unbatched"):
            pool = results["1 KB"].get(kind)
            if pool is None or source is None:
                continue
            ratio, cpu = pool.rate / source.rate, pool.cpu_us()
            met_rate = "met" if ratio >= TARGET_VS_SOURCE else "MISSED"
            met_cpu = "met" if cpu <= TARGET_CPU_US else "MISSED"
            print(f"targets (1 KB, {kind}): {ratio:.2f}x smtp-source "
                  f"(goal {TARGET_VS_SOURCE}x): {met_rate}; "
                  f"{cpu:.1f} µs CPU/msg (goal {TARGET_CPU_US:.0f}): {met_cpu}")
    if args.memory or args.memory_only:
        count = 1_000_000 // scale
        for unbatched in (False, True):
            result = memory_run(count, unbatched=unbatched)
            print(f"\nmemory, {result.client}: {count:,} messages of 200 bytes through "
                  f"send_many from a generator ({result.rate:,.0f} msgs/s, "
                  f"{result.cpu_us():.1f} µs CPU/msg, {result.errors} errors)\n")
            print(memory_table(result))
    return 0


# -- pytest-benchmark entries (small counts: a smoke test of the whole set-up) --------------

SMOKE_COUNT = 200


def _smoke(benchmark: Any, kind: str, count: int, size: int) -> None:
    require("smtp-sink", "smtp-source")
    if kind == "nodemailer":
        reason = node_ready()
        if reason is not None:
            import pytest

            if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
    with smtp_sink() as port:
        result = benchmark.pedantic(run_client, args=(kind, port, count, size), rounds=1,
                                    iterations=1)
    if result is not None:  # None under --benchmark-disable with some plugin versions
        assert (result.sent, result.errors) == (count, 0), result.error


def test_pool_fastsmtp_1k(benchmark: Any) -> None:
    """fastsmtp SMTPPool, 200 x 1 KB."""
    _smoke(benchmark, "fastsmtp", SMOKE_COUNT, 1024)


def test_pool_fastsmtp_100k(benchmark: Any) -> None:
    """fastsmtp SMTPPool, 20 x 100 KB."""
    _smoke(benchmark, "fastsmtp", 20, 100 * 1024)


def test_pool_fastsmtp_unbatched_1k(benchmark: Any) -> None:
    """fastsmtp SMTPPool with batch_size=1 (runs of one message), 200 x 1 KB."""
    _smoke(benchmark, "fastsmtp-unbatched", SMOKE_COUNT, 1024)


def test_pool_aiosmtplib_1k(benchmark: Any) -> None:
    """aiosmtplib on 8 connections, 200 x 1 KB."""
    _smoke(benchmark, "aiosmtplib", SMOKE_COUNT, 1024)


def test_pool_smtplib_1k(benchmark: Any) -> None:
    """smtplib on 8 threads, 200 x 1 KB."""
    _smoke(benchmark, "smtplib", SMOKE_COUNT, 1024)


def test_pool_nodemailer_1k(benchmark: Any) -> None:
    """nodemailer's pool, 200 x 1 KB."""
    _smoke(benchmark, "nodemailer", SMOKE_COUNT, 1024)


def test_pool_smtp_source_1k(benchmark: Any) -> None:
    """smtp-source -s 8 -d, 200 x 1 KB."""
    _smoke(benchmark, "smtp-source", SMOKE_COUNT, 1024)


def test_pool_memory_smoke() -> None:
    """The flat-memory run on 2,000 messages: every message sent, RSS sampled."""
    require("smtp-sink")
    result = memory_run(2000)
    assert (result.sent, result.errors) == (2000, 0), result.error
    assert result.extra is not None and len(result.extra["samples"]) == 101


if __name__ == "__main__":
    raise SystemExit(main())
