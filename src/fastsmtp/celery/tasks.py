"""The tasks and the per-process worker runtime (one warm pool, one store client, one limiter).

A Celery worker process forks its children before any task runs, and neither an event loop
nor a socket survives a fork. So nothing is built at import or registration time: the
first task a child process runs builds its :class:`WorkerRuntime` (an event loop in a
thread of its own, an :class:`~fastsmtp.pool.SMTPPool` on it, a ``redis.asyncio`` client
and the shared :class:`~.ratelimit.RedisRateLimiter`), every later task reuses it (warm
connections), and Celery's ``worker_process_shutdown`` / ``worker_shutdown`` signals close
it (the pool's messages in flight finish, connections QUIT).

A task body blocks on its coroutine, run on that loop thread; the pool's own rate limit
stays off (the shared limiter takes its place, see :mod:`.ratelimit`).

Failures
--------
A task whose execution fails with an unexpected exception (a store call that exhausted
its retries while Redis was away, ...) is *retried* by Celery, up to
:data:`BATCH_RETRIES` times with a doubling countdown: acks_late acks a failure too, so
without a retry its messages would stay ``queued`` for ever. The retry is a new
execution with a new token, so the store's rule for a message found ``sending`` applies:
what the failed execution had claimed becomes ``maybe-delivered`` (never resent unless
``resend_uncertain``), the rest is sent once. A malformed payload is not retried (no
retry can fix it): that message is recorded ``failed`` with the reason and the batch's
other messages are sent; a batch that is not a list of payloads fails at once
(:class:`MalformedBatch`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar

from ..message import Envelope, envelope_from_message
from ..outcome import classify
from .ratelimit import RedisRateLimiter
from .store import MessageStore

__all__ = [
    "SEND_MESSAGE",
    "SEND_BATCH",
    "DEFAULT_NAMESPACE",
    "TaskConfig",
    "FastSMTPTasks",
    "WorkerRuntime",
    "register_tasks",
    "message_payload",
    "decode_payload",
    "MalformedBatch",
    "BATCH_RETRIES",
    "classify",
    "redis_client",
]

log = logging.getLogger("fastsmtp.celery")
T = TypeVar("T")

#: Name of the task sending one message.
SEND_MESSAGE = "fastsmtp.send_message"
#: Name of the task sending a batch of messages.
SEND_BATCH = "fastsmtp.send_batch"
#: Store namespace of tasks that name none.
DEFAULT_NAMESPACE = "fastsmtp"
#: Messages a worker process keeps outstanding in its pool (and claims per store call).
DEFAULT_WINDOW = 32
#: Seconds a store call keeps retrying while Redis is unreachable (a restart).
STORE_RETRY_SECONDS = 60.0
#: Times a failed batch is retried before the task fails for good.
BATCH_RETRIES = 5
#: Countdown in seconds before the first retry of a failed batch; doubled at each retry.
RETRY_BACKOFF = 1.0
#: Longest countdown before a retry, in seconds.
RETRY_BACKOFF_MAX = 30.0


class MalformedBatch(ValueError):
    """A task's batch is not a list of message payloads: a permanent failure, never retried."""


def message_payload(msg_id: str, message: bytes | str | Message,
                    envelope: Envelope | None = None) -> dict[str, Any]:
    """The JSON task form of one message: its id, envelope and base64 bytes.

    Args:
        msg_id: Unique in the namespace the message is sent in (the store's key).
        message: The bytes (or an ASCII/UTF-8 str, or an EmailMessage, whose Bcc is removed).
        envelope: Sender and recipients; None to derive them from an EmailMessage.

    Raises:
        ValueError: No envelope for raw bytes, or an empty id.
    """
    if not msg_id:
        raise ValueError("every message needs a non-empty id (unique in its namespace)")
    if isinstance(message, Message):
        envelope = envelope or envelope_from_message(message)
        message = message.as_bytes() if "Bcc" not in message else _without_bcc(message)
    elif envelope is None:
        raise ValueError("give an envelope with raw message bytes")
    data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    return {"id": msg_id, "mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_to),
            "data": base64.b64encode(data).decode("ascii")}


