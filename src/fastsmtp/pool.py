"""SMTPPool: the pooled transport (nodemailer-smtp-pool, for asyncio).

Theory of operation
-------------------
``send()`` turns a message into a *job* (envelope, message, one future) and hands it to
an idle slot or appends it to a bounded FIFO of pending jobs. A *slot* is one worker task
that owns at most one :class:`~fastsmtp.connection.SMTPConnection` at a time; there are
at most ``max_connections`` slots. Idle slots wait on a LIFO stack, so the most recently
used (warm) connection takes the next job and surplus connections age out through
``idle_timeout`` (asyncpg's pool does the same).

A slot takes a job, opens its connection if needed (greeting, EHLO, STARTTLS, AUTH)
and hands the connection a *run*: :meth:`SMTPConnection.send_jobs` fed lazily from the
queue, up to ``batch_size`` jobs. There is one delivery path: a lone message is a run of
one. Pipelining itself is the connection's business: when the server offers PIPELINING
(RFC 2920) the next job is pulled from the queue just before the previous message's
final dot is written, and its MAIL/RCPT/DATA go out in the same write, so a busy
connection costs about one round trip and one write per message while the bytes of two
messages never interleave. A run ends when the queue is empty, at ``batch_size`` or
``max_messages``, or when no rate-limit permit is free at once (the slot then waits for
one before the next run, so a rate-limited pool never bursts past its limit).

Every job's future resolves exactly once (``_settle`` is the only place that resolves
one). The retry rule: a failure before the final dot was written (connection refused or
lost, timeout, protocol error, any 4xx) goes back to the front of the queue after a
backoff, up to ``max_attempts`` attempts; a 4xx from a healthy connection is retried on
another connection. A 5xx fails at once. A 250 is never resent. A connection lost after
the final dot and before its reply fails the job with
:class:`~fastsmtp.errors.SMTPMaybeDelivered`, never a silent resend.

Failures stay where they happen: an attempt is charged only to the jobs that were on
the failing connection. A connection that cannot be opened, or breaks before doing any
work, charges nobody (its job goes back to the front of the queue); it counts against
its server's :class:`~fastsmtp.breaker.CircuitBreaker`, which opens after
``breaker_threshold`` such failures in a row (no new connection until a doubling
cool-down ends, then one trial). Each trip, when no other server can take the queue,
charges every waiting job an attempt, so a dead server fails the queue in bounded time
without a hot reconnect loop. With ``hosts=[...]`` each server has its own breaker;
connections go to the least loaded server by weight among those whose circuit is closed.

Connection lifetime: ``max_connection_age`` renews a connection between messages,
``probe_idle`` RSETs a connection idle that long before reuse (a failed probe costs no
attempt), and a 421 ending a session that had delivered is retried on a fresh
connection for free (:func:`~fastsmtp.retry.is_session_cut`; at most ``max_attempts``
times per job, each after a delivery, so no hot loop). A "slow down" reply
(:func:`~fastsmtp.retry.is_slow_down`) lowers the pool's own rate
(:class:`~fastsmtp.ratelimit.AdaptiveRate`, AIMD; :attr:`SMTPPool.throttle`).

A caller that cancels ``send()`` never cancels the transaction itself: a job still
queued is dropped, one in flight runs to its end on the connection (whose result is then
discarded), so no connection is ever left half-way through a transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import fields
from email.message import Message
from typing import Any

from ._transaction import resolve_envelope, split_item
from .breaker import CircuitBreaker
from .connection import SendResult, SMTPConnection
from .errors import (
    SMTPConnectionError,
    SMTPError,
    SMTPPoolClosed,
)
from .message import Envelope, MessageSource
from .observe import SENT, MessageEvent, Observer, PoolCounters

# Pool options, credentials and URLs live in options.py (each option declared once);
# re-exported here, where they have always been importable from.
from .options import (
    FAST_BATCH_SIZE,
    Auth,
    ConnectionOptions,
    PoolOptions,
    _option_name,
    parse_url,
)
from .ratelimit import AdaptiveRate, RateLimiter
from .retry import is_retryable, is_session_cut, is_slow_down
from .services import lookup_service

__all__ = ["SMTPPool", "PoolOptions", "Auth", "parse_url", "PIPELINE_DEPTH", "FAST_BATCH_SIZE"]

_log = logging.getLogger("fastsmtp.pool")

#: ``send()`` tasks one connection keeps in flight (with ``batch_size=1`` or a rate limit)
#: when the server offers PIPELINING: enough that the next one is always waiting for the
#: write turn when a dot is written, so its envelope rides in the same write.
PIPELINE_DEPTH = 4

#: The ``get_socket`` hook: ``async get_socket(options) -> socket | None``.
GetSocket = Callable[[ConnectionOptions], Awaitable[socket.socket | None]]


# -- jobs and slots ------------------------------------------------------------------------


class _Job:
    """One message on its way: resolved exactly once through ``SMTPPool._settle``."""

    __slots__ = ("envelope", "message", "future", "attempts", "renewals", "avoid", "position",
                 "started", "context", "notify")

    def __init__(self, envelope: Envelope, message: MessageSource, future: asyncio.Future[Any]):
        self.envelope = envelope
        self.message = message
        self.future = future
        self.attempts = 0
        # Set only while the pool has observers: when send() was called, and its context
        # (the observers run in it, so a span gets the caller's span as its parent).
        self.started = 0.0
        self.context: contextvars.Context | None = None
        self.renewals = 0  # free retries after a session cut (bounded by max_attempts)
        self.avoid: SMTPConnection | None = None  # retry a 4xx elsewhere than here
        # Called with ``future`` once settled (send_many's: cheaper than a done callback,
        # which costs a loop callback per message).
        self.notify: Callable[[asyncio.Future[Any]], None] | None = None
        # Where a seekable file message started, to rewind it for a retry.
        self.position = (None if type(message) is bytes or not hasattr(message, "seek")
                         else message.tell())  # type: ignore[union-attr]


class _Slot:
    """One worker task and the connection it owns."""

    __slots__ = ("conn", "host", "expires", "judged", "count", "task", "waiter", "timer",
                 "blocker")

    def __init__(self) -> None:
        self.conn: SMTPConnection | None = None
        self.host: _Host | None = None  # the server ``conn`` is (being) opened to
        self.expires = _NEVER  # loop time after which ``conn`` is renewed (max_connection_age)
        # Whether the breaker has heard how ``conn`` did (once per connection, after its
        # first run: it proved healthy, or it broke before doing any work).
        self.judged = True
        self.count = 0  # transactions started on ``conn``
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[_Job | None] | None = None  # set while idle
        self.timer: asyncio.TimerHandle | None = None  # idle timeout
        # Set while the worker, holding a job, waits for a rate-limit permit or for the
        # reconnect backoff: close() cancels it, so the job fails as "pool closed".
        self.blocker: asyncio.Task[Any] | None = None


_NEVER = float("inf")
#: Delivery samples kept for the adaptive rate's estimate (one per 1/8 window: two windows).
_SAMPLES = 16

#: One entry of ``SMTPPool(hosts=[...])``: an ``smtp://`` URL, a mapping of connection
#: options (it may hold ``weight`` and ``auth``), a ConnectionOptions, or a pair
#: ``(any of those, weight)``.
HostEntry = Any


class _Host:
    """One server of the pool: its options, credentials, weight and circuit breaker."""

    __slots__ = ("options", "auth", "weight", "breaker", "active", "label")

    def __init__(self, options: ConnectionOptions, auth: Auth | None, weight: float,
                 breaker: CircuitBreaker) -> None:
        self.options = options
        self.auth = auth
        self.weight = weight
        self.breaker = breaker
        self.active = 0  # slots with a connection to it (open or opening)
        self.label = f"{options.host}:{options.port}"


def _build_hosts(base: dict[str, Any], auth: Auth | None, entries: Iterable[HostEntry] | None,
                 popts: PoolOptions) -> list[_Host]:
    """The pool's servers: ``base`` alone, or each entry of ``hosts`` over ``base``."""
    def breaker() -> CircuitBreaker:
        return CircuitBreaker(popts.breaker_threshold, popts.retry_delay, popts.retry_delay_max)

    if entries is None:
        return [_Host(ConnectionOptions(**base), auth, 1.0, breaker())]
    if isinstance(entries, (str, bytes, Mapping)):
        raise TypeError("hosts must be a list of URLs, option mappings or ConnectionOptions "
                        "(hosts=['smtp://a.example', ('smtp://b.example', 2)])")
    pool_names = {f.name for f in fields(PoolOptions)}
    hosts: list[_Host] = []
    for entry in entries:
        weight: Any = 1.0
        if isinstance(entry, tuple) and len(entry) == 2:
            entry, weight = entry
        host_auth = auth
        if isinstance(entry, ConnectionOptions):
            options = entry
        else:
            if isinstance(entry, str):
                given = parse_url(entry)
                if "user" in given:
                    raise ValueError(f"the host URL names the user {given['user']!r} but no "
                                     "password: put user:password in the URL or give auth=")
            elif isinstance(entry, Mapping):
                given = {_option_name(k): v for k, v in entry.items()}
                weight = given.pop("weight", weight)
            else:
                raise TypeError(f"a hosts entry must be a URL, a mapping of options or "
                                f"ConnectionOptions, not {type(entry).__name__}")
            misplaced = sorted(k for k in given if k in pool_names)
            if misplaced:
                raise ValueError(f"pool options {misplaced} belong to SMTPPool(...), not to "
                                 "one entry of hosts")
            if "auth" in given:
                host_auth = Auth.coerce(given.pop("auth"))
            options = ConnectionOptions(**{**base, **given})
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not weight > 0 or weight == _NEVER:
            raise ValueError(f"a host weight must be a positive number, not {weight!r}")
        hosts.append(_Host(options, host_auth, float(weight), breaker()))
    if not hosts:
        raise ValueError("hosts is empty: give at least one server")
    return hosts


