"""``fastsmtp serve``: a local SMTP server delivering into a Maildir (or printing).

With ``--users`` it requires AUTH, checked against a file of ``user:password`` lines by
:class:`UsersAuthenticator`. With ``--web PORT`` it also serves a web inbox on
127.0.0.1 (:mod:`fastsmtp.cli.inbox`, which needs the ``aiofastsmtp[web]`` extra);
``--web`` alone keeps the messages only there, in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal
import sys
from typing import Any

from .inbox.store import DEFAULT_MAX_MESSAGES

__all__ = ["add_serve_parser", "cmd_serve", "load_users", "UsersAuthenticator"]


def load_users(path: str) -> dict[str, str]:
    """Read ``user:password`` lines (blank lines and ``#`` comments are skipped)."""
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}:{number}: expected user:password")
            users[user] = password
    return users


class UsersAuthenticator:
    """An authenticator checking a ``{user: password}`` table (PLAIN, LOGIN, CRAM-MD5).

    Args:
        users: The table, e.g. from :func:`load_users`.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {u.encode("utf-8"): p.encode("utf-8") for u, p in users.items()}

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        """Return an ``AuthResult`` for the decoded credentials."""
        from ..server.auth import AuthResult, CramMD5Credentials

        login = getattr(auth_data, "login", b"")
        expected = self._users.get(login)
        if expected is None:
            return AuthResult(success=False)
        if isinstance(auth_data, CramMD5Credentials):
            ok = auth_data.verify(expected)
        elif hasattr(auth_data, "password"):
            ok = hmac.compare_digest(expected, auth_data.password)
        else:
            ok = False
        return AuthResult(success=ok, auth_data=login.decode("utf-8", "replace") if ok else None)


#: What ``--web`` says when aiohttp is missing.
WEB_NEEDS_AIOHTTP = 'fastsmtp serve: --web needs aiohttp: pip install "aiofastsmtp[web]"'


def _port(text: str) -> int:
    """A port number for ``--web`` (0: any free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (0: any free one), not {text!r}")
    return port


def add_serve_parser(subparsers: Any) -> None:
    """Declare ``fastsmtp serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run a local SMTP server storing messages in a Maildir (or printing them, or a web inbox)",
        description="Run a local SMTP server. Each accepted message is fsynced into a Maildir "
        "before the 250 is sent, or printed with --print. With --web PORT the messages are also "
        "shown in a web inbox on http://127.0.0.1:PORT/ (with --web alone, only there).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=2525, help="port, 0 for any free one (default: %(default)s)")
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--maildir", help="Maildir to deliver into (default: Maildir, unless --web is given alone)"
    )
    store.add_argument("--print", action="store_true", dest="print_", help="print messages to stdout instead")
    p.add_argument(
        "--web",
        type=_port,
        metavar="PORT",
        help="also serve a web inbox on http://127.0.0.1:PORT/ (0: any free port); "
        'needs pip install "aiofastsmtp[web]"',
    )
    p.add_argument(
        "--web-max-messages",
        type=int,
        metavar="N",
        help="messages the web inbox keeps in memory, the oldest dropped first "
        f"(default: {DEFAULT_MAX_MESSAGES})",
    )
    p.add_argument("--tls-cert", help="PEM certificate (chain) for STARTTLS")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--smtps", action="store_true", help="implicit TLS on connect instead of STARTTLS")
    p.add_argument("--users", help="file of user:password lines; enables and requires AUTH")
    p.add_argument(
        "--insecure-auth",
        action="store_true",
        help="offer AUTH without TLS (only sensible on 127.0.0.1)",
    )
    p.add_argument("--max-size", type=int, default=32 * 1024 * 1024, help="largest message in bytes")
    p.add_argument("--name", help="server host name for the greeting (default: this host's name)")
    p.add_argument("--lmtp", action="store_true", help="speak LMTP instead of SMTP")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: every command)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``fastsmtp serve`` until SIGINT/SIGTERM; return the exit status."""
    from .._loop import new_event_loop
    from ..handlers import Maildir, Printing
    from ..server import SMTPServer

    options: dict[str, Any] = {"max_size": args.max_size, "lmtp": args.lmtp}
    # -vv logs every command and reply (the server's debug traffic log, AUTH masked).
    options["debug"] = getattr(args, "verbose", 0) >= 2
    if args.name:
        options["name"] = args.name
    if args.tls_cert:
        # Implicit TLS with --smtps, else offered through STARTTLS (simplesmtp's rule).
        options.update(secure=args.smtps, credentials={"cert": args.tls_cert, "key": args.tls_key})
    elif args.smtps or args.tls_key:
        print("fastsmtp serve: --smtps and --tls-key need --tls-cert", file=sys.stderr)
        return 2
    if args.users:
        options.update(
            require_auth=True,
            authenticator=UsersAuthenticator(load_users(args.users)),
            auth_methods=("PLAIN", "LOGIN", "CRAM-MD5"),
            auth_require_tls=not args.insecure_auth,
        )
        if not args.tls_cert and not args.insecure_auth:
            print("fastsmtp serve: --users needs --tls-cert (or --insecure-auth)", file=sys.stderr)
            return 2
    if args.web is not None:
        try:  # before anything is created: a missing extra leaves no Maildir behind
            from .inbox.app import WebInbox
        except ImportError:
            print(WEB_NEEDS_AIOHTTP, file=sys.stderr)
            return 2
    elif args.web_max_messages is not None:
        print("fastsmtp serve: --web-max-messages needs --web PORT", file=sys.stderr)
        return 2
    inner: Any = None
    where = ""
    if args.print_:
        inner, where = Printing(), "stdout"
    elif args.maildir is not None or args.web is None:
        maildir = args.maildir or "Maildir"
        inner, where = Maildir(maildir), maildir
    handler: Any = inner
    inbox: Any = None
    if args.web is not None:
        from .inbox.store import MessageStore, inbox_handler

        keep = DEFAULT_MAX_MESSAGES if args.web_max_messages is None else args.web_max_messages
        store = MessageStore(keep)
        handler = inbox_handler(store, inner)
        inbox = WebInbox(store, args.web)
        where = f"{where} and the web inbox" if where else "the web inbox (in memory only)"
    server = SMTPServer(handler, args.host, args.port, **options)

    async def run() -> None:
        await server.start()
        try:
            if inbox is not None:
                await inbox.start()
                # Printed before the "listening" line: once that one is out, both ports are.
                print(
                    f"fastsmtp: web inbox on {inbox.url} (keeps the newest {inbox.store.max_messages} messages)",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"fastsmtp: listening on {args.host}:{server.port}, delivering to {where}", file=sys.stderr, flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            print("fastsmtp: shutting down", file=sys.stderr, flush=True)
        finally:
            if inbox is not None:
                await inbox.close()
            await server.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    return 0
