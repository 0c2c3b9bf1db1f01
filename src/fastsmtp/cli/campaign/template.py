"""Message templates: ``{column}`` placeholders in headers and text bodies, compiled once.

Syntax
------
Placeholders are ``{column}`` where ``column`` is a CSV column name made of letters,
digits, ``_`` and ``-`` (starting with a letter or ``_``). Any other brace is literal text,
so the CSS of an HTML body needs no escaping; ``{{name}}`` produces a literal ``{name}``.
There is no attribute access, indexing or format spec (``str.format_map`` allows
``{x.__class__}``; this syntax cannot reach anything but the row's values). Values are
substituted into headers (refused when they contain a line break: header injection) and
into ``text/*`` bodies (re-encoded: 7bit when possible, else quoted-printable UTF-8).
"""

from __future__ import annotations

import binascii
import email.policy
import email.utils
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import cast

from ..._syntax import HEADER_UNSAFE
from .errors import CampaignInputError

__all__ = ["FieldTemplate", "MessageTemplate", "MAX_LINE"]

log = logging.getLogger(__name__)

#: Longest line allowed in a 7bit body (RFC 5322 section 2.1.1).
MAX_LINE = 998

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
        # sender may be a whole From value ("News <news@example.com>"): the domain is
        # its address's.
        self._domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
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
