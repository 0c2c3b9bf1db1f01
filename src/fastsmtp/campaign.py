"""``fastsmtp send``: a mail campaign from a CSV recipient list, resumable after any crash.

Theory of operation
-------------------
1. **Validate everything first** (nothing is sent when anything is wrong): the template is
   compiled, the CSV is streamed once and every problem is collected with its line number
   (no ``email`` column, invalid addresses, a template field a row lacks, a line break in a
   value that goes into a header). Then the pool connects and logs in once
   (:meth:`~fastsmtp.pool.SMTPPool.verify`).
2. **Send**: the CSV is streamed a second time as the source of
   :meth:`~fastsmtp.pool.SMTPPool.send_many`; each message is rendered only when the pool
   asks for it, so memory stays flat for a million recipients.
3. **Journal** (SQLite, WAL): a recipient is recorded as ``sending`` and *committed* before
   its message is handed to the pool, and its outcome is recorded after. ``--resume`` never
   sends again to an address whose 250 was recorded. A message whose outcome is unknown
   (connection lost after the final dot, or ``sending`` with no outcome because the process
   died) is *uncertain* and is not resent unless ``--resend-uncertain`` is given: a
   duplicate is worse than a gap the user can see in the results.

Durability: ``PRAGMA synchronous=FULL`` with WAL fsyncs the log at every commit.
``NORMAL`` would survive a process crash but not a power loss, and a lost ``sending``
mark after a power loss means the message goes out a second time on resume, which is the
one thing the journal exists to prevent. The fsync cost is amortized by *group commit*:
``sending`` marks are written in batches (:data:`MARK_BATCH` rows, one commit), and the
outcomes collected since the last commit ride in the same transaction. Progress and the
summary count an outcome only after its commit, so nothing is claimed before it is durable.
Outcomes not committed at a crash (at most :data:`FLUSH_INTERVAL` seconds' worth) leave
their rows ``sending``, i.e. uncertain: after a hard crash at most about
``window + MARK_BATCH`` recipients are reported uncertain, never resent silently.

Templates
---------
Placeholders are ``{column}`` where ``column`` is a CSV column name made of letters,
digits, ``_`` and ``-`` (starting with a letter or ``_``). Any other brace is literal text,
so the CSS of an HTML body needs no escaping; ``{{name}}`` produces a literal ``{name}``.
There is no attribute access, indexing or format spec (``str.format_map`` allows
``{x.__class__}``; this syntax cannot reach anything but the row's values). Values are
substituted into headers (refused when they contain a line break: header injection) and
into ``text/*`` bodies (re-encoded: 7bit when possible, else quoted-printable UTF-8).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import csv
import email.policy
import email.utils
import getpass
import logging
import os
import re
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from itertools import islice
from pathlib import Path
from typing import Any, TextIO, cast
from urllib.parse import unquote, urlsplit

from ._syntax import HEADER_UNSAFE, mailbox_error
from .connection import SendResult
from .errors import SMTPError, SMTPMaybeDelivered, SMTPPoolClosed
from .message import Envelope

__all__ = [
    "CampaignInputError",
    "FieldTemplate",
    "MessageTemplate",
    "Journal",
    "Progress",
    "read_recipients",
    "validate_recipients",
    "classify",
    "should_send",
    "add_send_parser",
    "cmd_send",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_USAGE",
    "EXIT_SERVER",
    "EXIT_INTERRUPTED",
]

log = logging.getLogger("fastsmtp.campaign")

#: Every recipient accepted.
EXIT_OK = 0
#: Some recipients rejected, deferred, failed, uncertain or not sent.
EXIT_SOME_FAILED = 1
#: Bad usage or input (nothing sent).
EXIT_USAGE = 2
#: The server could not be reached or refused the login (nothing sent).
EXIT_SERVER = 3
#: Interrupted by Ctrl-C / SIGTERM (in-flight messages finished, journal up to date).
EXIT_INTERRUPTED = 130

#: Rows marked ``sending`` per journal commit (group commit; see the module docs).
MARK_BATCH = 32
#: Longest time an outcome waits in memory before its commit.
FLUSH_INTERVAL = 0.2
#: Progress redraw period on a terminal, and line period when stderr is not a terminal.
TTY_INTERVAL = 0.1
LINE_INTERVAL = 5.0
#: Environment variable read for the password when the server URL names a user.
PASSWORD_ENV = "FASTSMTP_PASSWORD"
#: Longest line allowed in a 7bit body (RFC 5322 section 2.1.1).
MAX_LINE = 998
#: Uncertain recipients listed by name in the summary (all of them are in the results).
SUMMARY_LIST = 20

#: Journal statuses. ``pending`` is also what the results file says of a recipient that
#: was never attempted.
STATUSES = ("pending", "sending", "accepted", "rejected", "deferred", "maybe-delivered", "failed")


class CampaignInputError(ValueError):
    """Bad input or usage found before anything was sent (exit status 2).

    Attributes:
        problems: Every problem found, one line each (e.g. ``"line 7: invalid address"``).
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# -- templates -------------------------------------------------------------------------------

# ``{{name}}`` (a literal ``{name}``) is tried before ``{name}`` at the same position.
_PLACEHOLDER = re.compile(r"\{\{([^\W\d][\w-]*)\}\}|\{([^\W\d][\w-]*)\}")