def _replayable(message: MessageSource) -> bool:
    """Can the message be sent again after a failed attempt consumed it?"""
    if isinstance(message, (bytes, bytearray, memoryview, str, Message, list, tuple)):
        return True
    return hasattr(message, "seek") and hasattr(message, "tell")


def _retryable(exc: BaseException) -> bool:
    """Did the attempt fail before the final dot, in a way a later attempt may not?"""
    return is_retryable(exc)  # the one policy: fastsmtp.retry


class SMTPPool:
    """A pool of SMTP connections that sends many messages fast, each exactly once.

    Example::

        async with SMTPPool("smtps://user:secret@smtp.example.com", max_connections=8) as pool:
            result = await pool.send(email_message)  # envelope from From/To/Cc/Bcc

    Args:
        url: Optional ``smtp://`` / ``smtps://`` URL (see :func:`parse_url`), or a
            mapping of options (nodemailer's camelCase names work); keyword options
            override what it says.
        service: A well-known service name, alias or e-mail domain (``"gmail"``) that
            sets host, port and TLS mode (see :mod:`fastsmtp.services`).
        auth: Credentials: :class:`Auth`, ``(user, password)`` or a mapping with
            ``user``, ``pass`` and/or ``xoauth2``. None: no login.
        get_socket: Optional ``async get_socket(options) -> socket | None`` called for
            every new connection; a socket it returns is used instead of connecting.
        logger: Logger for pool events (default ``fastsmtp.pool``); also given to the
            connections.
        hosts: Several servers instead of one: each entry an ``smtp://`` URL, a mapping
            of connection options (with optional ``weight`` and ``auth``), a
            :class:`~fastsmtp.options.ConnectionOptions`, or ``(entry, weight)``. The
            other arguments are every entry's defaults. A server whose connections keep
            failing is taken out for a cool-down (see :attr:`circuits`).
        **options: Every :class:`~fastsmtp.options.ConnectionOptions` field (host, port,
            secure, require_tls, timeouts, tls, ...) and every :class:`PoolOptions` field
            (max_connections, max_messages, rate_limit, rate_delta, max_queue, ...).
    """

    def __init__(
        self,
        url: str | Mapping[str, Any] | None = None,
        *,
        service: str | None = None,
        auth: Auth | Mapping[str, Any] | tuple[str, str] | None = None,
        get_socket: GetSocket | None = None,
        logger: logging.Logger | None = None,
        hosts: Iterable[HostEntry] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(url, Mapping):  # nodemailer-style options object (camelCase welcome)
            merged: dict[str, Any] = {_option_name(k): v for k, v in url.items()}
        else:
            merged = parse_url(url) if url else {}
        service = options.pop("service", None) or service or merged.pop("service", None)
        url_user = merged.pop("user", None)
        merged.update(options)
        if auth is not None:
            merged["auth"] = auth
        elif url_user is not None and "auth" not in merged:
            raise ValueError(f"the URL names the user {url_user!r} but no password: give "
                             "auth=(user, password) or an XOAUTH2 token provider")
        if service is not None:
            known = lookup_service(service)
            merged.setdefault("host", known.host)
            merged.setdefault("port", known.port)
            merged.setdefault("secure", known.secure)
            if not known.secure and not merged.get("ignore_tls"):
                merged.setdefault("require_tls", True)
        self.auth = Auth.coerce(merged.pop("auth", None))
        pool_names = {f.name for f in fields(PoolOptions)}
        self.pool_options = PoolOptions(**{k: merged.pop(k) for k in list(merged)
                                           if k in pool_names})
        self._hosts = _build_hosts(merged, self.auth, hosts, self.pool_options)
        #: The (first) server's connection options.
        self.options = self._hosts[0].options
        self.logger = logger or _log
        self._get_socket = get_socket
        popts = self.pool_options
        self._limiter = (
            RateLimiter(popts.rate_limit, popts.rate_delta) if popts.rate_limit else None
        )
        self._sample_gap = popts.rate_delta / 8
        self._adaptive = (AdaptiveRate(popts.rate_floor, popts.rate_limit, popts.rate_delta)
                          if popts.adaptive_rate else None)
        self._rate_timer: asyncio.TimerHandle | None = None
        # For the adaptive rate's estimate of what the server accepts per window:
        # (time, deliveries so far) samples taken at the end of runs.
        self._samples: deque[tuple[float, int]] = deque(maxlen=_SAMPLES)
        self._pending: deque[_Job] = deque()
        self._slots: list[_Slot] = []
        self._idle: list[_Slot] = []  # LIFO stack of slots waiting for a job
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._idle_callbacks: list[Callable[[], Any]] = []
        self._retry_timers: dict[_Job, asyncio.TimerHandle] = {}
        self._spawn_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters = PoolCounters()
        self._observers: list[Observer] = []

    def __repr__(self) -> str:
        o = self.options
        return (f"<SMTPPool {o.host}:{o.port} connections={len(self._slots)}/"
                f"{self.pool_options.max_connections} queued={len(self._pending)}>")

    async def __aenter__(self) -> SMTPPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public API ------------------------------------------------------------------------

    async def send(
        self, message: MessageSource, envelope: Envelope | None = None
    ) -> SendResult:
        """Send one message through the pool.

        Args:
            message: bytes, str, :class:`email.message.EmailMessage`, a binary file or a
                (async) iterable of chunks, as for
                :meth:`~fastsmtp.connection.SMTPConnection.send`.
            envelope: Sender and recipients; None derives them from an EmailMessage's
                headers (From/Sender; To, Cc, Bcc; Bcc is not transmitted).

        Returns:
            The :class:`~fastsmtp.connection.SendResult` of the attempt that succeeded.

        Raises:
            SMTPPoolClosed: The pool was closed before the message was sent.
            SMTPMaybeDelivered: The connection was lost after the final dot.
            SMTPError: The last attempt's error (see the module docs for retries).
        """
        return await self._submit(message, envelope)

    @property
    def throttle(self) -> int | None:
        """The rate the pool allows itself because a server asked it to slow down.

        Messages per ``rate_delta`` seconds while throttled (adaptive rate, see
        ``adaptive_rate``), never below ``rate_floor``; None when not throttled (the pool
        then runs at its configured ``rate_limit``, or unlimited).
        """
        adaptive = self._adaptive
        return adaptive.limit if adaptive is not None and adaptive.throttled else None

    @property
    def circuits(self) -> dict[str, str]:
        """Each server's circuit: ``{"host:port": "closed" | "open" | "half-open"}``.

        "open": its connections kept failing; it gets no new connection until its
        cool-down ends ("half-open": one trial connection decides).
        """
        now = self._loop.time() if self._loop is not None else 0.0
        return {h.label: h.breaker.state(now) for h in self._hosts}

    def is_idle(self) -> bool:
        """True when a new message would start at once (nodemailer's ``isIdle()``)."""
        if self._closing or self._pending:
            return False
        return bool(self._idle) or len(self._slots) < self.pool_options.max_connections

    def on_idle(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` whenever the pool gets free capacity (nodemailer's 'idle').

        Returns:
            A function that unregisters the callback.
        """
        self._idle_callbacks.append(callback)
        return lambda: self._idle_callbacks.remove(callback)

    def stats(self) -> dict[str, int | float | None]:
        """The pool's state and running totals, as a plain dict (cheap: call it often).

        Keys: the totals ``sent``, ``refused``, ``failed``, ``maybe_delivered``
        (disjoint: each settled message counts once, see :mod:`fastsmtp.observe`) and
        ``retried`` (failed attempts given another one); the state ``connections``
        (open), ``busy`` (slots holding a message), ``idle`` (slots waiting for one),
        ``queued`` (messages waiting for a slot), ``retrying`` (messages waiting out a
        retry backoff), ``in_flight`` (messages in a transaction on a connection);
        ``rate_limit`` and ``rate_period`` (messages per period in seconds, None
        without a limit); ``throttle`` (the rate the pool allows itself while a server
        asks it to slow down, see :attr:`throttle`; None when not throttled) and
        ``open_circuits`` (servers taken out for a cool-down, see :attr:`circuits`).
        """
        counters = self._counters
        slots = self._slots
        idle = len(self._idle)
        limiter = self._limiter
        return {
            "sent": counters.sent,
            "refused": counters.refused,
            "failed": counters.failed,
            "maybe_delivered": counters.maybe_delivered,
            "retried": counters.retried,
            "connections": sum(1 for slot in slots
                               if slot.conn is not None and slot.conn.is_connected),
            "busy": len(slots) - idle,
            "idle": idle,
            "queued": len(self._pending),
            "retrying": len(self._retry_timers),
            "in_flight": counters.in_flight,
            "rate_limit": limiter.limit if limiter is not None else None,
            "rate_period": limiter.period if limiter is not None else None,
            "throttle": self.throttle,
            "open_circuits": sum(1 for state in self.circuits.values() if state != "closed"),
        }

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` with a :class:`~fastsmtp.observe.MessageEvent` per
        settled message (tracing and metrics are built on this; see
        :mod:`fastsmtp.observe`).

        Messages whose ``send()`` was called before the first observer was added are not
        reported. A pool without observers does no per-message work for them.

        Returns:
            A function that removes the observer (as :meth:`remove_observer` does).
        """
        self._observers.append(observer)
        return lambda: self.remove_observer(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer`` (added by :meth:`add_observer`).

        Raises:
            ValueError: ``observer`` is not one of the pool's observers.
        """
        self._observers.remove(observer)

    async def wait_idle(self) -> None:
        """Wait until :meth:`is_idle` is true."""
        self._bind_loop()
        while not self.is_idle():
            if self._closing:
                raise SMTPPoolClosed("the pool is closed")
            waiter = self._get_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    async def send_many(
        self,
        messages: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int | None = None,
    ) -> AsyncGenerator[tuple[Any, SendResult | Exception], None]:
        """Send many messages; yield ``(item, result or error)`` as each one finishes.

        Each item is a message (an EmailMessage gives its own envelope) or a
        ``(message, envelope)`` pair: a tuple of two whose second element is an
        :class:`~fastsmtp.message.Envelope` or None (anything else, a tuple or list of
        chunks too, is a message), as for
        :meth:`~fastsmtp.connection.SMTPConnection.send_many`. At most ``window`` messages are outstanding at a
        time (default: the queue plus every connection's pipeline), so memory stays flat
        however long the iterable is. Errors are yielded, not raised.
        """
        opts = self.pool_options
        window = window or opts.max_queue + opts.max_connections * PIPELINE_DEPTH
        loop = self._bind_loop()
        outstanding: dict[asyncio.Future[Any], Any] = {}
        done: deque[asyncio.Future[Any]] = deque()
        wakeup: list[asyncio.Future[None]] = []  # at most one: the consumer waiting below

        def finished(task: asyncio.Future[Any]) -> None:
            done.append(task)
            if wakeup and not wakeup[0].done():
                wakeup[0].set_result(None)

        def start(item: Any) -> None:
            message, envelope = split_item(item)
            # The job's own future when it can be queued at once (the common case): a
            # Task per message only when the sender has to wait for queue space.
            task = self._submit_nowait(message, envelope, finished)
            if task is None:
                task = loop.create_task(self._submit(message, envelope))
                task.add_done_callback(finished)
            outstanding[task] = item

        def outcome(task: asyncio.Future[Any]) -> tuple[Any, SendResult | Exception]:
            item = outstanding.pop(task)
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if exc is not None and not isinstance(exc, Exception):
                raise exc
            return item, (exc if exc is not None else task.result())

        async def wait() -> None:
            # One wake-up future instead of asyncio.wait() over every outstanding task:
            # that would cost O(window) per message. Only awaited when nothing is done
            # yet: outcomes mostly come in runs, and the rest of a run is yielded
            # without a coroutine per message.
            while not done:
                wakeup[:] = [loop.create_future()]
                await wakeup[0]

        try:
            if isinstance(messages, AsyncIterable):
                async for item in messages:
                    start(item)
                    while done or len(outstanding) >= window:
                        if not done:
                            await wait()
                        yield outcome(done.popleft())
            else:
                for item in messages:
                    start(item)
                    while done or len(outstanding) >= window:
                        if not done:
                            await wait()
                        yield outcome(done.popleft())
            while outstanding:
                if not done:
                    await wait()
                yield outcome(done.popleft())
        finally:
            for task in outstanding:
                task.cancel()

    async def verify(self) -> None:
        """Check the configuration: connect, log in and QUIT on a fresh connection
        (to every server of ``hosts``).

        Raises:
            SMTPError: What went wrong (connection, TLS, authentication...).
        """
        self._bind_loop()
        for host in self._hosts:
            conn = await self._open(host)
            await conn.quit()

    async def close(self) -> None:
        """Close the pool.

        Messages already being sent finish; queued ones fail with
        :class:`~fastsmtp.errors.SMTPPoolClosed`; connections get QUIT.
        """
        self._bind_loop()
        if not self._closing:
            self._closing = True
            closed = SMTPPoolClosed("the pool was closed before the message was sent")
            for job, timer in list(self._retry_timers.items()):
                timer.cancel()
                self._settle(job, closed)
            self._retry_timers.clear()
            while self._pending:
                self._settle(self._pending.popleft(), closed)
            while self._space_waiters:
                waiter = self._space_waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(closed)
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_exception(closed)
            self._idle_waiters.clear()
            if self._spawn_timer is not None:
                self._spawn_timer.cancel()
            if self._rate_timer is not None:
                self._rate_timer.cancel()
                self._rate_timer = None
            while self._idle:
                self._wake(self._idle.pop(), None)
            for slot in self._slots:
                if slot.blocker is not None:
                    slot.blocker.cancel()
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- queueing --------------------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """The loop of the caller, checked at every public entry (a pool serves one loop).

        A pool created at module level may outlive its loop (a test runner's loop per
        test, ``asyncio.run()`` twice): once its loop has stopped, the pool starts afresh
        on the caller's loop. Its old connections are discarded without a word (their
        loop cannot run them any more) and what was queued on the old loop is dropped
        with it (its callers are gone). A pool whose loop still runs (in another thread)
        cannot be shared: that is a clear error, not a hang.
        """
        running = asyncio.get_running_loop()
        loop = self._loop
        if loop is running:
            return running
        if loop is not None:
            if loop.is_running() and not loop.is_closed():
                raise RuntimeError(
                    "this SMTPPool is in use by another event loop (in another thread): "
                    "a pool serves one loop. Create one pool per loop (e.g. inside the "
                    "coroutine or fixture that uses it), or use fastsmtp.sync.SyncSMTPPool, "
                    "which may be called from any thread or loop"
                )
            for slot in self._slots:
                if slot.conn is not None:
                    slot.conn.discard()
            self._pending.clear()
            self._slots.clear()
            self._idle.clear()
            self._space_waiters.clear()
            self._idle_waiters.clear()
            self._retry_timers.clear()
            self._spawn_timer = None
            self._rate_timer = None
            self._samples.clear()
            popts = self.pool_options
            for host in self._hosts:  # their breakers hold the old loop's times
                host.active = 0
                host.breaker = CircuitBreaker(popts.breaker_threshold, popts.retry_delay,
                                              popts.retry_delay_max)
        self._loop = running
        return running

    async def _submit(self, message: MessageSource, envelope: Envelope | None) -> SendResult:
        if self._closing:
            raise SMTPPoolClosed("the pool is closed")
        started = time.perf_counter() if self._observers else 0.0  # the wait counts
        envelope = resolve_envelope(message, envelope)
        loop = self._bind_loop()
        while len(self._pending) >= self.pool_options.max_queue:
            waiter = loop.create_future()
            self._space_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._space_waiters.remove(waiter) if waiter in self._space_waiters else None
                raise
            if self._closing:  # close() ran while we waited for space
                raise SMTPPoolClosed("the pool is closed")
        job = _Job(envelope, message, loop.create_future())
        if self._observers:
            job.started, job.context = started, contextvars.copy_context()
        self._enqueue(job)
        return await job.future  # type: ignore[no-any-return]

    def _submit_nowait(
        self, message: MessageSource, envelope: Envelope | None,
        notify: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> asyncio.Future[Any] | None:
        """Queue a job without waiting: its future, or None when ``_submit`` must run.
        ``notify(future)`` is called the moment the job is settled (not if the future
        is cancelled).

        Only the plain case is taken here (open pool, envelope given, queue space free and
        nobody waiting for it, so FIFO order among waiting senders holds); everything
        else goes through ``_submit``. Cancelling the returned future drops the job like
        cancelling ``_submit`` does (``_next_pending`` skips it, ``_settle`` ignores it).
        """
        if (
            self._closing
            or envelope is None
            or self._space_waiters
            or len(self._pending) >= self.pool_options.max_queue
        ):
            return None
        job = _Job(envelope, message, self._get_loop().create_future())
        job.notify = notify
        if self._observers:
            job.started, job.context = time.perf_counter(), contextvars.copy_context()
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: _Job, front: bool = False) -> None:
        if self._closing:  # nobody would ever take it
            self._settle(job, SMTPPoolClosed("the pool was closed before the message was sent"))
            return
        while self._idle:
            slot = self._idle.pop()  # LIFO: the warmest connection
            if slot.waiter is not None and not slot.waiter.done():
                self._wake(slot, job)
                return
        if front:
            self._pending.appendleft(job)
        else:
            self._pending.append(job)
        self._spawn()

    def _dispatch(self) -> None:
        """Hand pending jobs to idle slots (warmest first), then start slots for the rest."""
        while self._pending and self._idle:
            slot = self._idle.pop()
            if slot.waiter is None or slot.waiter.done():
                continue
            job = self._next_pending()
            if job is None:
                self._idle.append(slot)
                break
            self._wake(slot, job)
        self._spawn()

    def _wake(self, slot: _Slot, job: _Job | None) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        waiter, slot.waiter = slot.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(job)

    def _next_pending(self) -> _Job | None:
        pending = self._pending
        while pending:
            job = pending.popleft()
            if self._space_waiters:  # tested here: a call per message saved
                self._release_space()
            if not job.future.done():  # a caller that gave up (cancelled) is skipped
                return job
        return None

    def _release_space(self, all_: bool = False) -> None:
        """Wake the oldest sender waiting for queue space (every one with ``all_``)."""
        waiters = self._space_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it checks the queue length again itself
                if not all_:
                    return

    async def _take(self, slot: _Slot) -> _Job | None:
        """The slot's next job, or None when the slot should end (idle or closing)."""
        job = self._next_pending()
        if job is not None or self._closing:
            return job
        loop = self._get_loop()
        waiter: asyncio.Future[_Job | None] = loop.create_future()
        slot.waiter = waiter
        slot.timer = loop.call_later(self.pool_options.idle_timeout, self._wake, slot, None)
        self._idle.append(slot)
        self._notify_idle()
        try:
            return await waiter
        finally:
            if slot in self._idle:
                self._idle.remove(slot)

    def _spawn(self) -> None:
        """Start slots for pending jobs, within max_connections and the circuit breakers."""
        limit = self.pool_options.max_connections
        # Checked first: this runs for every queued message, and with every slot busy
        # (the steady state under load) there is nothing to decide.
        if len(self._slots) >= limit or self._closing or not self._pending:
            return
        if not all(h.breaker.closed for h in self._hosts):
            loop = self._get_loop()
            now = loop.time()
            if not any(h.breaker.allows(now) for h in self._hosts):
                # Every server is down (or a trial connection is under way, which reports
                # back): wake up when the first circuit turns half-open, not before.
                waits = [h.breaker.retry_at for h in self._hosts
                         if not h.breaker.closed and h.breaker.retry_at > now]
                if waits and self._spawn_timer is None:
                    def fire() -> None:
                        self._spawn_timer = None
                        self._spawn()
                    self._spawn_timer = loop.call_at(min(waits), fire)
                return
            if not any(h.breaker.closed for h in self._hosts):
                limit = min(limit, len(self._slots) + 1)  # half-open: one trial at a time
        loop = self._get_loop()
        # Each new slot starts with a job of its own, so a burst of sends never opens
        # more connections than there are jobs waiting.
        while len(self._slots) < limit:
            job = self._next_pending()
            if job is None:
                return
            slot = _Slot()
            self._slots.append(slot)
            slot.task = loop.create_task(self._run(slot, job))

    def _notify_idle(self) -> None:
        if not self.is_idle():
            return
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._idle_waiters.clear()
        for callback in list(self._idle_callbacks):
            try:
                callback()
            except Exception:  # a broken callback must not break the pool
                self.logger.exception("idle callback failed")

    # -- the worker --------------------------------------------------------------------------

    async def _run(self, slot: _Slot, first: _Job) -> None:
        opts = self.pool_options
        loop = self._get_loop()
        job: _Job | None = first
        try:
            while True:
                if job is None:
                    # A queued job is taken without the _take() coroutine (the hot path).
                    job = self._next_pending()
                    if job is None:
                        job = await self._take(slot)
                        if job is None:
                            return
                # The permit comes first: the connection is checked after the wait.
                if self._limiter is not None and not await self._block(
                        slot, job, self._limiter.acquire()):
                    return
                conn = slot.conn
                if conn is not None:
                    if not conn.is_connected or job.avoid is conn \
                            or loop.time() >= slot.expires:
                        await self._retire(slot)
                        conn = None
                    elif opts.probe_idle is not None \
                            and loop.time() - conn.last_used > opts.probe_idle:
                        conn = await self._probe(slot, conn)
                if conn is None:
                    host = self._choose_host(loop.time())
                    if host is None:
                        # Every server's circuit is open: the job waits in the queue,
                        # uncharged; _spawn (in finally) wakes a slot when one turns
                        # half-open.
                        self._put_back(job, None)
                        return
                    slot.host = host
                    host.active += 1
                    try:
                        conn = slot.conn = await self._open(host)
                    except BaseException as exc:
                        host.active -= 1
                        slot.host = None
                        self._connect_failed(host, job, exc)
                        if not isinstance(exc, Exception):
                            raise
                        return
                    slot.count = 0
                    slot.judged = False
                    age = opts.max_connection_age
                    slot.expires = loop.time() + age if age is not None else _NEVER
                slot.count += 1
                # Awaited here, not in a task: the run pipelines its messages itself, and
                # the slot is back on the idle stack before the callers woken by the
                # run's results run.
                await self._deliver(slot, conn, job)
                if not slot.judged:
                    self._judge(slot, conn)
                if slot.count >= opts.max_messages:
                    await self._retire(slot)
                job = None
        finally:
            if slot.waiter is not None:
                self._wake(slot, None)
            await self._retire(slot)
            self._slots.remove(slot)
            self._spawn()  # pending jobs left behind get a new slot (after any backoff)
            self._notify_idle()

    async def _block(self, slot: _Slot, job: _Job, waiting: Awaitable[Any]) -> bool:
        """Wait for ``waiting`` while holding ``job``; False (job failed) if the pool closed."""
        blocker = slot.blocker = asyncio.ensure_future(waiting)
        try:
            await blocker
        except asyncio.CancelledError:
            if not (self._closing and blocker.cancelled()):
                raise  # the worker itself was cancelled
        finally:
            slot.blocker = None
        if self._closing:
            self._settle(job, SMTPPoolClosed("the pool was closed before the message was sent"))
            return False
        return True

    async def _retire(self, slot: _Slot) -> None:
        """QUIT the slot's connection (errors ignored); its run, if any, has ended."""
        conn, slot.conn = slot.conn, None
        host, slot.host = slot.host, None
        if host is not None:
            host.active -= 1
        if conn is None:
            return
        await conn.quit()

    async def _probe(self, slot: _Slot, conn: SMTPConnection) -> SMTPConnection | None:
        """RSET a connection that sat idle past ``probe_idle``: it, or None if it failed.

        A server or middlebox may have dropped an idle session without telling us
        (Exchange, NAT timeouts); finding out with a cheap RSET costs no message an
        attempt, finding out with the message's MAIL would.
        """
        try:
            await conn.reset()
        except SMTPError as exc:
            self.logger.info("idle connection to %s failed its probe (%s); opening a new one",
                             slot.host.label if slot.host else "?", exc)
            await self._retire(slot)
            return None
        return conn

    def _choose_host(self, now: float) -> _Host | None:
        """The server for a new connection: the least loaded by weight among those whose
        circuit lets a connection through (weighted least-connections); None if none."""
        hosts = self._hosts
        if len(hosts) == 1:
            host = hosts[0]
            return host if host.breaker.admit(now) else None
        best: _Host | None = None
        best_load = _NEVER
        for host in hosts:
            if host.breaker.allows(now):
                load = (host.active + 1) / host.weight
                if load < best_load:
                    best, best_load = host, load
        if best is not None:
            best.breaker.admit(now)
        return best

    async def _open(self, host: _Host | None = None) -> SMTPConnection:
        host = host or self._hosts[0]
        sock = await self._get_socket(host.options) if self._get_socket else None
        conn = SMTPConnection(options=host.options, sock=sock, logger=self.logger)
        try:
            await conn.connect()
            auth = host.auth
            if auth is not None:
                await conn.login(auth.user or None, auth.password, xoauth2=auth.xoauth2)
        except BaseException:
            conn.close()
            raise
        return conn

    def _backoff(self, attempt: int) -> float:
        opts = self.pool_options
        return min(opts.retry_delay_max, opts.retry_delay * (1 << max(0, attempt - 1)))

    def _connect_failed(self, host: _Host, job: _Job, exc: BaseException) -> None:
        """A connection could not be opened: the job it was for goes back, uncharged.

        The failure is the breaker's business: one failed connect says nothing about
        the next one, consecutive ones open the circuit (see :meth:`_host_failed`). An
        error that no retry fixes (a 554 greeting, refused credentials, a TLS failure)
        is the same for every message: with one server they all fail with it, with
        several this server is taken out for a cool-down.
        """
        if isinstance(exc, Exception) and not self._closing and not _retryable(exc) \
                and len(self._hosts) == 1:
            self._settle(job, exc)
            while self._pending:
                self._settle(self._pending.popleft(), exc)
            self._release_space(all_=True)
            return
        self._put_back(job, exc)
        if self._closing or not isinstance(exc, Exception):
            return
        now = self._get_loop().time()
        if _retryable(exc):
            self._host_failed(host, exc, host.breaker.failure(now))
        else:
            self._host_failed(host, exc, host.breaker.trip(now))
        self._dispatch()

    def _put_back(self, job: _Job, exc: BaseException | None) -> None:
        """Return a job that was never sent to the front of the queue, uncharged (or, if
        the pool is closing, fail it: close() already emptied the queue)."""
        if job.future.done():
            return
        if self._closing:
            self._settle(job, exc if exc is not None else
                         SMTPPoolClosed("the pool was closed before the message was sent"))
        else:
            self._pending.appendleft(job)

    def _judge(self, slot: _Slot, conn: SMTPConnection) -> None:
        """Tell the breaker how a new connection did, once, after its first run."""
        slot.judged = True
        host = slot.host
        if host is None:
            return
        if conn.messages_sent or conn.is_connected:
            host.breaker.success()  # it delivers, or at least keeps talking
        elif not self._closing:
            # Broken before doing any work (e.g. a 421 to every session's first MAIL): as
            # bad as a failed connect. Its messages were charged already, as on any
            # broken connection; the breaker decides whether the server is down.
            exc = conn.error or SMTPConnectionError("the connection broke before any work")
            self._host_failed(host, exc, host.breaker.failure(self._get_loop().time()))
            self._dispatch()

    def _host_failed(self, host: _Host, exc: BaseException, tripped: bool) -> None:
        """After a failed connection: if the circuit opened and no other server can take
        the queue, charge every waiting job one attempt (so a dead server fails the queue
        after ``max_attempts`` trips, in bounded time)."""
        if not tripped:
            return
        breaker = host.breaker
        delay = breaker.retry_at - self._get_loop().time()
        self.logger.warning("connection to %s failed (%s); circuit open (trip %d), "
                            "new connections in %.2f s", host.label, exc, breaker.trips, delay)
        if any(h.breaker.closed for h in self._hosts):
            return  # another server takes the traffic
        waiting = list(self._pending)
        self._pending.clear()
        for queued in waiting:
            if queued.future.done():
                continue
            queued.attempts += 1
            if isinstance(exc, Exception) and _retryable(exc) and not self._closing \
                    and queued.attempts < self.pool_options.max_attempts:
                self._counters.retried += 1
                self._pending.append(queued)
            else:
                self._settle(queued, exc)
        self._release_space(all_=True)

    async def _deliver(self, slot: _Slot, conn: SMTPConnection, first: _Job) -> None:
        """The one delivery path: send ``first`` and, while more jobs are queued, up to
        ``batch_size`` in all, as one run of :meth:`SMTPConnection.send_jobs`.

        The jobs are taken from the queue lazily, just before the previous message's
        final dot is written, so a run never holds a job that another connection could
        have started. A job to be kept off this connection (``avoid``) ends the run and
        goes back to the front of the queue, and so does one for which no rate-limit
        permit is free at once. Each outcome is settled (or retried) by
        :meth:`_settle` / :meth:`_failed`.
        """
        # The jobs of the run, in order; ``first`` from the start, so that it fails with
        # the run even if the run breaks before taking it.
        batch = [first]
        opts = self.pool_options
        max_messages = opts.max_messages
        # Without PIPELINING (or with it turned off) a run is one message: nothing would
        # ride with its dot, and other slots may take the queued jobs meanwhile.
        batch_size = opts.batch_size if opts.pipelining and conn.capabilities.pipelining \
            else 1
        limiter = self._limiter
        counters = self._counters
        counters.in_flight += 1  # one per job in ``batch`` not yet answered
        expires = slot.expires
        clock = self._get_loop().time
        # Jobs this run may take, ``first`` included (the slot has counted it already).
        limit = min(batch_size, max_messages - slot.count + 1)
        given = False  # ``first`` was handed to the pipeline

        def take() -> _Job | None:
            nonlocal given
            if not given:
                given = True
                return first
            # After a broken connection the pipeline keeps asking: return None, so that
            # queued jobs keep their attempts for a new connection.
            if (len(batch) >= limit or self._closing or not conn.is_connected
                    or (expires is not _NEVER and clock() >= expires)):
                return None  # (max_connection_age: the slot renews the connection)
            job = self._next_pending()
            if job is None:
                return None
            if job.avoid is conn or (limiter is not None and not limiter.try_acquire()):
                self._pending.appendleft(job)
                return None
            slot.count += 1
            batch.append(job)
            counters.in_flight += 1
            return job

        answered = 0  # outcomes come in the order taken: batch[:answered] are reported
        deferred: list[tuple[_Job, SendResult | Exception]] = []

        def conclude(job: _Job, outcome: SendResult | Exception) -> None:
            if isinstance(outcome, BaseException):
                self._failed(conn, job, outcome)
            else:
                self._settle(job, outcome)

        try:
            async for done in conn.send_jobs(take):  # (job, outcome)
                answered += 1
                counters.in_flight -= 1
                # With a backlog queued, outcomes are settled together at the end of the
                # run: waking each caller per message costs about as much CPU again as
                # sending it, and a backlog means nobody is starved for a result. With
                # no backlog (a trickle of sends), each caller is settled the moment its
                # reply is in.
                deferred.append(done)
                if not self._pending:
                    for job, result in deferred:
                        conclude(job, result)
                    deferred.clear()
        except BaseException as exc:
            counters.in_flight -= len(batch) - answered
            for job, result in deferred:
                conclude(job, result)
            for job in batch[answered:]:
                self._failed(conn, job, exc)
            raise
        counters.in_flight -= len(batch) - answered
        if self._adaptive is not None:
            # One sample per run at most, and only when the last is 1/8 window old.
            now = clock()
            samples = self._samples
            if not samples or now - samples[-1][0] >= self._sample_gap:
                samples.append((now, counters.sent))
        for job, result in deferred:
            conclude(job, result)
        for job in batch[answered:]:  # not expected: the pipeline answers every job
            self._failed(conn, job, SMTPConnectionError("no result for the message"))

    def _failed(self, conn: SMTPConnection, job: _Job, exc: BaseException) -> None:
        """An attempt failed: retry the job later (see the module docs) or fail it.

        Only this job is charged: the jobs still queued were never on this connection
        and keep their attempts (the breaker judges the server, see :meth:`_judge`).
        """
        if self._adaptive is not None and is_slow_down(exc):
            self._slow_down()
        if (
            is_session_cut(exc, conn.messages_sent)
            and job.renewals < self.pool_options.max_attempts
            and not self._closing
            and not job.future.done()
            and _replayable(job.message)
        ):
            # The server ended a session that had delivered ("too many messages",
            # "session too long"): not the message's fault, so it goes to a fresh
            # connection at once without using an attempt. Bounded: each such retry
            # follows a delivery, and at most max_attempts per job.
            job.renewals += 1
            if job.position is not None:
                job.message.seek(job.position)  # type: ignore[union-attr]
            self._enqueue(job, front=True)
            return
        job.attempts += 1
        if (
            isinstance(exc, Exception)
            and _retryable(exc)
            and job.attempts < self.pool_options.max_attempts
            and not self._closing
            and not job.future.done()
            and _replayable(job.message)
        ):
            if conn.is_connected:
                job.avoid = conn  # the server said 4xx: try another connection
            self._retry_later(job, exc)
        else:
            self._settle(job, exc)

    # -- adaptive rate -------------------------------------------------------------------

    def _slow_down(self) -> None:
        """A "slow down" reply: lower the pool's own rate (AIMD; see AdaptiveRate)."""
        adaptive = self._adaptive
        assert adaptive is not None
        loop = self._get_loop()
        now = loop.time()
        since = now - adaptive.period
        base = 0
        for when, count in self._samples:
            if when >= since:
                base = count
                break
        else:
            if self._samples:
                base = self._samples[-1][1]
        if adaptive.slow_down(now, self._counters.sent - base):
            self._apply_rate()
            self.logger.warning("the server asks to slow down: rate lowered to %s per %.3g s",
                                adaptive.limit, adaptive.period)
        if self._rate_timer is None and adaptive.throttled:
            self._rate_timer = loop.call_later(adaptive.period, self._rate_tick)

    def _rate_tick(self) -> None:
        """Once per window while throttled: raise the rate if replies were clean."""
        self._rate_timer = None
        adaptive = self._adaptive
        if adaptive is None or self._closing:
            return
        if adaptive.tick(self._get_loop().time()):
            self._apply_rate()
        if adaptive.throttled:
            self._rate_timer = self._get_loop().call_later(adaptive.period, self._rate_tick)
        else:
            self.logger.info("replies are clean again: throttling over")

    def _apply_rate(self) -> None:
        adaptive = self._adaptive
        assert adaptive is not None
        limit = adaptive.limit
        if limit is None:
            self._limiter = None  # back to unlimited (no rate_limit was configured)
        elif self._limiter is None:
            self._limiter = RateLimiter(limit, self.pool_options.rate_delta)
        else:
            self._limiter.set_limit(limit)

    def _retry_later(self, job: _Job, exc: Exception) -> None:
        delay = self._backoff(job.attempts)
        self._counters.retried += 1
        self.logger.info("attempt %d failed (%s); retrying in %.1f s", job.attempts, exc, delay)

        def again() -> None:
            self._retry_timers.pop(job, None)
            if job.position is not None:
                job.message.seek(job.position)  # type: ignore[union-attr]
            self._enqueue(job, front=True)

        self._retry_timers[job] = self._get_loop().call_later(delay, again)

    def _settle(self, job: _Job, outcome: SendResult | BaseException) -> None:
        """Resolve a job's future: the only place that does, so it happens exactly once."""
        future = job.future
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
            kind = self._counters.count_failure(outcome)
        else:
            future.set_result(outcome)
            self._counters.sent += 1
            kind = SENT
        if job.context is not None:  # observed (set only while there are observers)
            self._observe(job, kind, outcome)
        if job.notify is not None:
            job.notify(future)

    def _observe(self, job: _Job, kind: str, outcome: SendResult | BaseException) -> None:
        """Report a settled job to every observer, in the context of its send() call."""
        assert job.context is not None
        # ConnectionOptions always resolves the port (its None is the "not given" default).
        event = MessageEvent.of(outcome, kind, self.options.host, self.options.port or 0,
                                len(job.envelope.rcpt_to), time.perf_counter() - job.started)
        for observer in tuple(self._observers):
            try:
                job.context.run(observer, event)
            except Exception:  # a broken observer must not break the pool
                self.logger.exception("pool observer %r failed", observer)
