"""Event loop selection shared by the server runner, the demo and the sync facade."""

from __future__ import annotations

import asyncio

__all__ = ["new_event_loop", "loop_name"]


def new_event_loop(use_uvloop: bool | None = None) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed (unless ``use_uvloop`` is False).

    ``use_uvloop=True`` makes a missing uvloop an ImportError instead of a fallback.
    """
    if use_uvloop is not False:
        try:
            import uvloop
        except ImportError:
            if use_uvloop:
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: which implementation ``loop`` is."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