class FieldTemplate:
    """A text with ``{column}`` placeholders, compiled once, rendered per recipient.

    Args:
        text: The template text (see the module docs for the syntax).

    Attributes:
        fields: The column names used, in order of first use.
    """

    __slots__ = ("text", "fields", "_parts")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[tuple[str, bool]] = []  # (literal or field name, is_field)
        fields: dict[str, None] = {}
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            literal = text[pos:match.start()]
            if match.group(1) is not None:
                literal += "{" + match.group(1) + "}"
            if literal:
                parts.append((literal, False))
            if match.group(2) is not None:
                parts.append((match.group(2), True))
                fields[match.group(2)] = None
            pos = match.end()
        if pos < len(text):
            parts.append((text[pos:], False))
        self.fields = list(fields)
        self._parts = tuple(parts)

    @classmethod
    def literal(cls, text: str) -> FieldTemplate:
        """A template that renders ``text`` as is (no placeholders, whatever its braces)."""
        self = cls("")
        self.text = text
        self._parts = ((text, False),)
        return self

    def render(self, row: Mapping[str, str]) -> str:
        """Substitute the row's values (every field must be present: see validation)."""
        return "".join(row[p] if is_field else p for p, is_field in self._parts)


def _fold(name: str, value: str) -> bytes:
    """One header as wire bytes; RFC 2047/folding only when the value needs it."""
    line = f"{name}: {value}\r\n"
    if value.isascii() and len(line) <= 80:  # the common case: no policy machinery
        return line.encode("ascii")
    # policy.fold(name, str) only refolds long lines; a parsed header object also
    # RFC 2047-encodes non-ASCII words (and only the display names of address headers).
    policy = email.policy.SMTP
    header: BaseHeader = policy.header_factory(name, value)
    return header.fold(policy=policy).encode("ascii")


