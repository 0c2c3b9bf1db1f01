"""fastsmtp on Celery workers: exactly once across workers, one rate limit for all.

Two ways in:

* an app you already have: ``tasks = register_tasks(app, url="smtp://mx:25",
  rate_limit=100)`` adds ``fastsmtp.send_message`` and ``fastsmtp.send_batch``;
* the ready app, configured from ``FASTSMTP_*`` environment variables
  (:mod:`.ready`): ``celery -A fastsmtp.celery worker -Q fastsmtp`` or
  ``fastsmtp worker --broker URL --server URL``.

Messages travel as JSON (:func:`message_payload`: an id, the envelope, base64 bytes),
never pickled. Each message's state lives in Redis (:mod:`.store`): claimed ``sending``
before it goes to the pool, then its outcome; a redelivered task skips what was accepted
or may have been delivered. The shared limiter is in :mod:`.ratelimit`, the tasks and the
per-process worker runtime (one warm pool after the fork) in :mod:`.tasks`.

This module needs the ``fastsmtp[celery]`` extra (celery with its Redis transport, redis).
"""

from __future__ import annotations

from typing import Any

from .ratelimit import RedisRateLimiter
from .store import Entry, MessageStore
from .tasks import (
    DEFAULT_NAMESPACE,
    SEND_BATCH,
    SEND_MESSAGE,
    FastSMTPTasks,
    MalformedBatch,
    classify,
    decode_payload,
    message_payload,
    redis_client,
    register_tasks,
)

__all__ = [
    "register_tasks",
    "FastSMTPTasks",
    "MessageStore",
    "Entry",
    "RedisRateLimiter",
    "message_payload",
    "decode_payload",
    "MalformedBatch",
    "classify",
    "redis_client",
    "SEND_MESSAGE",
    "SEND_BATCH",
    "DEFAULT_NAMESPACE",
    "app",
]

_app: Any = None


def __getattr__(name: str) -> Any:
    # The ready app is built on first access (``celery -A fastsmtp.celery`` asks for
    # ``app``), not at import: importing register_tasks must not need FASTSMTP_SMTP_URL.
    global _app
    if name == "app":
        if _app is None:
            from .ready import make_app

            _app = make_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
