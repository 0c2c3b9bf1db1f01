"""``fastsmtp send``'s command line: its options, and their checks before anything is sent."""

from __future__ import annotations

import argparse
import email.utils
import getpass
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..._syntax import HEADER_UNSAFE, mailbox_error
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CampaignInputError,
)
from .journal import check_destination
from .recipients import validate_recipients
from .run import CampaignConfig, run_campaign
from .template import MessageTemplate

__all__ = ["add_send_parser", "cmd_send", "prepare", "PASSWORD_ENV", "DEFAULT_STALL_TIMEOUT"]

#: Environment variable read for the password when the server URL names a user.
PASSWORD_ENV = "FASTSMTP_PASSWORD"
#: Seconds without progress after which ``send --celery`` stops waiting for the workers.
#: Longer than a failed batch's retries take (:data:`fastsmtp.celery.tasks.BATCH_RETRIES`).
DEFAULT_STALL_TIMEOUT = 300.0


_EPILOG = f"""\
recipients: a UTF-8 CSV file with a header line and an 'email' column; every column can
  be used in the template as {{column}} (names of letters, digits, _ and -). Other braces
  are literal; {{{{name}}}} gives a literal {{name}}. Values go into headers (a line break
  there is refused) and text bodies.
template: --template FILE.eml (headers and text/* parts are filled in; attachments are
  kept as they are), or --subject with --text/--text-file and/or --html/--html-file
  (strings or files). From (= --from) and To ({{email}}) are added when missing.
server: --server smtp[s]://user@host:port/?option=value (pool options too) or --service
  NAME (gmail, outlook365, ...) with --user. The password comes from ${PASSWORD_ENV} or
  a prompt; never put it on the command line. Without a server, messages go to an
  embedded local server that stores them in --maildir, to look at before sending.
journal: every recipient is recorded in a SQLite journal before and after its message.
  --resume continues an interrupted campaign and never sends twice to an address whose
  250 was recorded; uncertain ones (connection lost after the data, or the process died
  while sending) are reported as maybe-delivered and resent only with
  --resend-uncertain. Ctrl-C stops gracefully (messages in flight finish).
celery: --celery redis://HOST:6379/0 enqueues the messages to Celery workers started
  with 'fastsmtp worker --broker URL --server SMTP-URL' on any machine; the server, its
  login and the rate limit are the workers' settings. The store in that Redis is the
  journal (exactly once across workers); the results and --resume work the same.
  When the store's counts do not move for --stall-timeout seconds (default
  {DEFAULT_STALL_TIMEOUT:g}; 0 waits for ever), the client stops waiting with exit status
  {EXIT_INTERRUPTED}: check the workers run (fastsmtp worker ...), then --resume.
exit status: {EXIT_OK} all accepted; {EXIT_SOME_FAILED} some rejected, deferred, failed,
  uncertain or pending; {EXIT_USAGE} bad usage or input (nothing sent); {EXIT_SERVER} server
  unreachable or login failed (nothing sent), or the server refused MAIL in a way that
  means the settings are wrong (530 authentication required, or the same 5xx to each of
  the first messages: those are recorded deferred for --resume); {EXIT_INTERRUPTED}
  interrupted (Ctrl-C; with --celery also: no progress for --stall-timeout seconds).
"""


def add_send_parser(subparsers: Any) -> None:
    """Declare ``fastsmtp send``."""
    p = subparsers.add_parser(
        "send",
        help="send a templated message to every recipient of a CSV list (resumable)",
        description="Send one personalized message per recipient of a CSV list through a "
        "connection pool, with a durable journal, progress and a results file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipients", help="CSV file with an 'email' column")
    p.add_argument("--from", dest="sender", required=True, metavar="ADDRESS",
                   help="sender: an address, or \"Display Name <address>\" (the address "
                   "goes into the envelope, both into the default From header)")
    p.add_argument("--template", metavar="FILE.eml", help="message template (RFC 5322 file)")
    p.add_argument("--subject", help="subject (with --text and/or --html)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", help="plain-text body (a string)")
    text.add_argument("--text-file", metavar="FILE", help="plain-text body from a UTF-8 file")
    html = p.add_mutually_exclusive_group()
    html.add_argument("--html", help="HTML body (a string)")
    html.add_argument("--html-file", metavar="FILE", help="HTML body from a UTF-8 file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="URL",
                       help="smtp://user@host:587 or smtps://user@host:465")
    where.add_argument("--service", metavar="NAME",
                       help="a well-known service (gmail, outlook365, ...)")
    p.add_argument("--user", help="login name (with --service, or to override the URL's)")
    p.add_argument("--cafile", metavar="FILE",
                   help="CA certificate(s) (PEM) that verify the server, for a private CA "
                   "(the same as ?tls.cafile=FILE in --server)")
    p.add_argument("--password-env", default=PASSWORD_ENV, metavar="VAR",
                   help="environment variable holding the password (default: %(default)s)")
    p.add_argument("--maildir", default="fastsmtp-outbox",
                   help="Maildir of the embedded server used without --server/--service "
                   "(default: %(default)s)")
    p.add_argument("--connections", type=int, default=5,
                   help="connections at most (default: %(default)s)")
    p.add_argument("--max-messages", type=int, default=100,
                   help="messages per connection before it is renewed (default: %(default)s)")
    p.add_argument("--rate-limit", type=int, help="messages per --rate-delta seconds at most")
    p.add_argument("--rate-delta", type=float, default=1.0,
                   help="rate window in seconds (default: 1)")
    p.add_argument("--results", metavar="FILE",
                   help="results CSV (default: <recipients>.results.csv beside the list, "
                   "<recipients>.preview-results.csv for the embedded server)")
    p.add_argument("--journal", metavar="FILE",
                   help="journal database (default: beside the results, .journal.sqlite)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the campaign of the journal")
    again.add_argument("--restart", action="store_true",
                       help="discard an existing journal and start over (recipients already "
                       "sent to get the message again)")
    p.add_argument("--resend-uncertain", action="store_true",
                   help="with --resume: send again to maybe-delivered recipients")
    p.add_argument("--celery", metavar="REDIS-URL",
                   help="send through Celery workers sharing this Redis broker and store "
                   "(start them with: fastsmtp worker --broker REDIS-URL --server URL)")
    p.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                   help="with --celery: stop waiting when no message made progress for "
                   f"SECONDS (default: {DEFAULT_STALL_TIMEOUT:g}; 0: wait for ever); exit "
                   f"status {EXIT_INTERRUPTED}, then check the workers and --resume")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    p.set_defaults(func=cmd_send)


