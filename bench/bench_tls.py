"""What TLS costs the pool: STARTTLS+AUTH against plaintext, same server, same run.

One fastsmtp :class:`~fastsmtp.server.SMTPServer` (``Sink`` handler, uvloop, its own
process) offers STARTTLS with a certificate from a throwaway CA (trustme) and AUTH over
TLS. Every client sends the same 1 KB message through 8 connections, each client in its
own process so that its CPU is its own:

* ``plain``: :class:`~fastsmtp.pool.SMTPPool` on uvloop, ``ignore_tls=True``, no login;
* ``tls``: the same pool with STARTTLS and AUTH PLAIN, the certificate verified against
  the CA (``tls={"cafile": ...}``), on uvloop;
* ``tls-asyncio``: the same on asyncio's default event loop (its own TLS implementation,
  ``asyncio.sslproto``, against uvloop's);
* ``aiosmtplib-tls``: 8 aiosmtplib clients on uvloop with STARTTLS and login, each
  sending its share one by one (the Python peer, for scale).

The table gives messages per second, the ratio to ``plain`` (the issue's target:
``tls`` at 0.6x or better) and client CPU per message measured inside the client over
the sending only (TLS handshakes happen before the clock starts: the pool is warmed up
on every connection first). The best of ``--repeat`` interleaved rounds counts.

    PYTHONPATH=src python bench/bench_tls.py [--count N] [--repeat N]

Under pytest, ``test_tls_pool_smoke`` runs each client on a small count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_pool import _cpu, _report, make_message, send_all
from peer_programs import child_env, free_port, start_listening

CONNECTIONS = 8
CLIENTS = ("plain", "tls", "tls-asyncio", "aiosmtplib-tls")
USER, PASSWORD = "bench", "bench-secret"
MAIL_FROM, RCPT_TO = "a@example.com", "b@example.com"
#: Seconds one client run may take before it is killed.
CLIENT_TIMEOUT = 900.0


# -- the server (child process) ------------------------------------------------------------


def _serve(port: int, chain: str, key: str) -> None:
    import uvloop

    from fastsmtp.handlers import Sink
    from fastsmtp.server import SMTPServer, make_server_ssl_context

    def accept(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> bool:
        return True

    async def main() -> None:
        server = SMTPServer(Sink(), "127.0.0.1", port, name="bench.local", max_clients=0,
                            tls_context=make_server_ssl_context(chain, key),
                            enable_auth=True, authenticator=accept)
        await server.start()
        await asyncio.Event().wait()

    uvloop.run(main())


@contextmanager
def tls_server() -> Iterator[tuple[int, str]]:
    """Start the server in its own process; yield ``(port, CA file)``; stop it."""
    import trustme

    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        chain, key, cafile = (str(Path(tmp) / name) for name in ("chain.pem", "key.pem", "ca.pem"))
        Path(chain).write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(key)
        ca.cert_pem.write_to_path(cafile)
        port = free_port()
        cmd = [sys.executable, __file__, "--serve", str(port), chain, key]
        with start_listening(cmd, port, child_env()):
            yield port, cafile


# -- clients (child processes) -------------------------------------------------------------


def _client_pool(kind: str, port: int, count: int, message: bytes, cafile: str) -> dict[str, Any]:
    from fastsmtp.message import Envelope
    from fastsmtp.pool import SMTPPool

    options: dict[str, Any] = {"ignore_tls": True}
    if kind != "plain":
        options = {"require_tls": True, "tls": {"cafile": cafile}, "auth": (USER, PASSWORD)}

    async def main() -> dict[str, Any]:
        envelope = Envelope(MAIL_FROM, [RCPT_TO])
        async with SMTPPool(host="127.0.0.1", port=port, max_connections=CONNECTIONS,
                            max_messages=10**9, **options) as pool:
            # Open (and hand-shake) every connection before the clock starts: what is
            # measured is the cost per message, not per connection.
            warm = [pool.send(message, envelope) for _ in range(CONNECTIONS * 4)]
            await asyncio.gather(*warm)
            start, cpu = time.perf_counter(), _cpu()
            sent, errors, error = await send_all(pool, ((message, envelope) for _ in range(count)))
            return _report(start, cpu, sent, errors, error)

    if kind == "tls-asyncio":
        return asyncio.run(main())
    import uvloop

    return uvloop.run(main())


def _client_aiosmtplib(port: int, count: int, message: bytes, cafile: str) -> dict[str, Any]:
    import ssl

    import aiosmtplib
    import uvloop

    async def main() -> dict[str, Any]:
        context = ssl.create_default_context(cafile=cafile)
        clients = []
        for _ in range(CONNECTIONS):
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                                   tls_context=context)
            await smtp.connect()
            await smtp.login(USER, PASSWORD)
            clients.append(smtp)
        errors = 0
        error = None

        async def worker(smtp: Any, share: int) -> int:
            nonlocal errors, error
            sent = 0
            for _ in range(share):
                try:
                    await smtp.sendmail(MAIL_FROM, [RCPT_TO], message)
                    sent += 1
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors += 1
                    error = error or repr(exc)
            return sent

        shares = [count // CONNECTIONS + (i < count % CONNECTIONS) for i in range(CONNECTIONS)]
        start, cpu = time.perf_counter(), _cpu()
        sent = sum(await asyncio.gather(*(worker(s, n) for s, n in zip(clients, shares))))
        report = _report(start, cpu, sent, errors, error)
        for smtp in clients:
            await smtp.quit()
        return report

    return uvloop.run(main())


def run_client(kind: str, port: int, cafile: str, count: int) -> dict[str, Any]:
    """Run one client in its own process; its report (rate, CPU per message)."""
    with tempfile.NamedTemporaryFile(suffix=".eml") as f:
        f.write(make_message(1024))
        f.flush()
        cmd = [sys.executable, __file__, "--client", kind, str(port), cafile, str(count), f.name]
        done = subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT, env=child_env())
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    report["rate"] = report["sent"] / report["elapsed"]
    report["cpu_us"] = report["cpu"] / max(1, report["sent"]) * 1e6
    return report


def measure(count: int, repeat: int, clients: tuple[str, ...] = CLIENTS) -> dict[str, dict[str, Any]]:
    """The best of ``repeat`` interleaved rounds of every client, against one server."""
    best: dict[str, dict[str, Any]] = {}
    order = list(clients)
    with tls_server() as (port, cafile):
        for _ in range(repeat):
            for kind in order:
                report = run_client(kind, port, cafile, count)
                if report["errors"]:
                    print(f"warning: {kind}: {report['errors']} errors: {report['error']}",
                          file=sys.stderr)
                if kind not in best or report["rate"] > best[kind]["rate"]:
                    best[kind] = report
            order = order[1:] + order[:1]  # a slow phase of the machine hits everyone
    return best


def table(best: dict[str, dict[str, Any]], count: int) -> str:
    """The results as a Markdown table, ratios against ``plain`` of the same run."""
    plain = best.get("plain")
    rows = [f"| client ({count:,} × 1 KB, {CONNECTIONS} connections) | msgs/s | vs plain "
            "| CPU µs/msg | errors |", "|---|---:|---:|---:|---:|"]
    for kind in CLIENTS:
        r = best.get(kind)
        if r is None:
            continue
        ratio = f"{r['rate'] / plain['rate']:.2f}x" if plain else "-"
        rows.append(f"| {kind} | {r['rate']:,.0f} | {ratio} | {r['cpu_us']:.1f} | {r['errors']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Script mode (and the child processes' entry point)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per client (20000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best counts")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return 0
    if args.client:
        kind, port, cafile, count, path = args.client
        message = Path(path).read_bytes()
        if kind == "aiosmtplib-tls":
            report = _client_aiosmtplib(int(port), int(count), message, cafile)
        else:
            report = _client_pool(kind, int(port), int(count), message, cafile)
        print(json.dumps(report))
        return 0
    clients = tuple(c for c in args.clients.split(",") if c)
    best = measure(args.count, args.repeat, clients)
    print(table(best, args.count))
    if "plain" in best and "tls" in best:
        print(f"\ntls / plain: {best['tls']['rate'] / best['plain']['rate']:.2f}x "
              f"(target 0.6x); TLS costs {best['tls']['cpu_us'] - best['plain']['cpu_us']:+.1f} "
              "µs of client CPU per message")
    return 0


def test_tls_pool_smoke() -> None:
    """Every client sends a few messages over STARTTLS (or plaintext) without an error."""
    best = measure(200, 1)
    for kind in CLIENTS:
        assert best[kind]["sent"] == 200 and best[kind]["errors"] == 0, best[kind]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
