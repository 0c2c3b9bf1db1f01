"""A Django email backend on a warm fastsmtp pool: ``fastsmtp.django.EmailBackend``.

It takes what Django's own SMTP backend takes, both ways Django configures mail:

* the classic settings: ``EMAIL_BACKEND = "fastsmtp.django.EmailBackend"`` with
  ``EMAIL_HOST``, ``EMAIL_PORT``, ``EMAIL_HOST_USER``, ``EMAIL_HOST_PASSWORD``,
  ``EMAIL_USE_TLS``, ``EMAIL_USE_SSL``, ``EMAIL_TIMEOUT``, ``EMAIL_SSL_CERTFILE`` and
  ``EMAIL_SSL_KEYFILE`` (and ``get_connection(**options)`` with the option names below);
* Django 6.1's ``MAILERS`` setting: ``"BACKEND": "fastsmtp.django.EmailBackend"`` with
  ``OPTIONS`` named as for Django's SMTP backend (``host`` (required), ``port``,
  ``username``, ``password``, ``use_tls``, ``use_ssl``, ``timeout``, ``ssl_certfile``,
  ``ssl_keyfile``, ``fail_silently``). No setting is read then, and an unknown option
  is an error (Django's ``InvalidMailer``), as the mailers guide asks of backends.

Either way, fastsmtp's own options are accepted too: every pool option
(:class:`~fastsmtp.options.PoolOptions`: ``max_connections``, ``rate_limit``,
``rate_delta``, ``max_messages``, ``max_attempts``, ``retry_delay_max``, ``idle_timeout``
...) and ``tls``, the connection's TLS settings (an :class:`ssl.SSLContext` or a mapping
such as ``{"cafile": ...}``, see :data:`~fastsmtp.options.TLS_OPTION_KEYS`): in a mailer's
``OPTIONS``, and with the classic settings in the ``FASTSMTP_OPTIONS`` setting (a dict) or
as ``get_connection()`` keywords.

Failures are retried as the pool's retry rule says (:mod:`fastsmtp.retry`), and a server
that refuses connections backs the whole pool off (doubling up to ``retry_delay_max``):
against a dead server a send waits up to about ``max_attempts`` backoffs before it fails.
Lower ``max_attempts`` / ``retry_delay_max`` where a request must not wait that long.

One pool per process and configuration
--------------------------------------
Django makes a backend instance per message (``send_mail``) or per ``with`` block, so
connections must outlive instances: every instance with the same configuration shares one
:class:`~fastsmtp.sync.SyncSMTPPool`, created on first use and kept warm (its connections
idle out after ``idle_timeout``). The registry is keyed by the process id as well, so a
child after ``os.fork()`` (gunicorn, Celery prefork) builds its own pool instead of
using the parent's loop thread, which does not exist in the child. Pools are closed at
interpreter exit (messages in flight finish); :func:`close_pools` closes them earlier.

``send_messages(messages)`` sends the whole list concurrently through the pool and
returns how many were accepted. With ``fail_silently`` a failed message is not counted
and nothing is raised; without it, every message gets its attempt and then the first
failure (in list order) is raised, an :class:`smtplib.SMTPException` (every fastsmtp
error is one) or an :class:`OSError`. Invalid addresses raise :class:`ValueError` before
anything is sent, with or without ``fail_silently`` (as in Django's SMTP backend).
``open()`` attaches the instance to its pool (returning True when it was not attached),
``close()`` detaches it and leaves the pool warm for the next instance; the context
manager does both.

Messages are sent as Django renders them (``message.message()``: display names, Cc,
Reply-To, attachments, alternatives, encoded subjects), with the envelope Django's SMTP
backend uses: ``from_email`` as the sender and ``recipients()`` (To, Cc and Bcc) as the
recipients; Bcc never appears in the content. An address with a non-ASCII domain is sent
IDNA-encoded; one with a non-ASCII local part needs SMTPUTF8: the message then goes out
with UTF-8 headers, and a server that does not offer SMTPUTF8 refuses it
(:class:`~fastsmtp.errors.SMTPEnvelopeNotSupported`).
"""

