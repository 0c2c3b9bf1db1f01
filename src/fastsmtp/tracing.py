"""OpenTelemetry tracing for an SMTPPool: one span per message (extra ``otel``).

Example::

    from fastsmtp.tracing import instrument

    pool = SMTPPool("smtp://localhost:2525")
    instrument(pool)  # spans go to the global tracer provider

Each message sent through the pool gets one ``SMTP send`` span of kind CLIENT, from the
``send()`` call to the message's outcome (queueing, connecting, retries and the
transaction itself), with these attributes:

* ``server.address``, ``server.port``: the server;
* ``smtp.recipients``: recipients in the envelope; ``smtp.size``: bytes of message data
  written (0 when it failed);
* ``smtp.outcome``: ``sent``, ``refused``, ``failed`` or ``maybe_delivered`` (see
  :mod:`fastsmtp.observe`); ``smtp.reply_code``: the server's final or refusing reply
  code, when there was one;
* on failure, ``error.type`` (the exception's class name), an ERROR status and the
  exception recorded as a span event.

The span's parent is the span current where ``send()`` was called (the pool calls its
observers in that context). The span is created when the outcome is known, with the
measured start time, so the pool's hot path never touches OpenTelemetry.

This module imports ``opentelemetry`` (the API only; pick an SDK yourself); ``import
fastsmtp`` never imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastsmtp.tracing needs the OpenTelemetry API: pip install 'aiofastsmtp[otel]' "
        "(or pip install opentelemetry-api)"
    ) from exc

from . import __version__
from .observe import SENT, MessageEvent

if TYPE_CHECKING:
    from .pool import SMTPPool

__all__ = ["SPAN_NAME", "SpanObserver", "instrument"]

#: The name of every message's span.
SPAN_NAME = "SMTP send"


class SpanObserver:
    """A pool observer that records one span per settled message.

    Args:
        tracer_provider: The provider to get the tracer from; None: the global one
            (``opentelemetry.trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("fastsmtp", __version__, tracer_provider=tracer_provider)

    def __call__(self, event: MessageEvent) -> None:
        """Record ``event`` as a finished span."""
        end = time.time_ns()
        attributes: dict[str, Any] = {
            "server.address": event.host,
            "server.port": event.port,
            "smtp.recipients": event.recipients,
            "smtp.size": event.size,
            "smtp.outcome": event.outcome,
        }
        if event.code is not None:
            attributes["smtp.reply_code"] = int(event.code)
        error = event.error
        if error is not None:
            attributes["error.type"] = type(error).__name__
        # The span starts when send() was called: the observer runs at the outcome.
        span = self.tracer.start_span(SPAN_NAME, kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=end - int(event.duration * 1e9))
        if event.outcome != SENT:
            span.set_status(Status(StatusCode.ERROR, f"{event.outcome}: {error}"))
            if error is not None:
                span.record_exception(error, timestamp=end)
        span.end(end_time=end)


def instrument(pool: SMTPPool,
               tracer_provider: trace.TracerProvider | None = None) -> Callable[[], None]:
    """Trace every message ``pool`` sends from now on (one span each, see the module doc).

    Args:
        pool: The pool to trace.
        tracer_provider: The provider of the spans; None: the global one.

    Returns:
        A function that stops the tracing.
    """
    return pool.add_observer(SpanObserver(tracer_provider))
