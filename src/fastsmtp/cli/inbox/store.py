"""The web inbox's messages: :class:`MessageStore` (in memory, bounded) and the SMTP
handler feeding it (:func:`inbox_handler`). No aiohttp here: ``fastsmtp serve`` reads
:data:`DEFAULT_MAX_MESSAGES` without the ``web`` extra installed.

The store keeps at most ``max_messages`` messages (default :data:`DEFAULT_MAX_MESSAGES`);
when a new one arrives at the bound, the oldest is dropped, so memory stays bounded by
``max_messages`` times the server's ``max_size``. It belongs to one event loop (the
server's) and is not thread-safe. Only the headers the list shows are decoded when a
message arrives; the full parse (text, HTML, attachments) happens when one is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from ...handlers import StreamingHandler

__all__ = ["DEFAULT_MAX_MESSAGES", "StoredMessage", "MessageStore", "inbox_handler"]

log = logging.getLogger("fastsmtp.cli.inbox")

#: How many messages the inbox keeps by default (``--web-max-messages``); the oldest go first.
DEFAULT_MAX_MESSAGES = 500

_HEADERS_PARSER = BytesParser(policy=policy.default)


def _header(message: Message, name: str) -> str:
    """The decoded value of header ``name`` ('' if absent; the raw text if undecodable)."""
    try:
        value = message.get(name)
    except Exception:  # a malformed header must not lose the message: show it raw
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        return str(raw)
    return "" if value is None else str(value)


def _text_of(part: Message) -> str:
    """A text part's content as a string (``\\n`` line ends), whatever its charset claims."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, KeyError):  # unknown charset, broken encoding
        content = None
    if not isinstance(content, str):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content.replace("\r\n", "\n")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One received message, as the inbox keeps it.

    Attributes:
        id: Its number in this inbox (1, 2, ...; never reused after a delete).
        received: When it was accepted (seconds since the epoch).
        mail_from: The envelope sender (``MAIL FROM``).
        rcpt_tos: The envelope recipients (``RCPT TO``).
        raw: The message exactly as received (CRLF line endings, unstuffed).
        subject: The decoded ``Subject`` header.
        from_: The decoded ``From`` header.
        to: The decoded ``To`` header.
    """

    id: int
    received: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    subject: str
    from_: str
    to: str

    @classmethod
    def parse(cls, id: int, received: float, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> StoredMessage:
        """Build the stored form, decoding only the headers the list shows."""
        # Never raises: the message was accepted (perhaps already fsynced into a Maildir),
        # so a failure here must not turn its 250 into an error the client would retry.
        try:
            headers = _HEADERS_PARSER.parsebytes(raw, headersonly=True)
        except Exception:
            log.warning("could not parse the headers of message %d for the web inbox", id, exc_info=True)
            return cls(id, received, mail_from, rcpt_tos, raw, "", "", "")
        return cls(
            id, received, mail_from, rcpt_tos, raw,
            _header(headers, "subject"), _header(headers, "from"), _header(headers, "to"),
        )

    def summary(self) -> dict[str, Any]:
        """The list entry: what ``GET /api/messages`` returns for each message."""
        received = datetime.datetime.fromtimestamp(self.received, datetime.timezone.utc)
        return {
            "id": self.id,
            "received": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "from": self.from_,
            "to": self.to,
            "subject": self.subject,
            "size": len(self.raw),
        }

    def parsed(self) -> EmailMessage:
        """The whole message parsed (done on demand: only the list is needed per message)."""
        message = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(message, EmailMessage)
        return message

    def html(self) -> str | None:
        """The message's HTML body, or None if it has none (or cannot be parsed)."""
        try:
            part = self.parsed().get_body(preferencelist=("html",))
        except Exception:
            log.warning("could not parse message %d for the web inbox", self.id, exc_info=True)
            return None
        return None if part is None else _text_of(part)

    def detail(self) -> dict[str, Any]:
        """The message view: what ``GET /api/messages/{id}`` returns."""
        try:
            return self._detail()
        except Exception:  # the email package gave up: still show the message, as text
            log.warning("could not parse message %d for the web inbox", self.id, exc_info=True)
            return {
                **self.summary(), "date": "", "cc": "", "headers": [], "attachments": [],
                "text": self.raw.decode("utf-8", "replace").replace("\r\n", "\n"), "html": None,
            }

    def _detail(self) -> dict[str, Any]:
        message = self.parsed()
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        headers = []
        for name, value in message.raw_items():
            try:
                shown = str(policy.default.header_fetch_parse(name, value))
            except Exception:  # undecodable: show the header as it came
                shown = str(value)
            headers.append([name, shown])
        attachments = []
        for part in message.iter_attachments():
            payload = part.get_payload(decode=True)
            attachments.append({
                "filename": part.get_filename() or "",
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            })
        return {
            **self.summary(),
            "date": _header(message, "date"),
            "cc": _header(message, "cc"),
            "headers": headers,
            "text": None if text is None else _text_of(text),
            "html": None if html is None else _text_of(html),
            "attachments": attachments,
        }


