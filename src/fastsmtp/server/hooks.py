"""The one runner of handler hooks: every :class:`~fastsmtp.server.session.HookCall` chain.

A hook may be a plain function or a coroutine function, and a call may chain to the next
(``data_chunk`` then ``data_ready``, ``data_abort`` then ``handle_CLOSE``). The runner
calls the hooks of a chain one after the other, synchronously for as long as they are
synchronous, so a handler without ``async def`` costs no task and no loop iteration.

An ``async def`` hook is started eagerly: its coroutine runs at once, inside a task of its
own (so ``asyncio.current_task()``, ``asyncio.timeout()`` and contextvars behave as in any
task), up to its first real suspension. Most hooks (aiosmtpd's ``async def handle_DATA``
returning ``"250 OK"``) never suspend: their result is there synchronously and the chain
goes on in the same call, with no loop iteration, no paused reading and one write for all
the replies of a read. Only a hook that really waits (awaits a future that is not done)
moves the rest of the chain into one task, which awaits the hook within
``handler_timeout`` and hands the chain's final output to a callback (none for the
detached chains run after a connection closed, whose result nobody waits for).

Python 3.12+ starts the task with :func:`asyncio.eager_task_factory`. 3.10 and 3.11 have no
eager tasks: there the hook's task is asyncio's pure-Python ``Task`` whose first step the
runner takes itself instead of scheduling it (a plain ``coro.send(None)`` outside any task
would break hooks that need a current task before their first await, such as
``asyncio.timeout()`` or aiohttp's request timer).

A hook that raises or runs out of time is logged (never sent) and the chain goes on with
``call.fail()``: the session decides what a failure means (451, a refused message, or
nothing for a close hook).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import logging
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .session import HookCall

__all__ = ["PENDING", "HookRunner", "start_eagerly"]

log = logging.getLogger("fastsmtp.server")

#: :meth:`HookRunner.run`'s result when a hook is being awaited: the callback gets the output.
PENDING: Any = object()

_CoroutineType = types.CoroutineType


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    """A coroutine for an awaitable that is not one (a Future a plain ``def`` returned)."""
    return await awaitable


if sys.version_info >= (3, 12):

    def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> tuple[Any, Any]:
        """Run ``coro`` in a new task up to its first suspension, now.

        Returns:
            ``(result, None)`` when the coroutine finished without suspending (its
            exception, if it raised, is raised here), else ``(None, its pending task)``.
            It runs in a copy of the current context, as any task does.
        """
        task = asyncio.eager_task_factory(loop, coro)
        if task.done():
            return task.result(), None
        return None, task

else:
    from asyncio import futures as _futures
    from asyncio import tasks as _tasks

    _enter_task = _tasks._enter_task
    _leave_task = _tasks._leave_task
    _current_task = asyncio.current_task
    _FINISHED = _futures._FINISHED  # type: ignore[attr-defined]
    _copy_context = contextvars.copy_context

    class _EagerTask(_tasks._PyTask):  # type: ignore[name-defined,misc]
        """asyncio's pure-Python Task, whose first step its creator takes (:func:`start_eagerly`).

        ``Task.__init__`` would schedule the first step; this one only sets the attributes
        of Future and Task (those of 3.10 and 3.11, whose asyncio no longer changes), so
        that the object is a complete task for the hook to see as ``current_task()``.
        """

        def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> None:
            self._loop = loop
            self._callbacks: list[Any] = []
            self._name = "fastsmtp-hook"
            self._num_cancels_requested = 0  # 3.11's cancel() counts requests
            self._must_cancel = False
            self._fut_waiter = None
            self._coro: Any = coro
            self._context: contextvars.Context = _copy_context()

        def get_context(self) -> contextvars.Context:
            """The context the coroutine runs in (``Task.get_context`` of 3.12)."""
            return self._context

    class _Resumed(collections.abc.Coroutine):  # type: ignore[type-arg]
        """A started coroutine as a task's coroutine: first step again the value it yielded.

        The task's first ``send(None)`` returns the future the hook awaits (the task then
        waits for it, as if it had taken that step itself); everything after is the hook's.
        """

        __slots__ = ("_coro", "_yielded", "__qualname__")

        def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
            self._coro: Coroutine[Any, Any, Any] | None = coro
            self._yielded = yielded
            self.__qualname__ = getattr(coro, "__qualname__", "hook")

        def send(self, value: Any) -> Any:
            coro = self._coro
            assert coro is not None
            if self._yielded is not _STARTED:
                yielded, self._yielded = self._yielded, _STARTED
                return yielded
            return coro.send(value)

        def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
            coro = self._coro
            assert coro is not None
            self._yielded = _STARTED
            if val is None and tb is None:
                return coro.throw(typ)
            return coro.throw(typ, val, tb)  # pragma: no cover - asyncio throws one argument

        def close(self) -> None:
            coro, self._coro = self._coro, None
            if coro is not None:
                coro.close()

        def __await__(self) -> Any:  # pragma: no cover - only a task drives it
            raise TypeError("a started hook coroutine cannot be awaited")

    _STARTED: Any = object()

    def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> tuple[Any, Any]:
        """Run ``coro`` in a new task up to its first suspension, now.

        Returns:
            ``(result, None)`` when the coroutine finished without suspending (its
            exception, if it raised, is raised here), else ``(None, its pending task)``.
            It runs in a copy of the current context, as any task does. Inside another
            task (a chain that went on after an awaited hook) asyncio before 3.12 cannot
            switch tasks in place: there the task is scheduled as usual.
        """
        if _current_task(loop) is not None:
            return None, loop.create_task(coro)
        task = _EagerTask(coro, loop)
        _enter_task(loop, task)
        try:
            yielded = task._context.run(coro.send, None)
        except StopIteration as stop:
            # Done: marked so, for a hook that kept its task (and for Task.__del__).
            task._state = _FINISHED
            task._result = stop.value
            task._coro = None
            return stop.value, None
        except BaseException as exc:
            task._state = _FINISHED
            task._exception = exc
            task._coro = None
            raise
        finally:
            _leave_task(loop, task)
        # Suspended: from now on an ordinary task, whose first step hands the future the
        # hook awaits back to the task's own machinery.
        task._coro = _Resumed(coro, yielded)
        loop.call_soon(task._Task__step, context=task._context)
        _tasks._register_task(task)
        return None, task


class HookRunner:
    """Runs one connection's hook chains.

    Args:
        server: The first argument of aiosmtpd-style hooks (the connection's protocol).
        timeout: Seconds an awaited hook may take (``handler_timeout``); None or 0 for no
            limit.
        spawn: Starts the task that awaits the rest of a chain (its owner keeps track of
            it, so that a server closing can wait for it).
        loop: The connection's event loop; default: the running loop.

    A chain that returns :data:`PENDING` is one where a hook really suspended: the caller
    pauses reading then, before the loop runs again. A hook that finishes inline needs
    no pause: it ran inside the read, where no input can arrive.
    """

    __slots__ = ("_server", "_timeout", "_spawn", "_loop")

    def __init__(
        self,
        server: Any,
        timeout: float | None,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._server = server
        self._timeout = timeout or None
        self._spawn = spawn
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def run(self, call: HookCall, done: Callable[[Any], None] | None) -> Any:
        """Run ``call`` and the calls it chains to.

        Returns:
            The chain's final output when no hook suspended; else :data:`PENDING`, and
            ``done(output)`` is called once the task has finished the chain (never when
            ``done`` is None, nor when the task is cancelled).
        """
        r, task = self._advance(call)
        if task is None:
            return r
        self._spawn(self._resume(r, task, done))
        return PENDING

    def _advance(self, r: Any) -> tuple[Any, Any]:
        """Run hooks until one suspends; ``(output, None)`` or ``(call, its pending task)``."""
        while r.__class__ is HookCall:
            call: HookCall = r
            try:
                result = call.func(self._server, *call.args) if call.server_arg else call.func(*call.args)
            except Exception:
                log.exception("%s hook raised", call.name)
                r = call.fail()
                continue
            # Exact-type tests first: a coroutine or a reply string is the common result.
            cls = result.__class__
            if cls is _CoroutineType or (cls is not str and result is not None and hasattr(result, "__await__")):
                try:
                    result, task = start_eagerly(self._loop, result if cls is _CoroutineType else _awaiting(result))
                except Exception:
                    log.exception("%s hook raised", call.name)
                    r = call.fail()
                    continue
                except asyncio.CancelledError:
                    # Raised by the hook itself: nothing else can have cancelled it yet.
                    log.error("%s hook cancelled itself", call.name)
                    r = call.fail()
                    continue
                if task is not None:
                    # It suspended: the caller pauses reading on PENDING until the chain
                    # has finished.
                    return call, task
            r = call.finish(result)
        return r, None

    async def _resume(
        self, call: HookCall, task: asyncio.Future[Any], done: Callable[[Any], None] | None
    ) -> None:
        timeout = self._timeout
        while True:
            try:
                # Awaiting the hook's task: cancelling this one (a server closing) cancels
                # it, and so does wait_for once the timeout has passed.
                result = await (asyncio.wait_for(task, timeout) if timeout else task)
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
            r, task = self._advance(r)
            if task is None:
                break
            call = r
        if done is not None:
            done(r)