def _without_bcc(message: Message) -> bytes:
    import copy

    clone = copy.copy(message)
    del clone["Bcc"]
    return clone.as_bytes()


def decode_payload(payload: Mapping[str, Any]) -> tuple[str, Envelope, bytes]:
    """``(id, envelope, bytes)`` of a :func:`message_payload` dict.

    Raises:
        ValueError: A malformed payload (named field missing or of the wrong type).
    """
    try:
        msg_id = str(payload["id"])
        if not msg_id:
            raise ValueError("empty id")
        return (msg_id, Envelope(payload["mail_from"], payload["rcpt_to"]),
                base64.b64decode(payload["data"], validate=True))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed message payload (id, mail_from, rcpt_to, data): {exc}"
                         ) from None


def redis_client(url: str, retry_seconds: float = STORE_RETRY_SECONDS) -> Any:
    """A ``redis.asyncio`` client that rides out a Redis restart of ``retry_seconds``."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    cap = 0.5
    retries = max(1, int(retry_seconds / cap))
    return Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=cap, base=0.02), retries),
                          retry_on_error=[ConnectionError, TimeoutError, OSError])


@dataclass
class TaskConfig:
    """What the worker side of :func:`register_tasks` was given.

    Attributes:
        store_url: The Redis of the message store and the rate limiter.
        pool_options: Keyword arguments of :class:`~fastsmtp.pool.SMTPPool` (a ``url``
            key is its first argument); ``rate_limit`` is never among them.
        rate_limit: Messages per ``rate_delta`` for all workers together; None: no limit.
        rate_delta: The window in seconds.
        rate_key: Redis key prefix of the shared limit (default: per SMTP host and port).
        namespace: Store namespace of tasks that name none.
        window: Messages outstanding per worker process.
        store_retry: Seconds a store call keeps retrying while Redis is unreachable before
            the execution fails (and is retried, see the module docs).
        retries: Times a failed batch is retried.
    """

    store_url: str
    pool_options: dict[str, Any] = field(default_factory=dict)
    rate_limit: int | None = None
    rate_delta: float = 1.0
    rate_key: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    window: int = DEFAULT_WINDOW
    store_retry: float = STORE_RETRY_SECONDS
    retries: int = BATCH_RETRIES


def _payload_id(payload: Any) -> str:
    """The id of a payload that failed to decode, "" when it has no usable one."""
    if isinstance(payload, Mapping):
        value = payload.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return ""


class WorkerRuntime:
    """One worker process's event loop thread, warm pool, store client and limiter.

    Args:
        config: The tasks' configuration.
    """

    def __init__(self, config: TaskConfig) -> None:
        from .._loop import new_event_loop

        self.config = config
        self.pid = os.getpid()
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fastsmtp-celery",
                                        daemon=True)
        self._thread.start()
        self._stores: dict[str, MessageStore] = {}
        self._closed = False
        try:
            self.run(self._build())
        except BaseException:
            self._stop()
            raise

    async def _build(self) -> None:
        from ..pool import SMTPPool

        options = dict(self.config.pool_options)
        url = options.pop("url", None)
        self.pool = SMTPPool(url, **options)
        self.client = redis_client(self.config.store_url, self.config.store_retry)
        self.limiter: RedisRateLimiter | None = None
        if self.config.rate_limit:
            o = self.pool.options
            key = self.config.rate_key or f"fastsmtp:rate:{o.host}:{o.port}"
            self.limiter = RedisRateLimiter(self.client, key, self.config.rate_limit,
                                            self.config.rate_delta)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the runtime's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def store(self, namespace: str) -> MessageStore:
        """The store of ``namespace`` (one object per namespace, same client)."""
        store = self._stores.get(namespace)
        if store is None:
            store = self._stores[namespace] = MessageStore(self.client, namespace)
        return store

    async def send_batch(self, payloads: Sequence[Mapping[str, Any]], namespace: str,
                         resend_uncertain: bool, token: str) -> list[dict[str, Any]]:
        """Send what the store lets this execution send; every message's outcome, in order.

        Messages are claimed ``sending`` in groups of ``window`` (one per message with a
        rate limit: a permit first, then its claim, so nothing waits ``sending``), their
        outcomes recorded in groups as they come (each at once with a rate limit). A
        message the store excludes is reported with its stored status and
        ``"attempted": False``; so is a malformed payload, recorded ``failed`` with the
        reason (the others are sent), and a payload whose id came earlier in the batch
        (with that one's outcome: the message is sent once).

        Raises:
            MalformedBatch: ``payloads`` is not a list (nothing is sent or recorded).
        """
        store = self.store(namespace)
        limiter = self.limiter
        window = self.config.window
        claim_size = 1 if limiter is not None else window
        if not isinstance(payloads, (list, tuple)):
            raise MalformedBatch("a batch is a list of message_payload() dicts, not "
                                 f"{type(payloads).__name__}")
        decoded: list[tuple[int, str, Envelope, bytes]] = []
        results: dict[int, dict[str, Any]] = {}
        malformed: list[tuple[int, str, str]] = []
        first: dict[str, int] = {}  # id -> index of the payload that is sent
        duplicates: list[tuple[int, int]] = []  # (index, index of the same id's first)
        for index, payload in enumerate(payloads):
            try:
                msg_id, envelope, data = decode_payload(payload)
            except ValueError as exc:
                malformed.append((index, _payload_id(payload), str(exc)))
                continue
            if msg_id in first:
                # The same id twice in one batch (built by hand): one message, sent
                # once. The two claims would share this execution's token, so the store
                # alone could not tell them apart.
                duplicates.append((index, first[msg_id]))
                continue
            first[msg_id] = index
            decoded.append((index, msg_id, envelope, data))
        if malformed:
            await self._record_malformed(store, token, malformed, results)
        meta: dict[int, tuple[int, str, str | None]] = {}

        async def source() -> AsyncIterator[tuple[bytes, Envelope]]:
            for start in range(0, len(decoded), claim_size):
                chunk = decoded[start:start + claim_size]
                permit = await limiter.acquire() if limiter is not None else None
                prior = await store.claim([m[1] for m in chunk], token,
                                          resend_uncertain=resend_uncertain)
                for (index, msg_id, envelope, data), before in zip(chunk, prior):
                    if before:
                        results[index] = {"id": msg_id, "status": before, "code": None,
                                          "reply": "", "attempted": False}
                        if permit is not None:
                            await limiter.release([permit])  # type: ignore[union-attr]
                        continue
                    item = (data, envelope)
                    meta[id(item)] = (index, msg_id, permit)
                    yield item

        buffered: list[tuple[str, str, int | None, str]] = []
        flush_every = 1 if limiter is not None else window
        async for item, outcome in self.pool.send_many(source(), window=window):
            index, msg_id, permit = meta.pop(id(item))
            if permit is not None:
                await limiter.release([permit])  # type: ignore[union-attr]
            status, code, reply = classify(outcome)
            buffered.append((msg_id, status, code, reply))
            results[index] = {"id": msg_id, "status": status, "code": code, "reply": reply,
                              "attempted": True}
            if len(buffered) >= flush_every:
                await store.record(token, buffered)
                buffered = []
        await store.record(token, buffered)
        for index, original in duplicates:
            results[index] = {**results[original], "attempted": False}
        return [results[i] for i in range(len(payloads))]

    @staticmethod
    async def _record_malformed(store: MessageStore, token: str,
                                malformed: Sequence[tuple[int, str, str]],
                                results: dict[int, dict[str, Any]]) -> None:
        """Record each malformed payload's message ``failed`` (a final, visible outcome).

        Through the store's claim like any send, so a message that is already final (or
        uncertain) keeps its status. One without a usable id cannot be recorded: it is
        logged and reported with ``"id": ""``.
        """
        known = [(i, msg_id, reason) for i, msg_id, reason in malformed if msg_id]
        prior = await store.claim([m[1] for m in known], token)
        await store.record(token, [(msg_id, "failed", None, reason)
                                   for (_, msg_id, reason), before in zip(known, prior)
                                   if not before])
        for (index, msg_id, reason), before in zip(known, prior):
            results[index] = {"id": msg_id, "status": before or "failed", "code": None,
                              "reply": "" if before else reason, "attempted": False}
        for index, msg_id, reason in malformed:
            if not msg_id:
                log.error("payload %d of a batch has no id, not recorded: %s", index, reason)
                results[index] = {"id": "", "status": "failed", "code": None,
                                  "reply": reason, "attempted": False}

    def close(self) -> None:
        """Close the pool (messages in flight finish) and the store client; stop the loop."""
        if self._closed:
            return
        try:
            self.run(self._close())
        finally:
            self._stop()

    async def _close(self) -> None:
        try:
            await self.pool.close()
        finally:
            await self.client.aclose()

    def _stop(self) -> None:
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class FastSMTPTasks:
    """The tasks :func:`register_tasks` added to an app, and their worker runtime.

    Attributes:
        send_message: The task ``send_message(payload, namespace=None,
            resend_uncertain=False)`` returning one outcome dict.
        send_batch: The task ``send_batch(payloads, namespace=None,
            resend_uncertain=False)`` returning one outcome dict per message, in order:
            ``{"id", "status", "code", "reply", "attempted"}``.
        config: The worker-side configuration.
    """

    def __init__(self, app: Any, config: TaskConfig, name_prefix: str) -> None:
        self.app = app
        self.config = config
        self._runtime: WorkerRuntime | None = None
        self._lock = threading.Lock()
        tasks = self
        # acks_late + reject_on_worker_lost: a task whose worker died goes back to the
        # queue (another worker runs it; the store makes that safe). json: never pickle.
        opts: dict[str, Any] = dict(bind=True, acks_late=True, reject_on_worker_lost=True,
                                    serializer="json")

        @app.task(name=f"{name_prefix}.send_batch", **opts)  # type: ignore[untyped-decorator]
        def send_batch(self: Any, payloads: list[dict[str, Any]], namespace: str | None = None,
                       resend_uncertain: bool = False) -> list[dict[str, Any]]:
            """Send a batch of messages exactly once each; every message's outcome."""
            return tasks.run_task(self, payloads, namespace, resend_uncertain)

        @app.task(name=f"{name_prefix}.send_message", **opts)  # type: ignore[untyped-decorator]
        def send_message(self: Any, payload: dict[str, Any], namespace: str | None = None,
                         resend_uncertain: bool = False) -> dict[str, Any]:
            """Send one message exactly once; its outcome."""
            return tasks.run_task(self, [payload], namespace, resend_uncertain)[0]

        self.send_batch = send_batch
        self.send_message = send_message

    def runtime(self) -> WorkerRuntime:
        """This process's runtime, built on first use (after the worker's fork)."""
        rt = self._runtime
        if rt is None or rt.pid != os.getpid():
            with self._lock:
                rt = self._runtime
                if rt is None or rt.pid != os.getpid():
                    rt = self._runtime = WorkerRuntime(self.config)
        return rt

    def run_batch(self, payloads: Sequence[Mapping[str, Any]], namespace: str | None,
                  resend_uncertain: bool, task_id: str | None) -> list[dict[str, Any]]:
        """The body of both tasks (callable without Celery, e.g. in tests of one process)."""
        rt = self.runtime()
        # Unique per execution: a redelivered task is another execution (see .store).
        token = f"{task_id or '-'}:{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        out = rt.run(rt.send_batch(payloads, namespace or self.config.namespace,
                                   resend_uncertain, token))
        log.debug("batch of %d in %.3f s", len(out), time.monotonic() - started)
        return out

    def run_task(self, task: Any, payloads: Any, namespace: str | None,
                 resend_uncertain: bool) -> list[dict[str, Any]]:
        """Run a task's batch; retry the task (a new execution) when it fails unexpectedly.

        Without the retry a failure would be final: acks_late acks it, Celery never
        redelivers it and its messages stay ``queued``. A :class:`MalformedBatch` is not
        retried (no retry can fix it); after ``config.retries`` retries the exception is
        the task's failure.
        """
        try:
            return self.run_batch(payloads, namespace, resend_uncertain, task.request.id)
        except MalformedBatch as exc:
            log.error("task %s: %s; not retried (no retry can fix it)", task.request.id, exc)
            raise
        except Exception as exc:
            attempt = int(task.request.retries or 0)
            if attempt >= self.config.retries:
                log.error("task %s failed for good after %d retries: %r", task.request.id,
                          attempt, exc)
                raise
            countdown = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2 ** attempt)
            log.warning("task %s failed (%r): retry %d of %d in %.0f s", task.request.id,
                        exc, attempt + 1, self.config.retries, countdown)
            raise task.retry(exc=exc, countdown=countdown,
                             max_retries=self.config.retries) from exc

    def close(self, **_signal_kwargs: Any) -> None:
        """Close this process's runtime, if it has one (connected to Celery's signals)."""
        rt, self._runtime = self._runtime, None
        if rt is not None and rt.pid == os.getpid():
            rt.close()