from __future__ import annotations

import atexit
import email.policy
import os
import smtplib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from email.headerregistry import Address, AddressHeader
from typing import Any

# Django ships no type information (django-stubs is a separate project): its names are Any.
import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core.mail.backends.base import BaseEmailBackend  # type: ignore[import-untyped]

from .message import Envelope
from .options import PoolOptions
from .sync import SyncSMTPPool

__all__ = ["EmailBackend", "FASTSMTP_OPTION_NAMES", "close_pools"]

#: fastsmtp's options accepted beside Django's: every pool option, and ``tls``.
FASTSMTP_OPTION_NAMES = frozenset({f.name for f in fields(PoolOptions)} | {"tls"})

# Django 6.0 renders with a policy of the backend's choice; 5.2 has no such argument.
_POLICY_ARGUMENT = django.VERSION >= (6, 0)
# Django 6.1 has MAILERS: OPTIONS validated by BaseEmailBackend, which takes an alias.
_HAS_MAILERS = django.VERSION >= (6, 1)

_pools: dict[tuple[Any, ...], SyncSMTPPool] = {}
_pools_lock = threading.Lock()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time stays locked forever in the child. The
    # parent's pools stay in the dict, unused (their pid is not the child's), so the
    # child never closes what belongs to the parent.
    global _pools_lock
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def close_pools() -> None:
    """Close this process's pools (messages in flight finish); the next send opens anew."""
    pid = os.getpid()
    with _pools_lock:
        mine = [key for key in _pools if key[0] == pid]
        pools = [_pools.pop(key) for key in mine]
    for pool in pools:
        pool.close()


atexit.register(close_pools)


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an option value (a ``tls`` mapping becomes sorted pairs)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _shared_pool(config: Any, options: Mapping[str, Any]) -> SyncSMTPPool:
    """The pool of this process for ``options`` (``config`` is their frozen form)."""
    key = (os.getpid(), config)
    pool = _pools.get(key)  # the common case without the lock
    if pool is not None:
        return pool
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = SyncSMTPPool(**options)
        return pool


def _addr_spec(address: str) -> str:
    """The addr-spec of ``"Name <a@b>"``, its domain IDNA-encoded (ValueError if invalid).

    The local part is kept as is: a non-ASCII one makes the envelope need SMTPUTF8,
    which :class:`~fastsmtp.message.Envelope` detects and the connection negotiates.
    """
    parsed = AddressHeader.value_parser(str(address))
    mailboxes = parsed.all_mailboxes
    if len(mailboxes) != 1:
        raise ValueError(f"Invalid address {address!r}: must be a single address")
    defects = [str(d) for d in parsed.all_defects
               if "local part with no domain" not in str(d)  # Django allows "webmaster"
               and "non-ASCII" not in str(d)]  # SMTPUTF8 allows a UTF-8 local part
    if defects:
        raise ValueError(f"Invalid address {address!r}: {'; '.join(defects)}")
    mailbox = mailboxes[0]
    domain = mailbox.domain or ""
    if domain and not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
        return str(Address(username=mailbox.local_part, domain=domain))
    return str(mailbox.addr_spec)


def _wire(email_message: Any, utf8: bool) -> bytes:
    """The message as Django renders it, CRLF line endings, UTF-8 headers if ``utf8``."""
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    if _POLICY_ARGUMENT:
        return bytes(email_message.message(policy=policy).as_bytes())
    # Django 5.2 builds compat32 MIME objects with the headers already encoded.
    return bytes(email_message.message().as_bytes(linesep="\r\n"))