def _encode_text(text: str) -> tuple[bytes, bytes]:
    """A text body as (Content-Transfer-Encoding, CRLF bytes): 7bit when possible, else QP."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if text.isascii() and (len(data) <= MAX_LINE or max(map(len, data.split(b"\n"))) <= MAX_LINE):
        cte = b"7bit"
    else:
        cte = b"quoted-printable"
        data = binascii.b2a_qp(data, istext=True)  # C speed; keeps \n as line breaks
    return cte, data.replace(b"\n", b"\r\n")


@dataclass
class _Node:
    """One MIME part of a compiled template."""

    kind: str  # "text", "multipart" or "raw"
    headers: bytes = b""  # constant headers of a non-top part (without Content-Type/CTE)
    subtype: str = "plain"  # text/<subtype>
    body: FieldTemplate | None = None
    raw: bytes = b""  # a constant part (headers and body), e.g. an attachment
    content_type: bytes = b""  # multipart: the Content-Type header line
    boundary: bytes = b""
    children: list[_Node] = field(default_factory=list)


# Headers that the compiled body writes itself, or that must differ per message.
_CONTENT_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
_DROPPED_HEADERS = frozenset({"bcc", "message-id"})


class MessageTemplate:
    """A message with ``{column}`` placeholders in its headers and text bodies.

    Build one with :meth:`from_eml` or :meth:`from_parts`; :meth:`render` returns the
    wire bytes for one recipient. Per message, ``Message-ID`` is new and ``Date`` is now
    (unless the template has one); ``From`` (the sender) and ``To: {email}`` are added
    when the template lacks them; ``Bcc`` is dropped (it would reveal the list).

    Args:
        message: The template message (modern email API: parts need ``is_attachment``
            and ``get_content``, as parsed with ``email.policy.default``).
        sender: The ``--from`` address (From header default, Message-ID domain).
    """

    def __init__(self, message: EmailMessage, sender: str) -> None:
        self.sender = sender
        self._domain = sender.rpartition("@")[2] or "localhost"
        self._msgid_base = secrets.token_hex(8)
        self._count = 0
        self._date_second = -1
        self._date = ""
        names = {name.lower() for name in message.keys()}
        headers: list[tuple[str, FieldTemplate]] = []
        if "from" not in names:
            headers.append(("From", FieldTemplate.literal(sender)))
        if "to" not in names:
            headers.append(("To", FieldTemplate("{email}")))
        for name, value in message.items():
            lname = name.lower()
            if lname in _CONTENT_HEADERS or lname in _DROPPED_HEADERS:
                continue
            headers.append((name, FieldTemplate(str(value))))
        self._has_date = "date" in names
        self._headers = headers
        self.root = self._compile(message, top=True)
        self.header_fields = list(dict.fromkeys(f for _, t in headers for f in t.fields))
        body_fields: list[str] = []
        self._walk_fields(self.root, body_fields)
        self.fields = list(dict.fromkeys(self.header_fields + body_fields))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_eml(cls, path: str | os.PathLike[str], sender: str) -> MessageTemplate:
        """Read an ``.eml`` (RFC 5322) template file.

        Raises:
            CampaignInputError: The file cannot be read or has no text part to fill in.
        """
        try:
            with open(path, "rb") as fh:
                message = BytesParser(policy=email.policy.default).parse(fh)
        except OSError as exc:
            raise CampaignInputError(f"cannot read the template {path}: {exc.strerror}") from None
        if message.defects:
            log.warning("template %s: %s", path, "; ".join(str(d) for d in message.defects))
        return cls(message, sender)

    @classmethod
    def from_parts(
        cls, sender: str, subject: str, text: str | None = None, html: str | None = None
    ) -> MessageTemplate:
        """A template from a subject and a text and/or HTML body (multipart/alternative)."""
        if text is None and html is None:
            raise CampaignInputError("give a body: --text/--text-file and/or --html/--html-file")
        message = EmailMessage()
        message["Subject"] = subject
        if text is not None:
            message.set_content(text)
            if html is not None:
                message.add_alternative(html, subtype="html")
        else:
            message.set_content(html or "", subtype="html")
        return cls(message, sender)

    def _compile(self, part: MIMEPart, top: bool = False) -> _Node:
        ctype = part.get_content_type()
        if part.is_multipart():
            boundary = part.get_boundary() or ("=_fastsmtp_" + secrets.token_hex(12))
            params = "".join(
                f'; {k}="{v}"' for k, v in (part.get_params(header="content-type") or [])[1:]
                if k.lower() != "boundary"
            )
            node = _Node(
                "multipart",
                headers=b"" if top else self._constant_headers(part),
                content_type=_fold("Content-Type", f'{ctype}{params}; boundary="{boundary}"'),
                boundary=boundary.encode("ascii"),
            )
            subparts = cast("list[MIMEPart]", part.get_payload())  # multipart: a list
            node.children = [self._compile(sub) for sub in subparts]
            return node
        if part.get_content_maintype() == "text" and not part.is_attachment():
            try:
                content = part.get_content()
            except (LookupError, AttributeError):
                # Not multipart, so decoding gives the bytes of the body.
                payload = cast(bytes, part.get_payload(decode=True))
                content = payload.decode("utf-8", "replace")
            return _Node(
                "text",
                headers=b"" if top else self._constant_headers(part),
                subtype=part.get_content_subtype(),
                body=FieldTemplate(content),
            )
        if top:
            raise CampaignInputError(
                f"the template is a single {ctype} part: it needs a text/* part to fill in"
            )
        return _Node("raw", raw=part.as_bytes(policy=email.policy.SMTP))

    @staticmethod
    def _constant_headers(part: Message) -> bytes:
        return b"".join(
            _fold(name, str(value)) for name, value in part.items()
            if name.lower() not in _CONTENT_HEADERS
        )

    def _walk_fields(self, node: _Node, out: list[str]) -> None:
        if node.body is not None:
            out.extend(node.body.fields)
        for child in node.children:
            self._walk_fields(child, out)

    # -- rendering ---------------------------------------------------------------------------

    def _message_id(self) -> str:
        self._count += 1
        return f"<{self._msgid_base}.{self._count}.{int(time.time())}@{self._domain}>"

    def _now(self) -> str:
        second = int(time.time())
        if second != self._date_second:  # formatdate costs more than a message's headers
            self._date_second = second
            self._date = email.utils.formatdate(second, localtime=True)
        return self._date

    def render(self, row: Mapping[str, str]) -> bytes:
        """The whole message for one recipient, CRLF line endings.

        Raises:
            CampaignInputError: A value would break the message (a line break in a header,
                a MIME boundary inside a body); validation catches the former.
        """
        out: list[bytes] = []
        for name, template in self._headers:
            value = template.render(row)
            if HEADER_UNSAFE.search(value):
                raise CampaignInputError(
                    f"a value in the {name} header contains a line break or control character")
            out.append(_fold(name, value))
        if not self._has_date:
            out.append(_fold("Date", self._now()))
        out.append(_fold("Message-ID", self._message_id()))
        out.append(b"MIME-Version: 1.0\r\n")
        self._render_node(self.root, row, out, ())
        return b"".join(out)

    def _render_node(self, node: _Node, row: Mapping[str, str], out: list[bytes],
                     boundaries: tuple[bytes, ...]) -> None:
        if node.kind == "raw":
            out.append(node.raw)
            return
        out.append(node.headers)
        if node.kind == "text":
            assert node.body is not None
            cte, data = _encode_text(node.body.render(row))
            for boundary in boundaries:
                if b"--" + boundary in data:
                    raise CampaignInputError("a value contains the template's MIME boundary")
            out.append(f'Content-Type: text/{node.subtype}; charset="utf-8"\r\n'.encode())
            out.append(b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n")
            out.append(data)
            return
        out.append(node.content_type)
        out.append(b"\r\n")
        inner = boundaries + (node.boundary,)
        for child in node.children:
            out.append(b"--" + node.boundary + b"\r\n")
            self._render_node(child, row, out, inner)
            # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1): one
            # more keeps the part's own last line break.
            out.append(b"\r\n")
        out.append(b"--" + node.boundary + b"--\r\n")


# -- recipients ------------------------------------------------------------------------------

def address_key(address: str) -> str:
    """The journal key of an address: one recipient however its case is written."""
    return address.casefold()


@dataclass
class Recipients:
    """What the validation pass learned about a recipient list.

    Attributes:
        path: The CSV file.
        columns: Its column names (stripped).
        email_column: The column holding addresses.
        total: Unique valid recipients.
        duplicates: Lines skipped because their address came earlier.
    """

    path: str
    columns: list[str]
    email_column: str
    total: int = 0
    duplicates: int = 0


def _not_utf8(path: str) -> CampaignInputError:
    """The error for a file that is not UTF-8, naming its first bad line.

    Text is decoded in chunks ahead of the CSV parser, so the parser's position does not
    say where the bad byte is: the file is scanned again, line by line, to find it.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return CampaignInputError(f"{path}: line {number}: not UTF-8 text "
                                          f"(byte {raw[exc.start]:#04x} at column {exc.start + 1})")
    return CampaignInputError(f"{path}: not UTF-8 text")


