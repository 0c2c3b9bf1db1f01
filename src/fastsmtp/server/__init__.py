"""asyncio SMTP/LMTP server: :class:`SMTPServer`, its Protocol and a threaded runner.

The package shows the layers, each module one concern (imports point down the list):

* :mod:`~fastsmtp.server.replies`, :mod:`~fastsmtp.server.auth` (SASL decoding),
  :mod:`~fastsmtp.server.tls` (credentials to ``ssl.SSLContext``) and
  :mod:`~fastsmtp.server.config` (:class:`ServerConfig`, every option declared once): values;
* :mod:`~fastsmtp.server.proxy`: the sans-IO PROXY protocol (v1/v2) header reader;
* :mod:`~fastsmtp.server.session`: the sans-IO state machine of one connection;
* :mod:`~fastsmtp.server.hooks`: the one runner of handler hooks (sync or async);
* :mod:`~fastsmtp.server.protocol`: the asyncio Protocol moving bytes;
* :mod:`~fastsmtp.server.listener` (:class:`SMTPServer`) and
  :mod:`~fastsmtp.server.thread` (:class:`SMTPServerThread`): the facades.
* :mod:`~fastsmtp.server.handlers`: the built-in handlers (also ``fastsmtp.handlers``).

The protocol logic lives in the sans-IO session; the protocol only moves bytes:
``data_received`` feeds the core's ``ServerReader``, hands every complete command line (or
DATA chunk) to the session, does what the session returns, and writes all replies
produced by one read in a single ``transport.write`` (pipelined clients get one segment
back, not one per command).

Handler protocol
----------------
The handler is any object; every hook is optional and may be a coroutine function or a
plain function. Hooks have aiosmtpd's names and arguments, so aiosmtpd handlers (``Sink``,
``Message``, ``AsyncMessage``, ``Debugging`` ...) work unchanged. ``server`` is the
per-connection protocol object (``server.hostname``, ``server.server``, ``server.transport``).

* ``handle_EHLO(server, session, envelope, hostname, responses) -> list[str]``
* ``handle_HELO(server, session, envelope, hostname) -> str``
* ``handle_MAIL(server, session, envelope, address, mail_options) -> str`` -- the seed's
  ``validateSender``: return ``"250 OK"`` after setting ``envelope.mail_from`` (and
  ``envelope.mail_options``), or a 4xx/5xx reply to refuse the sender.
* ``handle_RCPT(server, session, envelope, address, rcpt_options) -> str`` -- the seed's
  ``validateRecipient``: append to ``envelope.rcpt_tos`` and return ``"250 OK"``, or refuse.
* ``handle_DATA(server, session, envelope) -> str`` -- ``envelope.content`` holds the whole
  message (bytes). In LMTP mode it may return one reply per recipient (a list).
* ``handle_RSET``, ``handle_QUIT(server, session, envelope)``,
  ``handle_NOOP(server, session, envelope, arg)``, ``handle_VRFY(server, session, envelope,
  address)``.
* ``handle_CLOSE(server, session, envelope)`` -- the seed's ``close`` event: called once
  when a client connection has closed, whoever closed it (QUIT, timeout, the client going
  away, server shutdown), after ``data_abort`` for a message in progress. ``envelope`` is
  the transaction in progress (empty after a completed one). Its result is ignored; an
  exception (or running past ``handler_timeout``) is logged, never raised. fastsmtp's own
  name: aiosmtpd has no such hook.
* ``authenticator(server, session, envelope, mechanism, auth_data)`` -- the seed's
  ``authorizeUser``: returns an object with ``.success`` (aiosmtpd's ``AuthResult`` or
  :class:`fastsmtp.server.auth.AuthResult`) or a bool. ``auth_data`` is a
  ``LoginPassword`` (PLAIN, LOGIN), ``CramMD5Credentials`` (call ``verify(password)``) or
  ``XOAuth2Credentials``. It may be given as the ``authenticator`` option or as a handler
  attribute.
* Streaming (the seed's ``startData``/``data``/``dataReady``), used instead of
  ``handle_DATA`` when ``data_chunk`` and ``data_ready`` exist:
  ``start_data(session, envelope)`` (optional; may return a 4xx/5xx to refuse),
  ``data_chunk(session, envelope, chunk)`` for every chunk as it is read (reading pauses
  while it is awaited), ``data_ready(session, envelope) -> str`` for the final reply, and
  ``data_abort(session, envelope)`` (optional) when the message is refused or the client
  went away.

A hook returning ``None`` gets the default handling. A hook that raises or runs longer
than ``handler_timeout`` makes the command fail with 451 (the exception is logged, never
sent). The reply to the final dot is sent only after the handler returned. A reply a hook
returns must be *one* reply: every line with the same 2xx-5xx code and no control
character; the separators are rewritten (``code-`` on all lines but the last), and any
other reply is logged and answered with 451 instead (never sent).

simplesmtp's server options
---------------------------
``name`` -> ``name``; ``debug`` -> ``debug``; ``timeout`` (ms) -> ``timeout`` (seconds);
``secureConnection`` -> ``secure``; ``credentials`` (``{"key", "cert", "ca"}``, PEM text
or file paths) -> ``credentials`` too, used for implicit TLS with ``secure=True`` and
offered through STARTTLS otherwise, as simplesmtp did (or pass your own
``ssl.SSLContext`` as ``ssl_context`` / ``tls_context``); ``SMTPBanner`` -> ``banner``;
``requireAuthentication`` / ``enableAuthentication`` -> ``require_auth`` / ``enable_auth``
(AUTH only over TLS unless ``auth_require_tls=False``); ``validateSender`` /
``validateRecipients`` -> the ``handle_MAIL`` / ``handle_RCPT`` hooks; ``maxSize`` ->
``max_size`` (enforced, not only advertised); ``authMethods`` -> ``auth_methods``;
``disableEHLO`` -> ``disable_ehlo``. Events: ``startData``/``data``/``dataReady`` ->
``start_data``/``data_chunk``/``data_ready`` (which returns the whole reply, e.g.
``"250 2.0.0 OK: queued as ABC1"``, not only the queue id), ``authorizeUser`` ->
``authenticator``, ``close`` -> ``handle_CLOSE``.

Traffic log
-----------
``debug=True`` (the seed's ``debug`` option) logs every connection, command line and reply
at DEBUG on the ``fastsmtp.server`` logger (enable it, e.g. ``logging.basicConfig(level=
logging.DEBUG)``). AUTH arguments and SASL responses are masked, and message data is
logged as its size only. Without ``debug`` nothing of the traffic is logged: addresses are
personal data.
"""

from __future__ import annotations

from .config import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_SIZE,
    ServerConfig,
)
from .listener import SMTPServer
from .protocol import SMTPServerProtocol
from .proxy import ProxyError, ProxyHeader, ProxyParser
from .session import Envelope, HookCall, ServerSession, Session
from .thread import SMTPServerThread
from .tls import context_from_credentials, make_server_ssl_context

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_RECIPIENTS",
    "DEFAULT_MAX_SIZE",
    "Envelope",
    "HookCall",
    "ProxyError",
    "ProxyHeader",
    "ProxyParser",
    "SMTPServer",
    "SMTPServerProtocol",
    "SMTPServerThread",
    "ServerConfig",
    "ServerSession",
    "Session",
    "context_from_credentials",
    "make_server_ssl_context",
]
