"""``fastsmtp.send``: one message, one connection, for the transactional case.

The one-liner that :func:`aiosmtplib.send` users expect: connect, optionally log in,
send, QUIT. Many messages belong in an :class:`~fastsmtp.pool.SMTPPool` instead, which
keeps its connections open.
"""

from __future__ import annotations

from typing import Any

from ._transaction import resolve_envelope
from .connection import SendResult, SMTPConnection
from .message import Envelope, MessageSource

__all__ = ["send"]


async def send(
    message: MessageSource,
    envelope: Envelope | None = None,
    *,
    host: str = "localhost",
    port: int | None = None,
    user: str | None = None,
    password: str | None = None,
    **connection_options: Any,
) -> SendResult:
    """Connect, send one message and QUIT.

    Example::

        result = await fastsmtp.send(email_message, host="smtp.example.com",
                                     user="me", password="secret")

    Args:
        message: As for :meth:`SMTPConnection.send <fastsmtp.connection.SMTPConnection.send>`.
        envelope: Sender and recipients; None takes them from an EmailMessage's headers.
        host: Server host name or address.
        port: Server port (default as for :class:`~fastsmtp.connection.SMTPConnection`).
        user: Log in as this user (with ``password``) before sending.
        password: The password for ``user``.
        **connection_options: Any other :class:`~fastsmtp.connection.SMTPConnection`
            keyword (``secure``, ``require_tls``, ``tls``, timeouts, ``lmtp``, ...).

    Returns:
        The message's :class:`~fastsmtp.connection.SendResult`.

    Raises:
        TypeError: No envelope and the message is not an EmailMessage, or only one of
            ``user`` and ``password`` (checked before connecting).
        SMTPError: As :meth:`~fastsmtp.connection.SMTPConnection.connect`,
            :meth:`~fastsmtp.connection.SMTPConnection.login` and
            :meth:`~fastsmtp.connection.SMTPConnection.send` raise.
    """
    envelope = resolve_envelope(message, envelope)  # bad input fails before any IO
    if (user is None) != (password is None):
        raise TypeError("to log in give both user= and password= (or neither)")
    conn = SMTPConnection(host, port, **connection_options)
    await conn.connect()
    try:
        if user is not None:
            await conn.login(user, password)
        result = await conn.send(message, envelope)
    except Exception:
        # A refusal leaves the session usable: end it politely. Anything else has
        # already closed the connection, and quit() then only makes sure of it.
        await conn.quit()
        raise
    except BaseException:
        conn.close()  # cancelled: no more waiting
        raise
    await conn.quit()
    return result