def register_tasks(app: Any, *, store_url: str | None = None, rate_limit: int | None = None,
                   rate_delta: float = 1.0, rate_key: str | None = None,
                   namespace: str = DEFAULT_NAMESPACE, window: int = DEFAULT_WINDOW,
                   store_retry: float = STORE_RETRY_SECONDS, retries: int = BATCH_RETRIES,
                   name_prefix: str = "fastsmtp", url: str | Mapping[str, Any] | None = None,
                   **pool_options: Any) -> FastSMTPTasks:
    """Add fastsmtp's tasks to an existing Celery app.

    Args:
        app: The ``celery.Celery`` app.
        store_url: The Redis of the message store and of the shared rate limit (default:
            the app's broker URL when it is a Redis one).
        rate_limit: Messages per ``rate_delta`` seconds for *all* workers together.
        rate_delta: The rate window in seconds.
        rate_key: Redis key prefix of the limit (default ``fastsmtp:rate:HOST:PORT``).
        namespace: Store namespace of tasks that name none.
        window: Messages outstanding per worker process.
        store_retry: Seconds a store call keeps retrying while Redis is unreachable (a
            restart) before the execution fails and is retried.
        retries: Times a failed batch is retried (countdown 1 s, doubling, at most
            30 s) before its task fails for good; a malformed batch is never retried.
        name_prefix: Task names are ``PREFIX.send_message`` and ``PREFIX.send_batch``.
        url: The SMTP server (``smtp://``/``smtps://`` URL or options mapping), as for
            :class:`~fastsmtp.pool.SMTPPool`.
        **pool_options: Further :class:`~fastsmtp.pool.SMTPPool` options (``auth``,
            ``max_connections``, ...). ``rate_limit`` is the shared one above.

    Returns:
        The tasks and their runtime.

    Raises:
        ValueError: No store URL and no Redis broker, or a bad rate limit.
    """
    from celery import signals  # type: ignore[import-untyped]

    if store_url is None:
        broker = str(app.conf.broker_url or "")
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("give store_url='redis://HOST:PORT/DB' (the broker is not Redis)")
        store_url = broker
    if rate_limit is not None and rate_limit < 1:
        raise ValueError("rate_limit must be at least 1 (None: no limit)")
    if not rate_delta > 0:
        raise ValueError("rate_delta must be positive")
    if window < 1:
        raise ValueError("window must be at least 1")
    if not store_retry > 0:
        raise ValueError("store_retry must be positive (seconds)")
    if retries < 0:
        raise ValueError("retries must be 0 or more")
    options = dict(pool_options)
    if url is not None:
        options["url"] = url
    config = TaskConfig(store_url=store_url, pool_options=options, rate_limit=rate_limit,
                        rate_delta=rate_delta, rate_key=rate_key, namespace=namespace,
                        window=window, store_retry=store_retry, retries=retries)
    tasks = FastSMTPTasks(app, config, name_prefix)
    signals.worker_process_shutdown.connect(tasks.close, weak=False)
    signals.worker_shutdown.connect(tasks.close, weak=False)
    return tasks
