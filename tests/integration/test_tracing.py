"""``fastsmtp.tracing``: one OpenTelemetry span per message, read back from the SDK's
in-memory exporter, for pools sending to our server on 127.0.0.1 (and to a dead port)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.env import child_env
from support.outcomes import Outcomes
from support.ports import refused_port
from support.server import serve

from fastsmtp.errors import SMTPConnectionError, SMTPMaybeDelivered, SMTPRecipientsRefused
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool
from fastsmtp.tracing import SPAN_NAME, instrument

SENDER = "sender@example.com"
RETRY_DELAY = 0.02


def body(subject: str) -> bytes:
    return f"Subject: {subject}\r\n\r\nhello\r\n".encode()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def message_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]


async def test_one_span_per_message_with_outcome_and_reply_code(
        exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
    app = provider.get_tracer("app")
    async with serve(Outcomes()) as server:
        port = server.port
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True,
                            retry_delay=RETRY_DELAY, max_attempts=2) as pool:
            stop = instrument(pool, tracer_provider=provider)
            with app.start_as_current_span("campaign") as parent:
                ok = await pool.send(body("one"),
                                     Envelope(SENDER, ["a@example.com", "nobody@example.com"]))
                with pytest.raises(SMTPRecipientsRefused):
                    await pool.send(body("two"), Envelope(SENDER, ["nobody@example.com"]))
                await pool.send(body("three"), Envelope(SENDER, ["busy@example.com"]))
                with pytest.raises(SMTPMaybeDelivered):
                    await pool.send(body("drop"), Envelope(SENDER, ["b@example.com"]))
            stop()
            await pool.send(body("untraced"), Envelope(SENDER, ["c@example.com"]))
    spans = message_spans(exporter)
    assert len(spans) == 4
    sent, refused, retried, maybe = spans
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None
        assert (span.attributes["server.address"], span.attributes["server.port"]) \
            == ("127.0.0.1", port)
        # The send() caller's span is the parent.
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    assert dict(sent.attributes or {}) == {
        "server.address": "127.0.0.1", "server.port": port, "smtp.recipients": 2,
        "smtp.size": ok.size, "smtp.outcome": "sent", "smtp.reply_code": 250}
    assert sent.status.status_code is StatusCode.UNSET
    assert refused.attributes is not None
    assert (refused.attributes["smtp.outcome"], refused.attributes["smtp.reply_code"],
            refused.attributes["smtp.size"]) == ("refused", 550, 0)
    assert refused.attributes["error.type"] == "SMTPRecipientsRefused"
    assert refused.status.status_code is StatusCode.ERROR
    assert [e.name for e in refused.events] == ["exception"]
    # The span covers the message's life in the pool: both attempts and the backoff.
    assert retried.attributes is not None and retried.attributes["smtp.outcome"] == "sent"
    assert retried.end_time - retried.start_time >= RETRY_DELAY * 1e9  # type: ignore[operator]
    assert maybe.attributes is not None
    assert maybe.attributes["smtp.outcome"] == "maybe_delivered"
    assert "smtp.reply_code" not in maybe.attributes
    assert maybe.attributes["error.type"] == "SMTPMaybeDelivered"


async def test_a_failed_message_without_a_reply(exporter: InMemorySpanExporter,
                                                provider: TracerProvider) -> None:
    with refused_port() as port:
        async with SMTPPool(host="127.0.0.1", port=port, ignore_tls=True, max_attempts=1) as pool:
            instrument(pool, tracer_provider=provider)
            with pytest.raises(SMTPConnectionError):
                await pool.send(body("x"), Envelope(SENDER, ["a@example.com"]))
    (span,) = message_spans(exporter)
    assert span.attributes is not None
    assert (span.attributes["smtp.outcome"], span.attributes["server.port"]) == ("failed", port)
    assert "smtp.reply_code" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert span.parent is None  # no span was current where send() was called


def test_the_global_tracer_provider_is_the_default() -> None:
    # The global provider can be set once per process: set it in a child.
    code = """
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fastsmtp import SMTPServerThread
from fastsmtp.message import Envelope
from fastsmtp.pool import SMTPPool
from fastsmtp.tracing import instrument

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
server = SMTPServerThread(Sink(), host="127.0.0.1", port=0)
server.start()

async def main():
    async with SMTPPool(host="127.0.0.1", port=server.port, ignore_tls=True) as pool:
        instrument(pool)
        await pool.send(b"Subject: x\\r\\n\\r\\nx\\r\\n", Envelope("a@example.com", ["b@example.com"]))

asyncio.run(main())
server.stop()
print([(s.name, s.attributes["smtp.outcome"]) for s in exporter.get_finished_spans()])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[('{SPAN_NAME}', 'sent')]"