def _open_csv(path: str) -> tuple[TextIO, Any, list[str], str]:
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - returned
    except OSError as exc:
        raise CampaignInputError(f"cannot read {path}: {exc.strerror}") from None
    reader = csv.reader(fh)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise CampaignInputError(f"{path}: the file is empty (expected a header line)") from None
    except UnicodeDecodeError:
        fh.close()
        raise _not_utf8(path) from None
    except csv.Error as exc:
        fh.close()
        raise CampaignInputError(f"{path}: line 1: {exc}") from None
    columns = [c.strip() for c in header]
    lowered = [c.casefold() for c in columns]
    if "email" not in lowered:
        fh.close()
        raise CampaignInputError(
            f"{path}: no 'email' column in the header line "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    return fh, reader, columns, columns[lowered.index("email")]


def read_recipients(path: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Stream ``(line number, row)`` for every data row of a CSV recipient list.

    The line number is where the row starts in the file (a quoted field may span lines).
    A row shorter than the header has ``None`` for its missing columns; the address is
    also available as ``row["email"]`` whatever the case of its column name.

    Raises:
        CampaignInputError: No header or no ``email`` column; text that is not UTF-8.
    """
    fh, reader, columns, email_column = _open_csv(path)
    width = len(columns)
    with fh:
        start = reader.line_num + 1
        try:
            for record in reader:
                if record:  # blank lines are not rows
                    row: dict[str, str | None] = dict(zip(columns, record))
                    if len(record) < width:
                        for name in columns[len(record):]:
                            row[name] = None
                    row["email"] = (row[email_column] or "").strip() \
                        if row[email_column] is not None else None
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise CampaignInputError(f"{path}: line {reader.line_num}: {exc}") from None


def validate_recipients(path: str, template: MessageTemplate) -> Recipients:
    """The validation pass: stream the whole list and collect every problem.

    Raises:
        CampaignInputError: With one ``problems`` line per bad row (all of them).
    """
    fh, _, columns, email_column = _open_csv(path)
    fh.close()
    info = Recipients(path, columns, email_column)
    available = set(columns) | {"email"}
    missing = [f for f in template.fields if f not in available]
    if missing:
        raise CampaignInputError(
            f"{path}: line 1: the template uses {', '.join('{' + f + '}' for f in missing)} "
            f"but the CSV has no such column (columns: {', '.join(columns)})"
        )
    problems: list[str] = []
    seen: set[str] = set()
    header_fields = template.header_fields
    for line, row in read_recipients(path):
        address = row["email"]
        bad = False
        for name in template.fields:
            if row.get(name) is None:
                problems.append(f"line {line}: no value for the template field {{{name}}} "
                                f"(the row has fewer columns than the header)")
                bad = True
        for name in header_fields:
            value = row.get(name)
            if value is not None and HEADER_UNSAFE.search(value):
                problems.append(f"line {line}: the value of {{{name}}} contains a line break "
                                f"or control character and {{{name}}} is used in a header "
                                "(refused: header injection)")
                bad = True
        if address is None:
            continue  # already reported above if used; else the missing email is next
        reason = mailbox_error(address)
        if reason is not None:
            problems.append(f"line {line}: invalid address {address!r} ({reason})")
            continue
        if bad:
            continue
        key = address_key(address)
        if key in seen:
            info.duplicates += 1
            continue
        seen.add(key)
        info.total += 1
    if problems:
        raise CampaignInputError(f"{path}: {len(problems)} problem(s); nothing was sent", problems)
    return info


def unique_rows(path: str) -> Iterator[tuple[int, str, dict[str, str | None]]]:
    """``(line, key, row)`` of each first occurrence of an address (input already valid)."""
    seen: set[str] = set()
    for line, row in read_recipients(path):
        key = address_key(row["email"] or "")
        if key in seen:
            continue
        seen.add(key)
        yield line, key, row


# -- journal ---------------------------------------------------------------------------------


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
    key TEXT PRIMARY KEY,       -- the casefolded address
    email TEXT NOT NULL,
    line INTEGER NOT NULL,
    status TEXT NOT NULL,
    code INTEGER,
    reply TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""


def should_send(status: str | None, resend_uncertain: bool = False) -> bool:
    """Whether a recipient with this journal status gets the message in this run.

    Never attempted (None, ``pending``) and ``deferred`` (the server said "not now", or
    no connection: not delivered) are sent. ``accepted``, ``rejected`` and ``failed`` are
    final. Uncertain (``maybe-delivered``, or ``sending`` left by a crash) only with
    ``resend_uncertain``.
    """
    if status in (None, "pending", "deferred"):
        return True
    if status in ("maybe-delivered", "sending"):
        return resend_uncertain
    return False


class Journal:
    """The campaign's durable record of who was sent what (SQLite, WAL, synchronous=FULL).

    Writes are grouped: :meth:`mark_sending` commits at once (together with every outcome
    recorded so far); :meth:`record` only buffers and :meth:`flush` commits. Use
    :attr:`committed` to learn which outcomes are durable.

    Args:
        path: The database file.
        create: Create it (it must not exist) instead of opening an existing one.

    Raises:
        CampaignInputError: ``create`` and it exists, or not ``create`` and it is missing.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool) -> None:
        self.path = os.fspath(path)
        exists = os.path.exists(self.path)
        if create and exists:
            raise CampaignInputError(f"the journal {self.path} already exists")
        if not create and not exists:
            raise CampaignInputError(f"no journal at {self.path}: nothing to resume")
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("journal %s: WAL not available (journal_mode=%s)", self.path, mode)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._pending: list[tuple[str, int | None, str, float, str]] = []
        self._reset: list[str] = []
        #: Outcomes made durable by the last commit: ``(key, status)``; the caller drains it.
        self.committed: list[tuple[str, str]] = []
        self.last_flush = time.monotonic()

    # -- metadata ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A campaign setting stored at creation (e.g. ``destination``)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Store campaign settings (committed at once)."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # -- reads -------------------------------------------------------------------------------

    def status(self, key: str) -> str | None:
        """The recipient's recorded status, None when never attempted."""
        row = self._db.execute("SELECT status FROM recipients WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def entry(self, key: str) -> tuple[str, int | None, str | None] | None:
        """``(status, code, reply)`` of a recipient, None when never attempted."""
        row = self._db.execute(
            "SELECT status, code, reply FROM recipients WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def counts(self) -> dict[str, int]:
        """Recipients per status."""
        return dict(self._db.execute("SELECT status, count(*) FROM recipients GROUP BY status"))

    def uncertain(self) -> list[tuple[str, int, str]]:
        """``(email, line, status)`` of every recipient whose delivery is unknown."""
        return [tuple(r) for r in self._db.execute(
            "SELECT email, line, status FROM recipients "
            "WHERE status IN ('sending', 'maybe-delivered') ORDER BY line")]

    # -- writes ------------------------------------------------------------------------------

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    def mark_sending(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Record ``(key, email, line)`` rows as ``sending`` and commit (with any outcomes).

        Raises:
            RuntimeError: A row is already ``accepted`` (a resend that must not happen).
        """
        now = time.time()
        rows = list(rows)
        with self._transaction():
            self._write_outcomes()
            before = self._db.total_changes
            # The WHERE makes a 250 impossible to overwrite, whatever the caller does.
            self._db.executemany(
                "INSERT INTO recipients (key, email, line, status, attempts, updated) "
                "VALUES (?, ?, ?, 'sending', 1, ?) ON CONFLICT (key) DO UPDATE SET "
                "status = 'sending', attempts = attempts + 1, updated = excluded.updated "
                "WHERE status != 'accepted'",
                [(key, address, line, now) for key, address, line in rows],
            )
            if self._db.total_changes - before != len(rows):
                raise RuntimeError("refusing to send again to an accepted recipient")
        self._committed()

    def record(self, key: str, status: str, code: int | None, reply: str) -> None:
        """Buffer the outcome of a ``sending`` recipient (durable after :meth:`flush`)."""
        if status == "pending":
            self._reset.append(key)
        else:
            self._pending.append((status, code, reply, time.time(), key))

    def reset(self, keys: Iterable[str]) -> None:
        """Buffer: these ``sending`` rows were never handed to the server (back to pending)."""
        self._reset.extend(keys)

    @property
    def buffered(self) -> int:
        """Outcomes waiting for their commit."""
        return len(self._pending) + len(self._reset)

    def flush(self) -> None:
        """Commit the buffered outcomes (one fsync)."""
        if self.buffered:
            with self._transaction():
                self._write_outcomes()
            self._committed()
        self.last_flush = time.monotonic()

    def _write_outcomes(self) -> None:
        # Only a 'sending' row takes an outcome: an outcome can never undo a 250.
        self._db.executemany(
            "UPDATE recipients SET status = ?, code = ?, reply = ?, updated = ? "
            "WHERE key = ? AND status = 'sending'",
            self._pending,
        )
        self._db.executemany(
            "UPDATE recipients SET status = 'pending', attempts = attempts - 1 "
            "WHERE key = ? AND status = 'sending'",
            [(key,) for key in self._reset],
        )

    def _committed(self) -> None:
        self.committed.extend((p[4], p[0]) for p in self._pending)
        self.committed.extend((key, "pending") for key in self._reset)
        self._pending.clear()
        self._reset.clear()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        try:
            self.flush()
        finally:
            self._db.close()


# -- outcomes --------------------------------------------------------------------------------


def _one_line(text: str | None) -> str:
    return " / ".join((text or "").splitlines())


def classify(outcome: SendResult | BaseException) -> tuple[str, int | None, str]:
    """Map a one-recipient send outcome to ``(status, reply code, reply text)``.

    ``accepted`` (250 to the final dot), ``rejected`` (a 5xx), ``deferred`` (a 4xx, or no
    connection: not delivered, may be retried), ``maybe-delivered`` (connection lost after
    the final dot), ``pending`` (never attempted: the pool was closed), ``failed`` (anything
    else, e.g. a local error or a garbled reply).
    """
    if isinstance(outcome, SendResult):
        if outcome.accepted:
            reply = outcome.response
            return "accepted", reply.code, _one_line(str(reply))
        error = outcome.rejected_errors[0] if outcome.rejected_errors else None
        code = error.response_code if error is not None else None
        text = (error.response or str(error)) if error is not None else "recipient refused"
        status = "deferred" if code is not None and code < 500 else "rejected"
        return status, code, _one_line(text)
    if isinstance(outcome, SMTPPoolClosed):
        return "pending", None, ""
    if isinstance(outcome, SMTPMaybeDelivered):
        return "maybe-delivered", None, _one_line(str(outcome))
    if isinstance(outcome, SMTPError):
        code = outcome.response_code
        text = _one_line(outcome.response or str(outcome))
        if code is not None:
            return ("rejected" if code >= 500 else "deferred"), code, text
        return ("deferred" if outcome.transient else "failed"), None, text
    return "failed", None, _one_line(f"{type(outcome).__name__}: {outcome}")


# -- progress --------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A progress display on a stream: a redrawn line on a terminal, periodic lines otherwise.

    Counts are campaign-wide (earlier runs included); the rate and ETA are this run's.

    Args:
        total: Unique recipients in the campaign.
        counts: Recipients per journal status at the start.
        stream: Where to write (stderr).
        tty: Redraw in place with ``\\r``; default: ``stream.isatty()``.
    """

    def __init__(self, total: int, counts: Mapping[str, int], stream: TextIO,
                 tty: bool | None = None) -> None:
        self.total = total
        self.counts = {s: counts.get(s, 0) for s in STATUSES}
        # Rows left 'sending' by a crash are uncertain, unlike the ones this run marks.
        self.stale = self.counts["sending"]
        self.counts["sending"] = 0
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.done_this_run = 0
        self._width = 0
        self._last_line = 0.0

    def moved(self, old: str | None, new: str) -> None:
        """A recipient went from status ``old`` (None: not in the journal) to ``new``."""
        if old == "sending" and new == "sending":  # a stale row resent (--resend-uncertain)
            self.stale -= 1
            self.counts["sending"] += 1
            return
        if old is not None:
            self.counts[old] -= 1
        self.counts[new] += 1
        if new not in ("pending", "sending"):
            self.done_this_run += 1

    def line(self) -> str:
        """The progress text."""
        c = self.counts
        uncertain = c["maybe-delivered"] + self.stale
        finished = uncertain + sum(c[s] for s in ("accepted", "rejected", "deferred", "failed"))
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done_this_run / elapsed
        remaining = max(self.total - finished, 0)
        eta = _duration(remaining / rate) if rate > 0 else "--:--:--"
        fraction = finished / self.total if self.total else 1.0
        bar = "#" * int(fraction * 20)
        return (f"[{bar:<20}] {fraction:4.0%} {finished}/{self.total} sent {c['accepted']} "
                f"failed {c['rejected'] + c['failed']} deferred {c['deferred']} "
                f"uncertain {uncertain}  {rate:.1f} msg/s ETA {eta}")

    def draw(self, force: bool = False) -> None:
        """Redraw (terminal) or print a line when its period has passed (or ``force``)."""
        now = time.monotonic()
        if self.tty:
            text = self.line()
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif force or now - self._last_line >= LINE_INTERVAL:
            self.stream.write(self.line() + "\n")
            self._last_line = now
        self.stream.flush()

    def finish(self) -> None:
        """The last redraw, ending the terminal line."""
        self.draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- the campaign ----------------------------------------------------------------------------


@dataclass
class CampaignConfig:
    """Everything ``fastsmtp send`` resolved from its arguments.

    Attributes:
        recipients: The CSV file.
        template: The compiled message template.
        sender: The envelope sender.
        pool_kwargs: Keyword arguments of :class:`~fastsmtp.pool.SMTPPool` (None: the
            embedded server).
        destination: A description of where messages go (stored in the journal).
        maildir: The embedded server's Maildir (when ``pool_kwargs`` is None).
        results: The results CSV.
        journal: The journal database.
        resume: Continue the campaign in ``journal``.
        resend_uncertain: Send again to recipients whose delivery is unknown.
        restart: Discard an existing journal (only once the server check passed).
        window: Messages outstanding in the pool at most; 0 picks
            ``max(8, 2 * connections * PIPELINE_DEPTH)``: enough to keep every connection
            pipelined, small enough that few messages are in doubt after a crash.
        info: What the validation pass learned about the recipient list.
    """

    recipients: str
    template: MessageTemplate
    sender: str
    pool_kwargs: dict[str, Any] | None
    destination: str
    maildir: str
    results: str
    journal: str
    resume: bool = False
    resend_uncertain: bool = False
    restart: bool = False
    window: int = 16
    info: Recipients | None = None


class _Stop:
    """Ctrl-C / SIGTERM handling: first stop feeding, second close the pool's queue."""

    def __init__(self) -> None:
        self.requested = 0
        self.pool: Any = None

    def __call__(self) -> None:
        self.requested += 1
        if self.requested == 1:
            print("\nfastsmtp send: stopping: letting messages in flight finish "
                  "(Ctrl-C again to drop queued ones)", file=sys.stderr, flush=True)
        elif self.requested == 2 and self.pool is not None:
            asyncio.ensure_future(self.pool.close())


async def run_campaign(config: CampaignConfig, stream: TextIO = sys.stderr) -> int:
    """Verify the server, send every due message, write results and a summary.

    Returns:
        The exit status (see ``EXIT_*``).
    """
    from .handlers import Maildir
    from .pool import PIPELINE_DEPTH, SMTPPool
    from .server import SMTPServer

    server: SMTPServer | None = None
    kwargs = config.pool_kwargs
    if kwargs is None:
        server = SMTPServer(Maildir(config.maildir), "127.0.0.1", 0)
        await server.start()
        kwargs = {"host": "127.0.0.1", "port": server.port, "ignore_tls": True}
    try:
        pool = SMTPPool(**kwargs)
        window = config.window or max(8, pool.pool_options.max_connections * PIPELINE_DEPTH * 2)
        try:
            await pool.verify()
        except (SMTPError, OSError) as exc:
            await pool.close()
            print(f"fastsmtp send: cannot use the server {config.destination}: {exc}; "
                  "nothing was sent", file=stream)
            return EXIT_SERVER
        if config.restart:
            _remove_journal(config.journal)  # only now: a failed check keeps the old one
        journal = Journal(config.journal, create=not config.resume)
        try:
            if not config.resume:
                journal.set_meta({"destination": config.destination, "sender": config.sender,
                                  "recipients": os.path.abspath(config.recipients),
                                  "created": email.utils.formatdate(localtime=True)})
            return await _send(config, pool, journal, window, stream, server)
        finally:
            journal.close()
    finally:
        if server is not None:
            await server.close()


async def _send(config: CampaignConfig, pool: Any, journal: Journal, window: int,
                stream: TextIO, server: Any) -> int:
    assert config.info is not None
    progress = Progress(config.info.total, journal.counts(), stream)
    stop = _Stop()
    stop.pool = pool
    loop = asyncio.get_running_loop()
    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            signals.append(sig)
        except (NotImplementedError, RuntimeError):  # no signal handlers (Windows, thread)
            pass
    template, sender = config.template, config.sender
    batch_size = min(MARK_BATCH, window)

    def take_committed() -> None:
        for _key, status in journal.committed:
            # A recipient leaves 'sending' (marked in this run) for its outcome.
            progress.moved("sending", status)
        journal.committed.clear()

    def due() -> Iterator[tuple[str, str | None, str, int, dict[str, str | None]]]:
        for line, key, row in unique_rows(config.recipients):
            # A new journal knows no address yet (and unique_rows skips duplicates):
            # only a resumed campaign needs the look-up.
            status = journal.status(key) if config.resume else None
            if should_send(status, config.resend_uncertain):
                yield key, status, row["email"] or "", line, row

    def source() -> Iterator[tuple[bytes, Envelope]]:
        candidates = due()
        while not stop.requested:
            batch = list(islice(candidates, batch_size))
            if not batch:
                return
            journal.mark_sending((key, address, line) for key, _, address, line, _ in batch)
            for _, before, _, _, _ in batch:
                progress.moved(before, "sending")
            take_committed()
            handed = 0  # rows of the batch given to the pool (or settled here)
            try:
                for key, _, address, _line, row in batch:
                    if stop.requested:
                        return
                    handed += 1
                    try:
                        data = template.render(row)  # type: ignore[arg-type]
                    except CampaignInputError as exc:
                        journal.record(key, "failed", None, str(exc))
                        continue
                    yield data, Envelope(sender, (address,))
            finally:
                # Stopped, or the generator was closed: the rest never reached the pool.
                journal.reset(key for key, _, _, _, _ in batch[handed:])

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TTY_INTERVAL if progress.tty else min(LINE_INTERVAL, 1.0))
            if journal.buffered and time.monotonic() - journal.last_flush >= FLUSH_INTERVAL:
                journal.flush()
                take_committed()
            progress.draw()

    progress.draw(force=True)
    tick = asyncio.ensure_future(ticker())
    try:
        async for (_, envelope), outcome in pool.send_many(source(), window=window):
            status, code, text = classify(outcome)
            journal.record(address_key(envelope.rcpt_to[0]), status, code, text)
            if journal.buffered >= batch_size \
                    or time.monotonic() - journal.last_flush >= FLUSH_INTERVAL:
                journal.flush()
                take_committed()
        journal.flush()
        take_committed()
    finally:
        tick.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
        await pool.close()
        journal.flush()
        take_committed()
        progress.finish()
    counts = write_results(config, journal)
    _summary(config, journal, counts, progress, stream, server, interrupted=bool(stop.requested))
    if stop.requested:
        return EXIT_INTERRUPTED
    return EXIT_OK if counts.get("accepted", 0) == config.info.total else EXIT_SOME_FAILED


def write_results(config: CampaignConfig, journal: Journal) -> dict[str, int]:
    """Write the results CSV (one row per unique recipient, list order); return counts.

    A recipient left ``sending`` by a crash is reported as ``maybe-delivered``; one never
    attempted as ``pending``. The file is replaced atomically.
    """
    counts: dict[str, int] = {}
    tmp = config.results + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "status", "code", "reply"])
        for _line, key, row in unique_rows(config.recipients):
            entry = journal.entry(key)
            status, code, reply = entry if entry is not None else ("pending", None, "")
            if status == "sending":
                status, reply = "maybe-delivered", "no outcome recorded (interrupted while sending)"
            counts[status] = counts.get(status, 0) + 1
            writer.writerow([row["email"], status, "" if code is None else code, reply or ""])
    os.replace(tmp, config.results)
    return counts


def _summary(config: CampaignConfig, journal: Journal, counts: Mapping[str, int],
             progress: Progress, stream: TextIO, server: Any, interrupted: bool) -> None:
    assert config.info is not None
    total = config.info.total
    order = ("accepted", "rejected", "deferred", "maybe-delivered", "failed", "pending")
    parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in order)
    elapsed = time.monotonic() - progress.started
    out = [
        f"fastsmtp send: {'interrupted; ' if interrupted else ''}{total} recipients: {parts}",
        f"  this run: {progress.done_this_run} messages in {elapsed:.1f} s "
        f"({progress.done_this_run / max(elapsed, 1e-9):.1f} msg/s)",
    ]
    if config.info.duplicates:
        out.append(f"  {config.info.duplicates} duplicate line(s) skipped "
                   "(one message per address)")
    uncertain = journal.uncertain()
    if uncertain:
        out.append(f"  {len(uncertain)} uncertain (maybe delivered; not resent: "
                   "use --resume --resend-uncertain to send them again):")
        out.extend(f"    {addr} (line {line})" for addr, line, _ in uncertain[:SUMMARY_LIST])
        if len(uncertain) > SUMMARY_LIST:
            out.append(f"    ... and {len(uncertain) - SUMMARY_LIST} more (see the results)")
    out.append(f"  results: {config.results}")
    out.append(f"  journal: {config.journal}")
    if server is not None:
        out.append(f"  messages stored in the Maildir {os.path.join(config.maildir, 'new')} "
                   "(embedded local server: nothing left this machine)")
    if interrupted or counts.get("pending", 0) or counts.get("deferred", 0):
        out.append("  continue with the same command and --resume")
    print("\n".join(out), file=stream, flush=True)


