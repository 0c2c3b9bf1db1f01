"""The ready-made Celery app: ``celery -A fastsmtp.celery worker``, configured from the environment.

=========================== =====================================================
``FASTSMTP_BROKER_URL``     the broker (default ``redis://127.0.0.1:6379/0``)
``FASTSMTP_STORE_URL``      the message store and rate limit (default: the broker)
``FASTSMTP_RESULT_BACKEND`` task results (default: the store)
``FASTSMTP_SMTP_URL``       the SMTP server, ``smtp[s]://[user@]host:port/?options``
``FASTSMTP_PASSWORD``       its password when the URL names a user without one
``FASTSMTP_RATE_LIMIT``     messages per ``FASTSMTP_RATE_DELTA`` seconds, all workers
``FASTSMTP_RATE_DELTA``     the rate window in seconds (default 1)
``FASTSMTP_CONNECTIONS``    SMTP connections per worker process (default 5)
``FASTSMTP_QUEUE``          the queue the tasks are routed to (default ``fastsmtp``)
``FASTSMTP_VISIBILITY``     seconds before Redis redelivers an unacknowledged task
                            (default 3600; longer than your longest batch)
``FASTSMTP_STORE_RETRY``    seconds a store call rides out an unreachable Redis before
                            the batch fails and is retried (default 60)
=========================== =====================================================
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["make_app", "configure_app", "ENVIRONMENT"]

#: The environment variables the ready app reads (see the module docs).
ENVIRONMENT = ("FASTSMTP_BROKER_URL", "FASTSMTP_STORE_URL", "FASTSMTP_RESULT_BACKEND",
               "FASTSMTP_SMTP_URL", "FASTSMTP_PASSWORD", "FASTSMTP_RATE_LIMIT",
               "FASTSMTP_RATE_DELTA", "FASTSMTP_CONNECTIONS", "FASTSMTP_QUEUE",
               "FASTSMTP_VISIBILITY", "FASTSMTP_STORE_RETRY")

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "fastsmtp"


def configure_app(app: Any, *, queue: str = DEFAULT_QUEUE, visibility_timeout: float = 3600.0,
                  name_prefix: str = "fastsmtp") -> None:
    """Settings fastsmtp's exactly-once tasks rely on (used by the ready app and clients).

    JSON only (never pickle), one task prefetched per process (a task waiting behind a long
    batch is not held hostage by a busy process), late acks, the tasks routed to ``queue``.
    """
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A dead worker's unacknowledged tasks come back after the visibility timeout, at
        # the next sweep: kombu's default sweep period (10 s x 10) would add 100 s.
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": min(10.0, max(1.0, visibility_timeout / 4)),
            "unacked_restore_throttle": 1,
            # A sweep holds a mutex in Redis. A worker killed while holding it (every
            # worker sweeps every few seconds) blocks everyone's sweeps until it expires:
            # kombu's default is 300 s; no longer than the timeout itself here.
            "unacked_mutex_expire": min(300.0, max(5.0, visibility_timeout)),
        },
        broker_connection_retry_on_startup=True,
        task_routes={f"{name_prefix}.*": {"queue": queue}},
        task_default_queue=queue,
        result_expires=3600,
    )


def _env_number(name: str, kind: type[Any]) -> Any:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a {kind.__name__}") from None


def make_app() -> Any:
    """Build the ready app from the environment (see the module docs).

    Raises:
        ValueError: A malformed variable, or ``FASTSMTP_SMTP_URL`` missing.
    """
    from celery import Celery  # type: ignore[import-untyped]

    from ..options import parse_url
    from .tasks import STORE_RETRY_SECONDS, register_tasks

    broker = os.environ.get("FASTSMTP_BROKER_URL") or DEFAULT_BROKER
    store = os.environ.get("FASTSMTP_STORE_URL") or broker
    backend = os.environ.get("FASTSMTP_RESULT_BACKEND") or store
    smtp = os.environ.get("FASTSMTP_SMTP_URL")
    app = Celery("fastsmtp", broker=broker, backend=backend)
    configure_app(app, queue=os.environ.get("FASTSMTP_QUEUE") or DEFAULT_QUEUE,
                  visibility_timeout=_env_number("FASTSMTP_VISIBILITY", float) or 3600.0)
    if not smtp:
        raise ValueError("set $FASTSMTP_SMTP_URL to the SMTP server the workers send to "
                         "(smtp://host:587 or smtps://user@host:465)")
    try:
        options = parse_url(smtp)
    except ValueError as exc:
        raise ValueError(f"$FASTSMTP_SMTP_URL: {exc}") from None
    user = options.pop("user", None)
    if user is not None and "auth" not in options:
        password = os.environ.get("FASTSMTP_PASSWORD")
        if password is None:
            raise ValueError(f"$FASTSMTP_SMTP_URL names the user {user!r}: set "
                             "$FASTSMTP_PASSWORD to the password")
        options["auth"] = (user, password)
    connections = _env_number("FASTSMTP_CONNECTIONS", int)
    if connections is not None:
        options["max_connections"] = connections
    options.pop("rate_limit", None)  # the shared limit below replaces the pool's own
    options.pop("rate_delta", None)
    store_retry = _env_number("FASTSMTP_STORE_RETRY", float)
    if store_retry is not None and not store_retry > 0:
        raise ValueError(f"$FASTSMTP_STORE_RETRY={store_retry}: give a positive number of "
                         "seconds")
    app.fastsmtp_tasks = register_tasks(
        app, store_url=store, store_retry=store_retry or STORE_RETRY_SECONDS, rate_limit=_env_number("FASTSMTP_RATE_LIMIT", int),
        rate_delta=_env_number("FASTSMTP_RATE_DELTA", float) or 1.0, **options)
    return app