def _pair(message: bytes, envelope: Envelope) -> tuple[Any, Any]:
    """One ``send_many`` item: ``(message, envelope)``."""
    return (message, envelope)


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django email backend sending through a shared, warm fastsmtp pool.

    Arguments named as for ``django.core.mail.backends.smtp.EmailBackend``; with an
    ``alias`` (a ``MAILERS`` entry) the settings are not read and ``host`` is required.
    See :mod:`fastsmtp.django`.

    Args:
        host: SMTP server (default ``EMAIL_HOST``).
        port: Port (default ``EMAIL_PORT``; for a mailer 465 with ``use_ssl``, 587 with
            ``use_tls``, else 25).
        username: Login (default ``EMAIL_HOST_USER``); no login when empty.
        password: Password (default ``EMAIL_HOST_PASSWORD``).
        use_tls: STARTTLS, required (default ``EMAIL_USE_TLS``).
        fail_silently: Count failures instead of raising them.
        use_ssl: Implicit TLS (default ``EMAIL_USE_SSL``); exclusive with ``use_tls``.
        timeout: Seconds for connecting, the greeting and each reply (default
            ``EMAIL_TIMEOUT``; None: fastsmtp's defaults).
        ssl_keyfile: Client certificate key (default ``EMAIL_SSL_KEYFILE``).
        ssl_certfile: Client certificate (default ``EMAIL_SSL_CERTFILE``).
        **kwargs: fastsmtp's options (:data:`FASTSMTP_OPTION_NAMES`), and Django's
            ``alias``.

    Raises:
        ValueError: ``use_tls`` with ``use_ssl``, ``tls`` with a certificate file, or a bad
            fastsmtp option (in a mailer: Django's ``InvalidMailer``).
        TypeError: An unknown option (in a mailer: Django's ``InvalidMailer``).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: Any,
    ) -> None:
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in FASTSMTP_OPTION_NAMES}
        alias = kwargs.get("alias")
        if _HAS_MAILERS:
            # Django reports unknown options its own way: InvalidMailer naming the
            # MAILERS entry, or a deprecation warning outside MAILERS.
            super().__init__(**kwargs)
        else:
            unknown = sorted(set(kwargs) - {"alias"})
            if unknown:
                raise TypeError(
                    f"fastsmtp.django.EmailBackend got unknown option(s) "
                    f"{', '.join(map(repr, unknown))}; it takes Django's SMTP backend options "
                    f"and fastsmtp's: {', '.join(sorted(FASTSMTP_OPTION_NAMES))}")
            super().__init__()
        self.alias = alias
        self.fail_silently = fail_silently
        if alias is None:  # the classic EMAIL_* settings fill in what was not given
            extra = getattr(settings, "FASTSMTP_OPTIONS", None) or {}
            unknown = sorted(set(extra) - FASTSMTP_OPTION_NAMES)
            if unknown:
                raise TypeError(
                    f"the FASTSMTP_OPTIONS setting has unknown option(s) "
                    f"{', '.join(map(repr, unknown))}; it takes fastsmtp's options: "
                    f"{', '.join(sorted(FASTSMTP_OPTION_NAMES))}")
            ours = {**extra, **ours}
            host = host or settings.EMAIL_HOST
            port = port or settings.EMAIL_PORT
            username = settings.EMAIL_HOST_USER if username is None else username
            password = settings.EMAIL_HOST_PASSWORD if password is None else password
            use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
            use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
            timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
            ssl_keyfile = settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
            ssl_certfile = settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
        try:
            self.options = self._pool_options(
                host, port, username, password, bool(use_tls), bool(use_ssl), timeout,
                ssl_keyfile, ssl_certfile, ours)
            self._config = _freeze(self.options)
            # The pool validates every option (one rule, one place): building it now makes
            # a bad option a configuration error here, not at the first send. Only the
            # first instance of a configuration pays; the others find the pool.
            _shared_pool(self._config, self.options)
        except (TypeError, ValueError) as exc:
            if alias is not None:
                from django.core.mail import InvalidMailer  # type: ignore[import-untyped]

                raise InvalidMailer(str(exc), alias=alias) from exc
            raise
        self._open = False

    @staticmethod
    def _pool_options(
        host: str | None, port: int | None, username: str | None, password: str | None,
        use_tls: bool, use_ssl: bool, timeout: float | None, ssl_keyfile: str | None,
        ssl_certfile: str | None, ours: dict[str, Any],
    ) -> dict[str, Any]:
        """Django's options as :class:`~fastsmtp.pool.SMTPPool` keyword options."""
        if not host:
            raise ValueError("OPTIONS must define 'host' (the SMTP server)")
        if use_tls and use_ssl:
            raise ValueError("use_tls (EMAIL_USE_TLS) and use_ssl (EMAIL_USE_SSL) are "
                             "mutually exclusive: set at most one of them to True")
        if port is None:
            port = 465 if use_ssl else 587 if use_tls else 25
        options: dict[str, Any] = {"host": host, "port": int(port), "secure": use_ssl}
        if use_tls:
            options["require_tls"] = True
        elif not use_ssl:
            # Django's backend never starts TLS unless told to, and logs in over the
            # plain connection it was given: keep that behaviour.
            options["ignore_tls"] = True
            options["allow_plaintext_auth"] = True
        if username and password:
            options["auth"] = (username, password)
        if timeout is not None:
            for name in ("connection_timeout", "greeting_timeout", "socket_timeout"):
                options[name] = timeout
        if ssl_certfile or ssl_keyfile:
            if "tls" in ours:
                raise ValueError("give the client certificate as ssl_certfile/ssl_keyfile or "
                                 "inside the 'tls' option, not both")
            ours["tls"] = {"certfile": ssl_certfile, "keyfile": ssl_keyfile}
        options.update(ours)
        return options

    @property
    def pool(self) -> SyncSMTPPool | None:
        """The shared pool while the instance is open (this process's own), else None."""
        return _shared_pool(self._config, self.options) if self._open else None

    def open(self) -> bool:
        """Attach to the shared pool; True when this instance was not attached yet.

        The pool connects lazily, on the first message, and keeps its connections open
        across instances: a refused connection surfaces in :meth:`send_messages`.
        """
        if self._open:
            return False
        _shared_pool(self._config, self.options)
        self._open = True
        return True

    def close(self) -> None:
        """Detach from the pool; it stays open and warm for other instances."""
        self._open = False

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send the messages concurrently; return how many the server accepted."""
        if not email_messages:
            return 0
        items = [item for item in map(self._item, email_messages) if item is not None]
        if not items:
            return 0
        # Looked up per call, never kept: after a fork the child must get its own pool.
        pool = _shared_pool(self._config, self.options)
        sent = 0
        errors: dict[int, Exception] = {}
        if len(items) == 1:
            try:
                pool.send(*items[0])
                sent = 1
            except Exception as exc:
                errors[0] = exc
        else:
            pairs = [_pair(*item) for item in items]
            order = {id(pair): index for index, pair in enumerate(pairs)}
            for item, outcome in pool.send_many(pairs):
                if isinstance(outcome, Exception):
                    errors[order[id(item)]] = outcome
                else:
                    sent += 1
        if errors:
            first = errors[min(errors)]
            # What fail_silently covers in Django's SMTP backend: SMTP and socket errors.
            # Anything else (a bug, a bad message object) is raised regardless.
            if not self.fail_silently or not isinstance(first, (smtplib.SMTPException, OSError)):
                raise first
        return sent

    @staticmethod
    def _item(email_message: Any) -> tuple[bytes, Envelope] | None:
        """``(message bytes, envelope)`` for one Django message, None without recipients."""
        recipients: Iterable[str] = email_message.recipients()
        rcpt = [_addr_spec(address) for address in recipients]
        if not rcpt:
            return None
        envelope = Envelope(_addr_spec(email_message.from_email), rcpt)
        return _wire(email_message, envelope.smtputf8), envelope
