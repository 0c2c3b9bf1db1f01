"""The codec's two implementations, for tests that run on each."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from fastsmtp import _core_py

__all__ = ["load_core"]


def load_core(name: str) -> ModuleType:
    """The twin for ``"py"``, the compiled core for ``"c"`` (skip, or fail under
    ``FASTSMTP_REQUIRE_EXTENSION=1``, when it is not built)."""
    if name == "py":
        return _core_py
    try:
        return importlib.import_module("fastsmtp._core")
    except ImportError as exc:
        if os.environ.get("FASTSMTP_REQUIRE_EXTENSION") == "1":
            pytest.fail(f"FASTSMTP_REQUIRE_EXTENSION=1 but fastsmtp._core is missing: {exc}")
        pytest.skip("fastsmtp._core is not built")