class MessageStore:
    """The inbox's messages in memory, newest last, at most ``max_messages`` of them.

    Adding a message at the bound drops the oldest. Every change wakes the subscribers
    (the page's event streams), which then fetch the list again: a burst of messages
    costs one refresh, not one per message.

    Args:
        max_messages: The bound (``--web-max-messages``); at least 1.
    """

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError(f"--web-max-messages must be at least 1, not {max_messages}")
        self.max_messages = max_messages
        self._messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self._ids = itertools.count(1)
        self._listeners: set[asyncio.Event] = set()
        #: Bumped on every change; the event stream sends it so a page can tell changes apart.
        self.version = 0
        #: Set when the inbox stops: event streams end instead of waiting for changes.
        self.closed = False

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[StoredMessage]:
        """The messages, newest first."""
        return reversed(self._messages.values())

    def add(self, mail_from: str, rcpt_tos: list[str] | tuple[str, ...], raw: bytes) -> StoredMessage:
        """Keep a received message (dropping the oldest at the bound) and return it."""
        message = StoredMessage.parse(next(self._ids), time.time(), mail_from, tuple(rcpt_tos), raw)
        self._messages[message.id] = message
        while len(self._messages) > self.max_messages:
            self._messages.popitem(last=False)
        self._changed()
        return message

    def get(self, id: int) -> StoredMessage | None:
        """The message numbered ``id``, or None (never received, deleted or dropped)."""
        return self._messages.get(id)

    def delete(self, id: int) -> bool:
        """Delete one message; False if there was no such message."""
        if self._messages.pop(id, None) is None:
            return False
        self._changed()
        return True

    def clear(self) -> int:
        """Delete every message; return how many there were."""
        count = len(self._messages)
        self._messages.clear()
        self._changed()
        return count

    def subscribe(self) -> asyncio.Event:
        """An event set on every change (clear it after each wake-up)."""
        event = asyncio.Event()
        self._listeners.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Forget an event from :meth:`subscribe`."""
        self._listeners.discard(event)

    def close(self) -> None:
        """Wake every subscriber for the last time (the inbox is stopping)."""
        self.closed = True
        for event in self._listeners:
            event.set()

    def _changed(self) -> None:
        self.version += 1
        for event in self._listeners:
            event.set()


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    """Call a handler hook that may be a plain function or a coroutine function."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Keeper:
    """Keeps every message in the store; the whole handler when ``--web`` is alone, or a
    wrapper around a handler with ``handle_DATA`` (``Printing``)."""

    def __init__(self, store: MessageStore, inner: Any = None) -> None:
        self.store = store
        self._inner_data: Callable[..., Any] | None = getattr(inner, "handle_DATA", None)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Let the wrapped handler accept the message first, then keep it."""
        reply = None
        if self._inner_data is not None:
            reply = await _call(self._inner_data, server, session, envelope)
        self.store.add(envelope.mail_from, envelope.rcpt_tos, envelope.content)
        return reply or "250 2.0.0 OK: kept in the web inbox"


class _StreamingKeeper(StreamingHandler):
    """Wraps a streaming handler (``Maildir``): its chunks are also collected for the store.

    The message is in memory only for as long as the inbox keeps it, which it does anyway.
    """

    def __init__(self, store: MessageStore, inner: Any) -> None:
        self.store = store
        self._inner = inner

    async def start_data(self, session: Any, envelope: Any) -> str | None:
        """Start the wrapped handler's message and an empty buffer for ours."""
        hook = getattr(self._inner, "start_data", None)
        refused = None if hook is None else await _call(hook, session, envelope)
        if refused is None:
            envelope.inbox_chunks = []
        return refused

    async def data_chunk(self, session: Any, envelope: Any, chunk: bytes) -> None:
        """Hand the chunk on, and keep it."""
        await _call(self._inner.data_chunk, session, envelope, chunk)
        envelope.inbox_chunks.append(chunk)

    async def data_ready(self, session: Any, envelope: Any) -> str:
        """Once the wrapped handler accepted the message (e.g. fsynced it), keep it."""
        reply: str = await _call(self._inner.data_ready, session, envelope)
        chunks = envelope.inbox_chunks
        del envelope.inbox_chunks
        self.store.add(envelope.mail_from, envelope.rcpt_tos, b"".join(chunks))
        return reply

    async def data_abort(self, session: Any, envelope: Any) -> None:
        """Drop our buffer; let the wrapped handler clean up."""
        with contextlib.suppress(AttributeError):
            del envelope.inbox_chunks
        hook = getattr(self._inner, "data_abort", None)
        if hook is not None:
            await _call(hook, session, envelope)


def inbox_handler(store: MessageStore, inner: Any = None) -> Any:
    """The SMTP handler feeding ``store``: alone, or wrapped around ``inner``.

    Args:
        store: Where accepted messages go.
        inner: ``None`` (messages only in memory), a streaming handler (``Maildir``: it
            keeps streaming to disk) or a ``handle_DATA`` handler (``Printing``).
    """
    if inner is None or getattr(inner, "handle_DATA", None) is not None:
        return _Keeper(store, inner)
    if hasattr(inner, "data_chunk") and hasattr(inner, "data_ready"):
        return _StreamingKeeper(store, inner)
    raise TypeError(f"the web inbox cannot wrap {type(inner).__name__}: it has no DATA hook")
