"""Picks the byte codec implementation: the compiled ``_core`` or its pure-Python twin.

``FASTSMTP_IMPLEMENTATION=cython`` demands the compiled core (ImportError if it is
missing), ``=python`` forces the twin; unset, the compiled core is used when it was built.
The chosen module's exports are checked against the twin's, so a stale or partial build
fails loudly at import instead of misbehaving later.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

from . import _core_py

__all__ = ["IMPLEMENTATION", "core", "ReplyParser", "DataEncoder", "ServerReader", "data_size"]

_ENV = "FASTSMTP_IMPLEMENTATION"
_CONSTANTS = [name for name in _core_py.__all__ if name.isupper()]
_CLASSES = [name for name in _core_py.__all__ if not name.isupper()]


def _load() -> tuple[str, ModuleType]:
    wanted = os.environ.get(_ENV, "").strip().lower()
    if wanted not in ("", "cython", "python"):
        raise ImportError(f"{_ENV} must be 'cython' or 'python', not {wanted!r}")
    if wanted == "python":
        return "python", _core_py
    try:
        from . import _core
    except ImportError:
        if wanted == "cython":
            # Without this, Python's own message ("cannot import name '_core' from
            # partially initialized module 'fastsmtp'") points at a circular import.
            raise ImportError(
                f"{_ENV}=cython, but the compiled core was not built (see install notes: "
                "a C compiler and the Python headers are needed; reinstall with "
                "FASTSMTP_REQUIRE_EXTENSION=1 to see why the build failed), or unset "
                f"{_ENV} to use the pure-Python twin"
            ) from None
        return "python", _core_py
    _check_exports(_core)
    return "cython", _core


def _check_exports(module: ModuleType) -> None:
    missing = [name for name in _CLASSES + _CONSTANTS if not hasattr(module, name)]
    if missing:
        raise ImportError(f"{module.__name__} lacks {', '.join(missing)}; rebuild fastsmtp")
    differ = [n for n in _CONSTANTS if getattr(module, n) != getattr(_core_py, n)]
    if differ:
        raise ImportError(f"{module.__name__} disagrees with the twin on {', '.join(differ)}")


IMPLEMENTATION, core = _load()
ReplyParser = core.ReplyParser
DataEncoder = core.DataEncoder
ServerReader = core.ServerReader
#: RFC 1870 size of in-memory message data (see ``_core.pyi``).
data_size: Callable[[bytes | bytearray | memoryview], int] = core.data_size