def _read_text(value: str | None, path: str | None, what: str) -> str | None:
    if path is None:
        return value
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignInputError(f"cannot read the {what} file {path}: {exc}") from None


def _pool_kwargs(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """SMTPPool keyword arguments and a description of the destination (no secret in it)."""
    from ...options import default_port
    from ...pool import Auth, parse_url
    from ...services import lookup_service

    if args.server is None and args.service is None:
        if args.user:
            raise CampaignInputError("--user needs --server or --service")
        if args.cafile:
            raise CampaignInputError("--cafile needs --server or --service")
        return None, f"maildir:{os.path.abspath(args.maildir)}"
    kwargs: dict[str, Any] = {}
    user = args.user
    password: str | None = None
    if args.server is not None:
        try:
            kwargs = parse_url(args.server)
        except ValueError as exc:
            raise CampaignInputError(f"--server: {exc}") from None
        parts = urlsplit(args.server)
        if not parts.hostname:
            raise CampaignInputError("--server: the URL has no host")
        if parts.password is not None:
            print("fastsmtp send: warning: a password in --server is visible to other users "
                  f"of this machine; prefer ${args.password_env}", file=sys.stderr)
            password = kwargs["auth"].password
        kwargs.pop("auth", None)
        kwargs.pop("user", None)  # a URL user without password: completed below
        if not user and parts.username:
            user = unquote(parts.username)
        secure = bool(kwargs.get("secure"))
        port = kwargs.get("port") or default_port(secure=secure)
        destination = f"{'smtps' if secure else 'smtp'}://{parts.hostname}:{port}"
    else:
        try:
            service = lookup_service(args.service)
        except KeyError:
            raise CampaignInputError(f"--service: unknown service {args.service!r}") from None
        kwargs["service"] = args.service
        destination = f"service:{service.name}"
    if args.cafile:
        if not os.path.isfile(args.cafile):
            raise CampaignInputError(f"--cafile: no such file: {args.cafile}")
        kwargs["tls"] = {**kwargs.get("tls", {}), "cafile": args.cafile}
    if user:
        if password is None:
            password = os.environ.get(args.password_env)
        if password is None:
            if not sys.stdin.isatty():
                raise CampaignInputError(
                    f"no password for {user}: set ${args.password_env} (or run on a terminal "
                    "to be asked)")
            password = getpass.getpass(f"Password for {user} ({destination}): ")
        kwargs["auth"] = Auth(user, password)
        destination += f" as {user}"
    return kwargs, destination


def _check_celery(args: argparse.Namespace) -> None:
    """``--celery``: the URL is Redis's; SMTP settings belong to the workers."""
    if not args.celery.startswith(("redis://", "rediss://", "unix://")):
        raise CampaignInputError(f"--celery {args.celery!r}: give the Redis broker and store "
                                 "URL, redis://HOST:6379/0")
    for flag, value in (("--server", args.server), ("--service", args.service),
                        ("--user", args.user), ("--rate-limit", args.rate_limit)):
        if value is not None:
            raise CampaignInputError(
                f"{flag} is a setting of the workers with --celery: start them with "
                "fastsmtp worker --broker URL --server SMTP-URL [--rate-limit N]")


def _celery_destination(url: str) -> str:
    """The broker URL without its password (stored in the journal, shown in messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return f"celery:{url}"
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return f"celery:{parts.scheme}://{user + '@' if user else ''}{netloc}{parts.path}"


def _resolve_paths(args: argparse.Namespace, embedded: bool) -> tuple[str, str]:
    csv_path = Path(args.recipients)
    stem = csv_path.name[:-4] if csv_path.name.lower().endswith(".csv") else csv_path.name
    results = Path(args.results) if args.results else csv_path.with_name(
        stem + (".preview-results.csv" if embedded else ".results.csv"))
    rstem = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    journal = Path(args.journal) if args.journal else results.with_name(rstem + ".journal.sqlite")
    return str(results), str(journal)


def _parse_from(value: str) -> tuple[str, str]:
    """``--from``: an address, or ``"Display Name <address>"``; return ``(From header,
    envelope sender)``.

    Raises:
        CampaignInputError: An invalid address, or a line break in the name.
    """
    name, address = "", value
    if value.rstrip().endswith(">") and "<" in value:
        head, _, rest = value.rpartition("<")
        name, address = head.strip(), rest.rstrip()[:-1].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
        if HEADER_UNSAFE.search(name):
            raise CampaignInputError(f"--from {value!r}: a control character in the name")
    reason = mailbox_error(address)
    if reason is not None:
        raise CampaignInputError(f"--from {value!r}: {reason}")
    if not name:
        return address, address
    return email.utils.formataddr((name, address)), address


def prepare(args: argparse.Namespace) -> CampaignConfig:
    """Check the arguments, the template and the whole recipient list (nothing is sent).

    Raises:
        CampaignInputError: Anything wrong, with every problem listed.
    """
    from_header, sender = _parse_from(args.sender)
    if args.resend_uncertain and not args.resume:
        raise CampaignInputError("--resend-uncertain only makes sense with --resume")
    text = _read_text(args.text, args.text_file, "text")
    html = _read_text(args.html, args.html_file, "HTML")
    if args.template:
        if args.subject is not None or text is not None or html is not None:
            raise CampaignInputError("--template excludes --subject, --text and --html")
        template = MessageTemplate.from_eml(args.template, from_header)
    else:
        if args.subject is None:
            raise CampaignInputError(
                "give --template FILE.eml, or --subject with --text and/or --html")
        template = MessageTemplate.from_parts(from_header, args.subject, text, html)
    if args.connections < 1 or args.max_messages < 1 or not args.rate_delta > 0 \
            or (args.rate_limit is not None and args.rate_limit < 1):
        raise CampaignInputError(
            "--connections, --max-messages, --rate-limit and --rate-delta must be positive")
    celery = getattr(args, "celery", None)
    stall = getattr(args, "stall_timeout", None)
    if celery is not None:
        _check_celery(args)
    elif stall is not None:
        raise CampaignInputError("--stall-timeout is for --celery (how long the client waits "
                                 "for workers that make no progress)")
    if stall is not None and not stall >= 0:
        raise CampaignInputError(f"--stall-timeout {stall:g}: give seconds, 0 or more "
                                 "(0: wait for ever)")
    embedded = args.server is None and args.service is None and celery is None
    results, journal = _resolve_paths(args, embedded)
    if not os.path.exists(args.recipients):
        raise CampaignInputError(f"no such file: {args.recipients}")
    if args.resume and not os.path.exists(journal):
        raise CampaignInputError(f"--resume: no journal at {journal} (was --results or --journal "
                                 "different the first time?)")
    if not args.resume and not args.restart and os.path.exists(journal):
        raise CampaignInputError(
            f"a journal of an earlier campaign exists: {journal}. Use --resume to continue it "
            "(nobody gets the message twice) or --restart to discard it and send to everyone again")
    info = validate_recipients(args.recipients, template)
    if info.total == 0:
        raise CampaignInputError(f"{args.recipients}: no recipients")
    if celery is not None:
        pool_kwargs, destination = None, _celery_destination(celery)
    else:
        pool_kwargs, destination = _pool_kwargs(args)
    if args.resume:
        check_destination(journal, destination)
    if pool_kwargs is not None:
        pool_kwargs.update(max_connections=args.connections, max_messages=args.max_messages,
                           rate_limit=args.rate_limit, rate_delta=args.rate_delta)
    return CampaignConfig(
        recipients=args.recipients, template=template, sender=sender,
        pool_kwargs=pool_kwargs, destination=destination, maildir=args.maildir,
        results=results, journal=journal, resume=args.resume,
        resend_uncertain=args.resend_uncertain, restart=args.restart, window=0, info=info,
        celery=celery,
        stall_timeout=DEFAULT_STALL_TIMEOUT if stall is None else stall,
    )


def cmd_send(args: argparse.Namespace) -> int:
    """Run ``fastsmtp send``; return the exit status (see the ``EXIT_*`` constants)."""
    from ..._loop import new_event_loop

    try:
        config = prepare(args)
    except CampaignInputError as exc:
        print(f"fastsmtp send: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    loop = new_event_loop()
    try:
        return loop.run_until_complete(run_campaign(config))
    except CampaignInputError as exc:
        print(f"fastsmtp send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        loop.close()
