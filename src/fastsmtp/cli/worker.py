"""``fastsmtp worker``: a Celery worker on fastsmtp's ready app (``fastsmtp.celery``).

A thin wrapper: its options become the ``FASTSMTP_*`` variables the ready app reads
(:mod:`fastsmtp.celery.ready`), then Celery's own worker runs (prefork pool, the
``fastsmtp`` queue). The SMTP password comes from ``$FASTSMTP_PASSWORD``, never from the
command line.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_worker_parser", "cmd_worker"]


def add_worker_parser(subparsers: Any) -> None:
    """Declare ``fastsmtp worker``."""
    p = subparsers.add_parser(
        "worker", help="run a Celery worker sending fastsmtp's tasks (needs fastsmtp[celery])",
        description="Start a Celery worker on the ready app fastsmtp.celery: it sends the "
        "messages of 'fastsmtp send --celery' (and of your own fastsmtp.send_batch tasks) "
        "exactly once, sharing one rate limit with every other worker.")
    p.add_argument("--broker", required=True, metavar="REDIS-URL",
                   help="the Redis broker (also the message store unless --store)")
    p.add_argument("--server", metavar="URL",
                   help="the SMTP server, smtp[s]://[user@]host:port/?options (default: "
                   "$FASTSMTP_SMTP_URL; password from $FASTSMTP_PASSWORD)")
    p.add_argument("--store", metavar="REDIS-URL", help="the message store (default: the broker)")
    p.add_argument("--rate-limit", type=int, help="messages per --rate-delta for all workers")
    p.add_argument("--rate-delta", type=float, help="rate window in seconds (default: 1)")
    p.add_argument("--connections", type=int, help="SMTP connections per process (default: 5)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="worker processes (default: %(default)s; each has its own pool)")
    p.add_argument("--queue", default="fastsmtp", help="queue (default: %(default)s)")
    p.add_argument("--visibility", type=float,
                   help="seconds before a dead worker's task is given to another "
                   "(default: 3600; longer than the longest batch)")
    p.add_argument("-n", "--hostname", help="node name (Celery's -n)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the worker until it is stopped; return its exit status."""
    if args.concurrency < 1:
        print("fastsmtp worker: --concurrency must be at least 1")
        return 2
    env = {"FASTSMTP_BROKER_URL": args.broker, "FASTSMTP_SMTP_URL": args.server,
           "FASTSMTP_STORE_URL": args.store, "FASTSMTP_QUEUE": args.queue,
           "FASTSMTP_RATE_LIMIT": args.rate_limit, "FASTSMTP_RATE_DELTA": args.rate_delta,
           "FASTSMTP_CONNECTIONS": args.connections, "FASTSMTP_VISIBILITY": args.visibility}
    for name, value in env.items():
        if value is not None:
            os.environ[name] = str(value)
    try:
        import fastsmtp.celery as integration
    except ImportError as exc:
        print(f"fastsmtp worker: {exc}: pip install 'aiofastsmtp[celery]'")
        return 2
    try:
        app = integration.app
    except ValueError as exc:
        print(f"fastsmtp worker: {exc}")
        return 2
    argv = ["worker", "--pool=prefork", f"--concurrency={args.concurrency}", "-Q", args.queue,
            "--loglevel", "DEBUG" if args.verbose > 1 else "INFO"]
    if args.hostname:
        argv += ["-n", args.hostname]
    app.worker_main(argv)
    return 0