# -- command line ----------------------------------------------------------------------------

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
exit status: {EXIT_OK} all accepted; {EXIT_SOME_FAILED} some rejected, deferred, failed,
  uncertain or pending; {EXIT_USAGE} bad usage or input (nothing sent); {EXIT_SERVER} server
  unreachable or login failed (nothing sent); {EXIT_INTERRUPTED} interrupted.
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
                   help="sender address (envelope and default From header)")
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
    from .options import default_port
    from .pool import Auth, parse_url
    from .services import lookup_service

    if args.server is None and args.service is None:
        if args.user:
            raise CampaignInputError("--user needs --server or --service")
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


def _resolve_paths(args: argparse.Namespace, embedded: bool) -> tuple[str, str]:
    csv_path = Path(args.recipients)
    stem = csv_path.name[:-4] if csv_path.name.lower().endswith(".csv") else csv_path.name
    results = Path(args.results) if args.results else csv_path.with_name(
        stem + (".preview-results.csv" if embedded else ".results.csv"))
    rstem = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    journal = Path(args.journal) if args.journal else results.with_name(rstem + ".journal.sqlite")
    return str(results), str(journal)


def _remove_journal(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def _check_destination(path: str, destination: str) -> None:
    """Refuse to resume a campaign against another server than the one it started with."""
    try:
        db = sqlite3.connect(f"file:{Path(path).absolute().as_posix()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'destination'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise CampaignInputError(f"cannot read the journal {path}: {exc}") from None
    if row is not None and row[0] != destination:
        raise CampaignInputError(
            f"the journal {path} belongs to a campaign sent to {row[0]}, not {destination}")


def prepare(args: argparse.Namespace) -> CampaignConfig:
    """Check the arguments, the template and the whole recipient list (nothing is sent).

    Raises:
        CampaignInputError: Anything wrong, with every problem listed.
    """
    reason = mailbox_error(args.sender)
    if reason is not None:
        raise CampaignInputError(f"--from {args.sender!r}: {reason}")
    if args.resend_uncertain and not args.resume:
        raise CampaignInputError("--resend-uncertain only makes sense with --resume")
    text = _read_text(args.text, args.text_file, "text")
    html = _read_text(args.html, args.html_file, "HTML")
    if args.template:
        if args.subject is not None or text is not None or html is not None:
            raise CampaignInputError("--template excludes --subject, --text and --html")
        template = MessageTemplate.from_eml(args.template, args.sender)
    else:
        if args.subject is None:
            raise CampaignInputError(
                "give --template FILE.eml, or --subject with --text and/or --html")
        template = MessageTemplate.from_parts(args.sender, args.subject, text, html)
    if args.connections < 1 or args.max_messages < 1 or not args.rate_delta > 0 \
            or (args.rate_limit is not None and args.rate_limit < 1):
        raise CampaignInputError(
            "--connections, --max-messages, --rate-limit and --rate-delta must be positive")
    embedded = args.server is None and args.service is None
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
    pool_kwargs, destination = _pool_kwargs(args)
    if args.resume:
        _check_destination(journal, destination)
    if pool_kwargs is not None:
        pool_kwargs.update(max_connections=args.connections, max_messages=args.max_messages,
                           rate_limit=args.rate_limit, rate_delta=args.rate_delta)
    return CampaignConfig(
        recipients=args.recipients, template=template, sender=args.sender,
        pool_kwargs=pool_kwargs, destination=destination, maildir=args.maildir,
        results=results, journal=journal, resume=args.resume,
        resend_uncertain=args.resend_uncertain, restart=args.restart, window=0, info=info,
    )


def cmd_send(args: argparse.Namespace) -> int:
    """Run ``fastsmtp send``; return the exit status (see the ``EXIT_*`` constants)."""
    from ._loop import new_event_loop

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
