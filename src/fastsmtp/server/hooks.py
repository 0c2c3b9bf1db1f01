"""The one runner of handler hooks: every :class:`~fastsmtp.server.session.HookCall` chain.

A hook may be a plain function or a coroutine function, and a call may chain to the next
(``data_chunk`` then ``data_ready``, ``data_abort`` then ``handle_CLOSE``). The runner
calls the hooks of a chain one after the other, synchronously for as long as they are
synchronous, so a handler without ``async def`` costs no task and no loop iteration. The
first hook that returns an awaitable moves the rest of the chain into one task, which
awaits each awaitable within ``handler_timeout`` and hands the chain's final output to a
callback (none for the detached chains run after a connection closed, whose result
nobody waits for).

A hook that raises or runs out of time is logged (never sent) and the chain goes on with
``call.fail()``: the session decides what a failure means (451, a refused message, or
nothing for a close hook).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable, Coroutine
from typing import Any

from .session import HookCall

__all__ = ["PENDING", "HookRunner"]

log = logging.getLogger("fastsmtp.server")

#: :meth:`HookRunner.run`'s result when a hook is being awaited: the callback gets the output.
PENDING: Any = object()

_CoroutineType = types.CoroutineType


class HookRunner:
    """Runs one connection's hook chains.

    Args:
        server: The first argument of aiosmtpd-style hooks (the connection's protocol).
        timeout: Seconds an awaited hook may take (``handler_timeout``); None or 0 for no
            limit.
        spawn: Starts the task that awaits the rest of a chain (its owner keeps track of
            it, so that a server closing can wait for it).
    """

    __slots__ = ("_server", "_timeout", "_spawn")

    def __init__(
        self,
        server: Any,
        timeout: float | None,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._server = server
        self._timeout = timeout or None
        self._spawn = spawn

    def run(self, call: HookCall, done: Callable[[Any], None] | None) -> Any:
        """Run ``call`` and the calls it chains to.

        Returns:
            The chain's final output when every hook was synchronous; else :data:`PENDING`,
            and ``done(output)`` is called once the task has finished the chain (never
            when ``done`` is None, nor when the task is cancelled).
        """
        r, awaitable = self._advance(call)
        if awaitable is None:
            return r
        self._spawn(self._resume(r, awaitable, done))
        return PENDING

    def _advance(self, r: Any) -> tuple[Any, Any]:
        """Run synchronous hooks; ``(output, None)`` or ``(call, its awaitable)``."""
        while r.__class__ is HookCall:
            call: HookCall = r
            try:
                result = call.func(self._server, *call.args) if call.server_arg else call.func(*call.args)
            except Exception:
                log.exception("%s hook raised", call.name)
                r = call.fail()
                continue
            # The exact-type test first: a coroutine is the common awaitable.
            if type(result) is _CoroutineType or hasattr(result, "__await__"):
                return call, result
            r = call.finish(result)
        return r, None

    async def _resume(self, call: HookCall, awaitable: Any, done: Callable[[Any], None] | None) -> None:
        timeout = self._timeout
        while True:
            try:
                result = await (asyncio.wait_for(awaitable, timeout) if timeout else awaitable)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                log.error("%s hook exceeded handler_timeout (%ss)", call.name, timeout)
                r = call.fail()
            except Exception:
                log.exception("%s hook raised", call.name)
                r = call.fail()
            else:
                r = call.finish(result)
            # The rest of the chain runs in this same task.
            r, awaitable = self._advance(r)
            if awaitable is None:
                break
            call = r
        if done is not None:
            done(r)
